"""The entry point: parse, load settings, run one command, map errors to exit
codes (0 done, 1 failed, 2 usage)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import aiohttp

from litho.cli._client import Client
from litho.cli._errors import CliError, InvalidFolder, UsageError
from litho.cli._keys import SCOPES, create_key, delete_key, list_keys
from litho.cli._pull import pull
from litho.cli._push import PushOptions, push
from litho.cli._render import FORMATS, output_format, render, variables
from litho.cli._settings import CliSettings, load_settings

_EPILOG = """\
settings: LITHO_URL and LITHO_API_KEY (or --url and --key; prefer the
variable for the key, flags show in the process list). Limits: LITHO_CLI_*
(timeout, max templates, file and answer sizes, concurrency, retries).
exit codes: 0 done, 1 failed (nothing changed when push refuses a folder), 2 usage.
"""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="litho", description="Litho templates as code, renders and API keys.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--url", help="the Litho base URL (default: LITHO_URL)")
    root.add_argument("--key", help="the API key (default: LITHO_API_KEY)")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    templates = commands.add_parser("templates", help="pull and push template folders")
    verbs = templates.add_subparsers(dest="verb", required=True, metavar="VERB")
    pull_cmd = verbs.add_parser("pull", help="write every template as DIR/<folder>/")
    pull_cmd.add_argument("dir", type=Path, metavar="DIR")
    push_cmd = verbs.add_parser(
        "push", help="create or update templates from DIR/<folder>/ (checks all first)")
    push_cmd.add_argument("dir", type=Path, metavar="DIR")
    push_cmd.add_argument("--dry-run", action="store_true",
                          help="check and say what would change; change nothing")
    push_cmd.add_argument("--prune", action="store_true",
                          help="also delete pushed templates whose folder is gone")

    render_cmd = commands.add_parser("render", help="render a template to a file")
    render_cmd.add_argument("template_id", metavar="ID")
    render_cmd.add_argument("--var", action="append", default=[], metavar="K=V",
                            help="a variable; V is JSON when it parses, else a string")
    render_cmd.add_argument("--vars-file", type=Path, help="a JSON object of variables")
    render_cmd.add_argument("--format", choices=FORMATS,
                            help="default: from -o's extension, else png")
    render_cmd.add_argument("--version", type=int, help="render this template version")
    render_cmd.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")

    keys = commands.add_parser("keys", help="list, create and delete API keys")
    key_verbs = keys.add_subparsers(dest="verb", required=True, metavar="VERB")
    key_verbs.add_parser("list", help="every key of the tenant (never the secret)")
    create = key_verbs.add_parser("create", help="create a key; prints it once")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--scope", choices=SCOPES, required=True)
    delete = key_verbs.add_parser("delete", help="revoke a key")
    delete.add_argument("key_id", metavar="ID")
    return root


async def _dispatch(args: argparse.Namespace, settings: CliSettings, out: TextIO,
                    err: TextIO) -> None:
    timeout = aiohttp.ClientTimeout(total=settings.cli_timeout)
    connector = aiohttp.TCPConnector(limit=settings.cli_concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(session, settings)
        if args.command == "templates" and args.verb == "pull":
            await pull(client, args.dir, out)
        elif args.command == "templates":
            await push(client, settings, args.dir,
                       PushOptions(dry_run=args.dry_run, prune=args.prune), out)
        elif args.command == "render":
            body: dict[str, object] = {
                "variables": variables(args.var, args.vars_file, settings.cli_max_file_bytes),
                "format": output_format(args.format, args.output)}
            if args.version is not None:
                body["version"] = args.version
            await render(client, args.template_id, body, args.output, out, err)
        elif args.verb == "list":
            await list_keys(client, out)
        elif args.verb == "create":
            await create_key(client, args.name, args.scope, out, err)
        else:
            await delete_key(client, args.key_id, out)


async def run(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """Run one command; the exit code. Never raises for a failed command."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse printed (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        settings = load_settings(args.url, args.key)
        await _dispatch(args, settings, out, err)
    except InvalidFolder as exc:
        for line in exc.lines:
            print(line, file=err)
        print(f"litho: {exc}", file=err)
        return exc.exit_code
    except UsageError as exc:
        print(f"litho: {exc}", file=err)
        return exc.exit_code
    except CliError as exc:
        print(f"litho: {exc}", file=err)
        return exc.exit_code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: ``litho …``."""
    try:
        return asyncio.run(run(argv))
    except KeyboardInterrupt:
        return 130
