"""``litho``, the command, against the real stack: a tenant's templates pulled
into folders, pushed to another tenant (a fresh Litho, as far as ids go),
pushed again without a new version, a broken folder refused whole, a render
downloaded. The command runs in-process (``run``/``main``) and once as the
installed console script."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from litho.cli import main, run
from litho.cli._folders import dir_tag
from tests.e2e.conftest import Live

pytestmark = pytest.mark.e2e

CARD = """<!doctype html><html><body style="margin:0;background:#ff0000">
<h1 style="color:#fff">{{ title | default: 'Hello' }}</h1>
{{ for item in items }}<p>{{ loop.number }}. {{ item }}</p>{{ end }}
</body></html>
"""


async def litho(live: Live, key: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run(["--url", live.url, "--key", key, *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def api(live: Live, key: str, method: str, path: str,
              body: dict[str, Any] | None = None) -> Any:
    async with live.http.request(method, live.url + path, json=body,
                                 headers=live.auth(key)) as r:
        assert r.status < 300, await r.text()
        return await r.json() if r.status != 204 else None


async def all_templates(live: Live, key: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        page = await api(live, key, "GET", "/v1/templates?pageSize=100"
                         + (f"&pageToken={token}" if token else ""))
        found += page["templates"]
        token = page["nextPageToken"] or ""
        if not token:
            return found


async def by_folder(live: Live, key: str) -> dict[str, dict[str, Any]]:
    """The key's templates that carry a folder tag, by folder."""
    out = {}
    for t in await all_templates(live, key):
        for tag in t["tags"]:
            if tag.startswith("litho.dir:"):
                out[tag.removeprefix("litho.dir:")] = t
    return out


def statuses(out: str) -> dict[str, str]:
    """``{folder: status}`` from push's or pull's lines."""
    return {line.split()[1]: line.split()[0] for line in out.splitlines()}


async def source_tenant(live: Live, run_id: str) -> tuple[str, dict[str, dict[str, Any]]]:
    key = await live.stack.create_key(f"cli-src-{run_id}")
    bodies = {
        "og-card": {"name": "OG card", "html": CARD, "width": 1200, "height": 630,
                    "sampleVariables": {"title": "Hi", "items": ["a", "b"], "n": 1},
                    "variables": [{"name": "title", "type": "text", "defaultValue": "Hello",
                                   "validation": {"maxLength": 80}}],
                    "tags": ["og", "blue"],
                    "dataSources": [{"name": "stock", "url": live.data.url("/items/x"),
                                     "ttlSeconds": 5}]},
        # The same name again: its folder gets a suffix.
        "og-card-2": {"name": "OG card", "html": "<p>{{ title }}</p>", "width": 400,
                      "height": 200},
        # Not ASCII, CRLF line ends: kept byte for byte.
        "unicode-story": {"name": "Ünïcode / Story", "html": "<p>é ✓</p>\r\n<p>{{ x }}</p>",
                          "width": 1080, "height": 1920, "tags": ["story"]},
    }
    made = {}
    for folder, body in bodies.items():
        made[folder] = await api(live, key, "POST", "/v1/templates", body)
    return key, made


