"""The browser face: the pages ``/``, ``/docs`` and ``/editor`` and the files
they load under ``/assets/``, all public (no API key).

Files come from two places only: the web directory (``web/`` of the
repository, ``LITHO_GATEWAY_WEB_DIR``) and an explicit allow-list of files npm
installed (``node_modules/``, ``LITHO_GATEWAY_NODE_MODULES_DIR``) under
``/assets/vendor/``. A name is checked segment by segment before any file
system call (no ``..``, no hidden files, no backslash, NUL or percent sign,
a known extension), and the file it names must resolve, symlinks followed,
inside its directory. HTML is served only as a page, with that page's
Content-Security-Policy (:data:`PAGES`), never under ``/assets/``.

A file is read once, off the event loop, with its SHA-256 ETag and, for text,
a gzipped copy, and kept in memory up to ``LITHO_GATEWAY_WEB_MAX_BYTES``
(past it, or at 0, it is read for each request)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from litho.errors import NotFound
from services.gateway._images import etag_matches

if TYPE_CHECKING:
    from services.gateway._settings import GatewaySettings

#: Content-Type of every extension served; anything else is a 404.
CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "mjs": "text/javascript; charset=utf-8",
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "ico": "image/x-icon",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
}
#: Worth a gzipped copy (the others are compressed already).
_COMPRESSIBLE = frozenset({"html", "css", "js", "mjs", "json", "txt", "svg"})
#: Smaller files go as they are.
_GZIP_MIN_BYTES = 1024

#: The browser libraries ``/assets/vendor/{package}/{file}`` serves, and the
#: file under ``node_modules/`` each one is: nothing else there is reachable.
VENDOR_FILES = {
    "swagger-ui/swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "grapesjs/grapes.min.js": "grapesjs/dist/grapes.min.js",
    "grapesjs/grapes.min.css": "grapesjs/dist/css/grapes.min.css",
}

#: One path segment of an asset's name: no leading dot (so no ``..`` and no
#: hidden files), no separator, backslash, NUL, percent sign or colon.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_MAX_SEGMENTS = 8
_MAX_NAME_CHARS = 512

#: Every page's policy starts here: its own files only, no plugins, no
#: framing by anyone, no <base>, forms post back here only.
_STRICT = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data: blob:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "frame-src": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
}
#: Files under /assets/ opened on their own (an SVG, say) run nothing.
ASSET_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


@dataclass(frozen=True)
class Page:
    #: Under the web directory.
    file: str
    #: Content-Security-Policy directives.
    csp: dict[str, str]
    #: The detail of the 404 while the file is missing.
    missing: str

    def csp_header(self) -> str:
        return "; ".join(f"{name} {value}" for name, value in self.csp.items())


#: Every page, by path, with its Content-Security-Policy: the one table to
#: change when a page needs more.
PAGES = {
    "/": Page("index.html", _STRICT, "the front page is missing (index.html)"),
    # Swagger UI sets its inline styles through the CSSOM, which style-src
    # allows: no 'unsafe-inline' (tests/e2e/test_front_door.py watches).
    "/docs": Page("docs.html", _STRICT, "the API reference is missing (docs.html)"),
    # GrapesJS styles its panels inline (about 200 violations without
    # 'unsafe-inline'); its canvas is an about:blank iframe filled from the
    # page, which frame-src does not govern. The canvas shows the template's
    # own https images and web fonts, fetched by the designer's browser;
    # scripts stay 'self' only, so nothing in a template runs there.
    "/editor": Page("editor/index.html",
                    {**_STRICT, "style-src": "'self' 'unsafe-inline'",
                     "img-src": "'self' data: blob: https:", "font-src": "'self' data: https:"},
                    "the editor is not installed (web/editor/index.html is missing)"),
}
_PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


@dataclass(frozen=True)
class WebFile:
    body: bytes
    #: The same bytes gzipped, when that is worth it.
    gzipped: bytes | None
    #: Quoted strong ETag of ``body`` (the gzipped copy's ends in ``-gzip``).
    etag: str
    content_type: str

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")


def asset_name(name: str) -> str | None:
    """``name`` when it may name a file under /assets/: short, plain
    segments, a known extension other than HTML; otherwise None."""
    if len(name) > _MAX_NAME_CHARS:
        return None
    segments = name.split("/")
    if len(segments) > _MAX_SEGMENTS or not all(_SEGMENT.fullmatch(s) for s in segments):
        return None
    stem, dot, ext = segments[-1].rpartition(".")
    if not dot or not stem or ext.lower() not in CONTENT_TYPES or ext.lower() == "html":
        return None
    return name


def read_file(root: Path, name: str) -> WebFile | None:
    """The file ``name`` under ``root``, if it resolves (symlinks followed)
    to a regular file inside ``root``. Blocking: run it in a thread."""
    ext = name.rpartition(".")[2].lower()
    content_type = CONTENT_TYPES.get(ext)
    if content_type is None:
        return None
    try:
        base = root.resolve(strict=True)
        path = (base / name).resolve(strict=True)
        if not path.is_relative_to(base) or not path.is_file():
            return None
        body = path.read_bytes()
    except (OSError, RuntimeError):  # missing, unreadable, a symlink loop
        return None
    return web_file(body, ext)


def web_file(body: bytes, ext: str) -> WebFile:
    """``body`` served as a file with extension ``ext`` (one of
    :data:`CONTENT_TYPES`): its ETag, and a gzipped copy when that pays."""
    gzipped = None
    if ext in _COMPRESSIBLE and len(body) >= _GZIP_MIN_BYTES:
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    return WebFile(body=body, gzipped=gzipped, content_type=CONTENT_TYPES[ext],
                   etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"')


class WebFiles:
    """The pages and assets, read on first use and kept in memory up to
    ``max_bytes`` (files beyond it are read for each request)."""

    def __init__(self, web_dir: Path, node_modules: Path, *, max_bytes: int = 32 * 2**20,
                 asset_max_age: int = 3600) -> None:
        self.web_dir = web_dir
        self.node_modules = node_modules
        self.max_bytes = max_bytes
        self.asset_cache_control = f"public, max-age={asset_max_age}"
        self._kept: dict[tuple[Path, str], WebFile] = {}
        self._kept_bytes = 0

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> WebFiles:
        return cls(Path(settings.gateway_web_dir or _repo() / "web"),
                   Path(settings.gateway_node_modules_dir or _repo() / "node_modules"),
                   max_bytes=settings.gateway_web_max_bytes,
                   asset_max_age=settings.gateway_web_asset_max_age)

    @classmethod
    def default(cls) -> WebFiles:
        """The repository's own files, with the default limits."""
        return cls(_repo() / "web", _repo() / "node_modules")

    async def page(self, path: str) -> WebFile | None:
        return await self._file(self.web_dir, PAGES[path].file)

    async def asset(self, name: str) -> WebFile | None:
        """The file ``/assets/{name}`` names, if any."""
        checked = asset_name(name)
        if checked is None:
            return None
        if checked.startswith("vendor/"):
            installed = VENDOR_FILES.get(checked.removeprefix("vendor/"))
            return None if installed is None else await self._file(self.node_modules, installed)
        return await self._file(self.web_dir, checked)

    async def _file(self, root: Path, name: str) -> WebFile | None:
        key = (root, name)
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        found = await asyncio.to_thread(read_file, root, name)
        if (found is not None and key not in self._kept
                and self._kept_bytes + found.size <= self.max_bytes):
            self._kept[key] = found
            self._kept_bytes += found.size
        return found


