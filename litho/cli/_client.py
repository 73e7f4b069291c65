"""The Litho HTTP API, as the command uses it: one session, one key.

Every call has the settings' timeout, every answer a size limit, every
listing a page limit; a 429 or 503 is retried after its ``Retry-After`` a
bounded number of times. Errors become :mod:`litho.cli._errors`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from litho.cli._errors import ApiError, CliError, Unauthorized, Unreachable
from litho.cli._settings import CliSettings

JsonObject = dict[str, Any]
#: Most items one list call asks for (the API's maximum).
PAGE_SIZE = 100


class Client:
    def __init__(self, session: aiohttp.ClientSession, settings: CliSettings) -> None:
        self._session = session
        self._settings = settings
        self._base = settings.url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {settings.api_key}"}

    # -- templates --------------------------------------------------------

    async def templates(self) -> list[JsonObject]:
        """Every template of the tenant, in the API's (id) order."""
        return await self._all("/v1/templates", "templates",
                               self._settings.cli_max_templates)

    async def create_template(self, body: Mapping[str, Any]) -> JsonObject:
        return await self._json("POST", "/v1/templates", body, expect=201)

    async def update_template(self, template_id: str, body: Mapping[str, Any]) -> JsonObject:
        return await self._json("PUT", f"/v1/templates/{quote(template_id, safe='')}", body)

    async def delete_template(self, template_id: str) -> None:
        await self._json("DELETE", f"/v1/templates/{quote(template_id, safe='')}", None, expect=204)

    async def validate(self, html: str) -> list[JsonObject]:
        """The errors of a template source (``[]`` when it is valid)."""
        answer = await self._json("POST", "/v1/expressions/validate", {"template": html})
        errors = answer.get("errors")
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []

    async def render(self, template_id: str, body: Mapping[str, Any]) -> JsonObject:
        return await self._json("POST", f"/v1/templates/{quote(template_id, safe='')}/render", body)

    async def download(self, url: str, dest: Path) -> int:
        """Stream ``url`` (an image URL the API answered, so no key is sent:
        it may be a CDN's) into ``dest`` through a temporary file; the size."""
        limit = self._settings.cli_max_download_bytes
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            async with self._session.get(url) as r:
                if r.status != 200:
                    raise ApiError(f"GET {url}: {r.status} {r.reason}", r.status)
                size = 0
                with tmp.open("wb") as out:
                    async for chunk in r.content.iter_chunked(64 * 1024):
                        size += len(chunk)
                        if size > limit:
                            raise CliError(f"GET {url}: the file is over {limit} bytes "
                                           "(LITHO_CLI_MAX_DOWNLOAD_BYTES)")
                        out.write(chunk)
            tmp.replace(dest)
            return size
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"GET {url}: {_why(exc)}") from exc
        except OSError as exc:
            raise CliError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    # -- keys ---------------------------------------------------------------

    async def keys(self) -> list[JsonObject]:
        return await self._all("/v1/keys", "keys", self._settings.cli_max_templates)

    async def create_key(self, name: str, scopes: list[str]) -> JsonObject:
        return await self._json("POST", "/v1/keys", {"name": name, "scopes": scopes},
                                expect=201)

    async def delete_key(self, key_id: str) -> None:
        await self._json("DELETE", f"/v1/keys/{quote(key_id, safe='')}", None, expect=204)

    # -- plumbing -------------------------------------------------------------

    async def _all(self, path: str, field: str, limit: int) -> list[JsonObject]:
        items: list[JsonObject] = []
        params = {"pageSize": str(PAGE_SIZE)}
        while True:
            page = await self._json("GET", path, None, params=params)
            batch = page.get(field)
            if not isinstance(batch, list):
                raise ApiError(f"GET {path}: the answer has no {field!r} list", 200)
            items += [item for item in batch if isinstance(item, dict)]
            if len(items) > limit:
                raise CliError(f"GET {path}: more than {limit} items "
                               "(raise LITHO_CLI_MAX_TEMPLATES)")
            next_token = page.get("nextPageToken")
            if not next_token or not isinstance(next_token, str):
                return items
            params = {"pageSize": str(PAGE_SIZE), "pageToken": next_token}

    async def _json(self, method: str, path: str, body: Mapping[str, Any] | None,
                    *, expect: int = 200,
                    params: Mapping[str, str] | None = None) -> JsonObject:
        url = self._base + path
        for attempt in range(self._settings.cli_retries + 1):
            try:
                async with self._session.request(method, url, json=body, params=params,
                                                 headers=self._auth) as r:
                    raw = await self._read(r, method, path)
                    retry = self._retry_after(r, attempt)
                    if retry is None:
                        return _answer(method, path, r.status, raw, expect)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Unreachable(f"{method} {self._base}{path}: {_why(exc)}") from exc
            await asyncio.sleep(retry)
        raise AssertionError("unreachable")  # the last attempt always answers

    def _retry_after(self, r: aiohttp.ClientResponse, attempt: int) -> float | None:
        if r.status not in (429, 503) or attempt >= self._settings.cli_retries:
            return None
        try:
            wait = float(r.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        return max(0.0, min(wait, self._settings.cli_max_retry_wait))

    async def _read(self, r: aiohttp.ClientResponse, method: str, path: str) -> bytes:
        limit = self._settings.cli_max_response_bytes
        raw = await r.content.read(limit + 1)
        if len(raw) > limit:
            raise CliError(f"{method} {path}: the answer is over {limit} bytes "
                           "(LITHO_CLI_MAX_RESPONSE_BYTES)")
        return raw


def _answer(method: str, path: str, status: int, raw: bytes, expect: int) -> JsonObject:
    if status == expect:
        if not raw:
            return {}
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise ApiError(f"{method} {path}: the answer is not JSON; is the URL "
                           "a Litho gateway?", status) from exc
        if not isinstance(answer, dict):
            raise ApiError(f"{method} {path}: the answer is not a JSON object", status)
        return answer
    detail = _problem(raw)
    if status == 401:
        raise Unauthorized(f"the API key was refused (401 {detail or 'Unauthorized'}): "
                           "check --key or LITHO_API_KEY", status)
    raise ApiError(f"{method} {path}: {status} {detail}".rstrip(), status)


def _problem(raw: bytes) -> str:
    """An RFC 9457 problem as one line: detail, then each field's message."""
    try:
        problem = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace").strip()
    if not isinstance(problem, dict):
        return ""
    text = str(problem.get("detail") or problem.get("title") or "")
    errors = problem.get("errors")
    if isinstance(errors, list):
        fields = [f"{e.get('field')}: {e.get('message')}" for e in errors[:20]
                  if isinstance(e, dict)]
        if fields and not any(f in text for f in fields):
            text += " (" + "; ".join(fields) + ")"
    return text


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time (LITHO_CLI_TIMEOUT)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    return str(exc) or type(exc).__name__