async def test_pull_push_to_another_tenant_and_push_again(live: Live, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:8]
    src_key, made = await source_tenant(live, run_id)
    repo = tmp_path / "templates"

    code, out, err = await litho(live, src_key, "templates", "pull", str(repo))
    assert code == 0, err
    assert statuses(out) == dict.fromkeys(made, "written")
    assert sorted(p.name for p in repo.iterdir()) == sorted(made)
    story = repo / "unicode-story"
    assert (story / "template.html").read_bytes() == "<p>é ✓</p>\r\n<p>{{ x }}</p>".encode()
    meta_text = (repo / "og-card" / "template.json").read_text()
    assert meta_text.endswith("]\n}\n")
    meta = json.loads(meta_text)
    assert list(meta) == ["name", "width", "height", "variables", "sampleVariables", "tags",
                          "dataSources"]
    assert meta["tags"] == ["og", "blue"]
    assert meta["dataSources"][0]["ttlSeconds"] == 5
    # A second pull writes nothing: a clean git status.
    code, out, _ = await litho(live, src_key, "templates", "pull", str(repo))
    assert statuses(out) == dict.fromkeys(made, "unchanged")

    # Another tenant has none of these ids: push recreates them from the folders.
    dst = live.other_key
    code, out, err = await litho(live, dst, "templates", "push", str(repo))
    assert code == 0, err
    assert statuses(out) == dict.fromkeys(made, "created")
    pushed = await by_folder(live, dst)
    for folder, original in made.items():
        copy = pushed[folder]
        assert copy["id"] != original["id"]
        for field in ("name", "html", "width", "height", "variables", "sampleVariables",
                      "dataSources"):
            assert copy[field] == original[field], (folder, field)
        assert copy["tags"] == [*original["tags"], dir_tag(folder)]
        assert copy["version"] == 1

    # Again: nothing changes, no new version.
    code, out, _ = await litho(live, dst, "templates", "push", str(repo))
    assert code == 0
    assert statuses(out) == dict.fromkeys(made, "unchanged")
    assert {f: t["version"] for f, t in (await by_folder(live, dst)).items()
            if f in made} == dict.fromkeys(made, 1)

    # One edit: one new version, of that template only.
    html = repo / "og-card-2" / "template.html"
    html.write_text("<p>{{ title }}!</p>")
    code, out, _ = await litho(live, dst, "templates", "push", str(repo), "--dry-run")
    assert code == 0 and "would update og-card-2" in out
    assert (await by_folder(live, dst))["og-card-2"]["version"] == 1
    code, out, _ = await litho(live, dst, "templates", "push", str(repo))
    assert statuses(out) == {"og-card": "unchanged", "og-card-2": "updated",
                             "unicode-story": "unchanged"}
    assert "v2: html)" in out
    now = await by_folder(live, dst)
    assert now["og-card-2"]["version"] == 2
    assert now["og-card-2"]["html"] == "<p>{{ title }}!</p>"
    assert now["og-card"]["version"] == 1

    # Back on the first tenant, the first push adopts its templates (a tag,
    # so one version each), and from then on the folders are pinned.
    code, out, err = await litho(live, src_key, "templates", "push", str(repo))
    assert code == 0, err
    assert statuses(out) == {"og-card": "updated", "og-card-2": "updated",
                             "unicode-story": "updated"}
    assert (await by_folder(live, src_key))["og-card"]["id"] == made["og-card"]["id"]
    assert len(await all_templates(live, src_key)) == 3  # adopted, not duplicated
    code, out, _ = await litho(live, src_key, "templates", "push", str(repo))
    assert statuses(out) == dict.fromkeys(made, "unchanged")
    code, out, _ = await litho(live, src_key, "templates", "pull", str(repo))
    assert statuses(out) == dict.fromkeys(made, "unchanged")


async def test_a_broken_folder_is_refused_whole(live: Live, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:8]
    src_key, _ = await source_tenant(live, run_id)
    dst = await live.stack.create_key(f"cli-dst-{run_id}")
    repo = tmp_path / "templates"
    assert (await litho(live, src_key, "templates", "pull", str(repo)))[0] == 0
    assert (await litho(live, dst, "templates", "push", str(repo)))[0] == 0
    before = await by_folder(live, dst)

    # A changed template, a new one, and two broken ones: nothing may be applied.
    (repo / "og-card" / "template.html").write_text("<p>changed</p>")
    new = repo / "new-one"
    new.mkdir()
    (new / "template.html").write_text("<p>new</p>")
    (new / "template.json").write_text('{"name": "New", "width": 10, "height": 10}')
    (repo / "og-card-2" / "template.html").write_text(
        "<p>\n  fine\n  {{ curency(price) }}</p>")
    (repo / "unicode-story" / "template.json").write_text(
        '{"name": "x", "width": 10,\n "height": "tall"}')
    code, out, err = await litho(live, dst, "templates", "push", str(repo))
    assert code == 1
    assert out == ""
    assert (f"{repo}/og-card-2/template.html:3:6: unknown function 'curency' "
            "(did you mean 'currency'?)") in err
    assert f"{repo}/unicode-story/template.json: height: 'tall' is not of type 'integer'" in err
    assert "nothing was changed: 2 error(s)" in err
    after = await by_folder(live, dst)
    assert after == before
    assert "new-one" not in after

    # Fixed, and with a folder gone: --prune deletes what push made, and only that.
    (repo / "og-card-2" / "template.html").write_text("<p>{{ price | currency }}</p>")
    (repo / "unicode-story" / "template.json").write_text(
        '{"name": "x", "width": 10, "height": 20}')
    for name in ("template.html", "template.json"):
        (repo / "og-card" / name).unlink()
    (repo / "og-card").rmdir()
    by_hand = await api(live, dst, "POST", "/v1/templates",
                        {"name": "made in the editor", "html": "<p>x</p>", "width": 10,
                         "height": 10})
    code, out, err = await litho(live, dst, "templates", "push", str(repo), "--prune")
    assert code == 0, err
    assert statuses(out) == {"new-one": "created", "og-card-2": "updated",
                             "unicode-story": "updated", "og-card": "deleted"}
    left = await all_templates(live, dst)
    assert sorted(t["name"] for t in left) == ["New", "OG card", "made in the editor", "x"]
    assert by_hand["id"] in {t["id"] for t in left}