WEB_FILES = web.AppKey("web_files", WebFiles)


def _repo() -> Path:
    """The checkout this module runs from (``services/gateway/_web.py``)."""
    return Path(__file__).resolve().parents[2]


def _accepts_gzip(header: str) -> bool:
    """Whether ``Accept-Encoding`` takes gzip: named with a non-zero q, or
    ``*`` with one when gzip itself is not named (RFC 9110, 12.5.3)."""
    wildcard: bool | None = None
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        q = params.strip().lower().removeprefix("q=").strip()
        takes = not params or not re.fullmatch(r"0(\.0{0,3})?", q)
        name = coding.strip().lower()
        if name == "gzip":
            return takes
        if name == "*":
            wildcard = takes
    return bool(wildcard)


def respond(request: web.Request, found: WebFile, *, cache_control: str,
            headers: dict[str, str]) -> web.Response:
    """``found`` (gzipped when the client takes it), a 304 when its ETag
    matches ``If-None-Match``; HEAD gets the headers only."""
    gzipped = found.gzipped is not None and _accepts_gzip(
        request.headers.get("Accept-Encoding", ""))
    etag = found.etag[:-1] + '-gzip"' if gzipped else found.etag
    out = {**headers, "ETag": etag, "Cache-Control": cache_control,
           "X-Content-Type-Options": "nosniff"}
    if found.gzipped is not None:
        out["Vary"] = "Accept-Encoding"
    if etag_matches(request.headers.get("If-None-Match", ""), etag):
        return web.Response(status=304, headers=out)
    if gzipped:
        out["Content-Encoding"] = "gzip"
    body = found.gzipped if gzipped and found.gzipped is not None else found.body
    return web.Response(body=body, headers={**out, "Content-Type": found.content_type})


def page_handler(path: str) -> Handler:
    """The handler of ``GET|HEAD path`` (``/``, ``/docs``, ``/editor``)."""
    page = PAGES[path]
    headers = {**_PAGE_HEADERS, "Content-Security-Policy": page.csp_header()}

    async def get_page(request: web.Request) -> web.StreamResponse:
        found = await request.app[WEB_FILES].page(path)
        if found is None:
            raise NotFound(page.missing)
        return respond(request, found, cache_control="no-cache", headers=headers)

    return get_page


async def get_asset(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /assets/{path}``: a file of the web directory, or an
    allow-listed one of ``node_modules`` under ``vendor/``."""
    files = request.app[WEB_FILES]
    found = await files.asset(request.match_info["path"])
    if found is None:
        raise NotFound("no such asset")
    return respond(request, found, cache_control=files.asset_cache_control,
                   headers={"Content-Security-Policy": ASSET_CSP})


def add_routes(app: web.Application, files: WebFiles) -> None:
    app[WEB_FILES] = files
    for path in PAGES:
        app.router.add_get(path, page_handler(path))
    app.router.add_get("/assets/{path:.+}", get_asset)
