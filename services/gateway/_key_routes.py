"""``/v1/keys``: a tenant's API keys, managed with a ``full`` key (``_scopes.py``).

The key itself appears once, in the answer that made it; listings show the
public id, name, scopes and times, never the key, its digest or its signing
secret.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.gateway._keys import KeyInfo
from services.gateway._state import caller, deps
from services.gateway._validation import body as json_body
from services.gateway._validation import query as query_of


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def key_json(info: KeyInfo) -> dict[str, Any]:
    return {"id": info.key_id, "name": info.name, "scopes": list(info.scopes),
            "createTime": _time(info.created_at), "lastUsedTime": _time(info.last_used_at)}


async def create_key(request: web.Request) -> web.Response:
    body = json_body(request)
    info, key = await deps(request).keys.issue(caller(request).tenant_id, body["name"],
                                               body["scopes"])
    out = key_json(info)
    del out["lastUsedTime"]
    return web.json_response({**out, "key": key}, status=201,
                             headers={"Cache-Control": "no-store"})


async def list_keys(request: web.Request) -> web.Response:
    query = query_of(request)
    items, token = await deps(request).keys.page(
        caller(request).tenant_id, page_size=query.get("pageSize", 50),
        page_token=query.get("pageToken", ""))
    return web.json_response({"keys": [key_json(i) for i in items],
                              "nextPageToken": token or None})


async def delete_key(request: web.Request) -> web.Response:
    await deps(request).keys.revoke(caller(request).tenant_id, request.match_info["keyId"])
    return web.Response(status=204)