async def test_render_downloads_the_image(live: Live, tmp_path: Path) -> None:
    template = await api(live, live.stack.api_key, "POST", "/v1/templates", {
        "name": "cli render", "html": CARD, "width": 320, "height": 200})
    dest = tmp_path / "out.png"
    code, out, err = await litho(live, live.stack.api_key, "render", template["id"],
                                 "--var", "title=From the CLI", "--var", 'items=["a"]',
                                 "-o", str(dest))
    assert code == 0, err
    assert f"wrote {dest} (320×200 png" in out
    with Image.open(dest) as image:
        assert image.format == "PNG"
        assert image.size == (320, 200)
        assert image.convert("RGB").getpixel((300, 190)) == (255, 0, 0)
    # JPEG from the extension; another tenant's template is a 404.
    code, _, err = await litho(live, live.stack.api_key, "render", template["id"],
                               "-o", str(tmp_path / "out.jpg"))
    assert code == 0, err
    assert (tmp_path / "out.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    code, _, err = await litho(live, live.other_key, "render", template["id"],
                               "-o", str(tmp_path / "x.png"))
    assert code == 1 and "404" in err
    assert not (tmp_path / "x.png").exists()


async def test_a_refused_key_is_exit_1_and_says_so(live: Live, tmp_path: Path) -> None:
    code, _, err = await litho(live, "lk_not_a_key", "templates", "pull", str(tmp_path))
    assert code == 1
    assert "the API key was refused (401" in err
    assert os.listdir(tmp_path) == []


async def test_main_returns_the_exit_code(live: Live, tmp_path: Path) -> None:
    key = await live.stack.create_key(f"cli-main-{uuid.uuid4().hex[:8]}")
    await api(live, key, "POST", "/v1/templates", {
        "name": "main", "html": "<p>x</p>", "width": 10, "height": 10})
    argv = ["--url", live.url, "--key", key, "templates", "pull", str(tmp_path)]
    assert await asyncio.to_thread(main, argv) == 0
    assert (tmp_path / "main" / "template.json").exists()
    assert await asyncio.to_thread(main, ["templates"]) == 2


async def test_the_console_script(live: Live, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "litho"
    assert script.exists(), "the console script is missing: .venv/bin/pip install -e . --no-deps"
    help_run = await asyncio.create_subprocess_exec(
        str(script), "--help", stdout=asyncio.subprocess.PIPE)
    help_out, _ = await help_run.communicate()
    assert help_run.returncode == 0
    assert b"templates" in help_out and b"LITHO_API_KEY" in help_out
    # Settings from the environment, as in CI.
    key = await live.stack.create_key(f"cli-script-{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "LITHO_URL": live.url, "LITHO_API_KEY": key}
    await api(live, key, "POST", "/v1/templates", {
        "name": "console script", "html": "<p>x</p>", "width": 10, "height": 10})
    pull = await asyncio.create_subprocess_exec(
        str(script), "templates", "pull", str(tmp_path / "repo"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await pull.communicate()
    assert pull.returncode == 0, err
    assert b"console-script" in out
    assert (tmp_path / "repo" / "console-script" / "template.html").read_text() == "<p>x</p>"
    env["LITHO_API_KEY"] = "lk_wrong"
    refused = await asyncio.create_subprocess_exec(
        str(script), "templates", "pull", str(tmp_path / "repo"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await refused.communicate()
    assert refused.returncode == 1
    assert b"the API key was refused" in err
