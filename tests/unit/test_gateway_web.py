"""The pages and assets for browsers (``services/gateway/_web.py``), served by
the real gateway app over a real socket, from a web directory and a
node_modules of the test's own (and once from the repository's)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict

from services.gateway import _web
from services.gateway._app import create_app
from services.gateway._openapi import RequestValidator, load_document
from services.gateway._settings import GatewaySettings
from services.gateway._state import Deps
from services.gateway._web import PAGES, VENDOR_FILES, WebFiles, asset_name

SECRET = b"/* the secret next to the web directory */"
CSS = b"body { color: #123456; }\n" * 100  # gzipped: it is over 1 KiB
Serve = Callable[[WebFiles], Awaitable[str]]


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A web directory, a node_modules beside it, and files outside both."""
    site, modules = tmp_path / "web", tmp_path / "node_modules"
    (site / "editor").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>front</title>")
    (site / "docs.html").write_text("<!doctype html><title>docs</title>")
    (site / "site.css").write_bytes(CSS)
    (site / "app.js").write_text("console.log('hi');")
    (site / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (site / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (site / "font.woff2").write_bytes(b"wOF2")
    (site / "notes.exe").write_bytes(b"MZ")
    (site / "editor" / "editor.js").write_text("// the editor")
    (site / ".hidden.css").write_text("hidden")
    (tmp_path / "secret.css").write_bytes(SECRET)
    (site / "outside.css").symlink_to(tmp_path / "secret.css")
    (site / "inside.css").symlink_to(site / "site.css")
    (site / "loop.css").symlink_to(site / "loop.css")
    for installed in VENDOR_FILES.values():
        path = modules / installed
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"/* {installed} */")
    (modules / "grapesjs" / "package.json").write_text('{"name": "grapesjs"}')
    (modules / "swagger-ui-dist" / "index.html").write_text("<!doctype html>")
    return site, modules


@pytest_asyncio.fixture(loop_scope="session")
async def serve() -> AsyncIterator[Serve]:
    """Starts the gateway app with the given files; answers its base URL."""
    runners: list[web.AppRunner] = []

    async def start(files: WebFiles) -> str:
        doc = load_document()
        deps = Deps(keys=None, templates=None, renderer=None,  # type: ignore[arg-type]
                    webhooks=None, blobs=None,  # type: ignore[arg-type]
                    openapi=doc, validator=RequestValidator(doc))
        runner = web.AppRunner(create_app(deps, max_body_bytes=1 << 20, web_files=files),
                               access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def site(serve: Serve, tmp_path: Path) -> tuple[str, Path]:
    web_dir, modules = _tree(tmp_path)
    return await serve(WebFiles(web_dir, modules)), web_dir


async def _get(url: str, *, method: str = "GET",
               headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as http, \
            http.request(method, url, headers=headers or {}) as r:
        return r.status, r.headers.copy(), await r.read()


async def _raw(base: str, target: str) -> tuple[int, bytes]:
    """``GET target`` sent byte for byte (a client would normalise it)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head + body


# ------------------------------------------------------------------ pages ----


@pytest.mark.parametrize(("path", "title"), [("/", b"front"), ("/docs", b"docs")])
async def test_pages_are_html_without_a_key_with_their_security_headers(
    site: tuple[str, Path], path: str, title: bytes,
) -> None:
    base, _ = site
    status, headers, body = await _get(base + path)
    assert status == 200 and title in body
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"] == PAGES[path].csp_header()
    assert re.fullmatch(r'"[0-9a-f]{32}"', headers["ETag"])


async def test_the_api_still_needs_a_key(site: tuple[str, Path]) -> None:
    base, _ = site
    for path in ("/v1/templates", "/assets", "/docs/", "/editor/x", "/index.html"):
        status, _, _ = await _get(base + path)
        assert status == 401, path
    status, _, _ = await _get(base + "/", method="POST")
    assert status == 401  # only GET and HEAD are public


def _directives(header: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in header.split("; ")}


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_has_a_strict_policy(path: str) -> None:
    csp = _directives(PAGES[path].csp_header())
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"  # no inline script, no eval, no other origin
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert csp["form-action"] == "'self'"
    assert csp["object-src"] == "'none'"
    assert csp["frame-src"] == "'none'"
    if path == "/editor":
        # A template's own remote images and fonts show on the canvas;
        # scripts, styles and connections stay Litho's (no CDN).
        assert csp["img-src"] == "'self' data: blob: https:"
        assert csp["font-src"] == "'self' data: https:"
        assert "http" not in csp["script-src"] + csp["style-src"] + csp["connect-src"]
    else:
        assert csp["img-src"] == "'self' data: blob:"
        assert "http" not in PAGES[path].csp_header()  # no CDN anywhere
        assert csp["style-src"] == "'self'"


async def test_the_editor_is_a_404_until_it_is_installed(site: tuple[str, Path]) -> None:
    base, web_dir = site
    status, headers, body = await _get(base + "/editor")
    assert status == 404 and headers["Content-Type"].startswith("application/problem+json")
    assert "web/editor/index.html" in json.loads(body)["detail"]
    (web_dir / "editor" / "index.html").write_text("<!doctype html><title>editor</title>")
    status, headers, body = await _get(base + "/editor")
    assert status == 200 and b"editor" in body
    csp = _directives(headers["Content-Security-Policy"])
    assert csp["frame-src"] == "'none'" and csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self' 'unsafe-inline'"
    assert csp["img-src"] == "'self' data: blob: https:"


# ----------------------------------------------------------------- assets ----


@pytest.mark.parametrize(("path", "content_type"), [
    ("site.css", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("logo.svg", "image/svg+xml"),
    ("logo.png", "image/png"),
    ("font.woff2", "font/woff2"),
    ("inside.css", "text/css; charset=utf-8"),  # a symlink that stays inside
    ("editor/editor.js", "text/javascript; charset=utf-8"),
    ("vendor/grapesjs/grapes.min.js", "text/javascript; charset=utf-8"),
    ("vendor/grapesjs/grapes.min.css", "text/css; charset=utf-8"),
    ("vendor/swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    ("vendor/swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
])
async def test_assets_have_their_content_type(
    site: tuple[str, Path], path: str, content_type: str,
) -> None:
    base, _ = site
    status, headers, _ = await _get(f"{base}/assets/{path}")
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert "sandbox" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", [
    "nope.css",  # no such file
    "notes.exe",  # an extension not served
    "index.html", "vendor/swagger-ui/index.html",  # HTML only as a page, with its policy
    "editor", "vendor", "vendor/grapesjs",  # directories: never listed
    "vendor/grapesjs/package.json",  # installed, not on the allow-list
    "vendor/grapesjs/dist/grapes.min.js",  # only by its allow-listed name
    "outside.css",  # a symlink out of the web directory
    "loop.css",  # a symlink loop
])
async def test_unknown_assets_are_a_404_problem(site: tuple[str, Path], path: str) -> None:
    base, _ = site
    status, headers, body = await _get(f"{base}/assets/{path}")
    assert status == 404, path
    assert headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(body)["detail"] == "no such asset"


@pytest.mark.parametrize("target", [
    "/assets/../secret.css",
    "/assets/%2e%2e/secret.css",
    "/assets/%2E%2E/secret.css",
    "/assets/..%2fsecret.css",
    "/assets/%2e%2e%2fsecret.css",
    "/assets/editor/../../secret.css",
    "/assets/editor/%2e%2e/%2e%2e/secret.css",
    "/assets/..\\secret.css",
    "/assets/%5c..%5csecret.css",
    "/assets/.%2e/secret.css",
    "/assets/%00.css",
    "/assets/site.css%00.png",
    "/assets//secret.css",
    "/assets/%2fsecret.css",
    "/assets/%2f%2e%2e%2fsecret.css",
    "/assets/.hidden.css",
    "/assets/outside.css",
    "/assets/vendor/../../secret.css",
    "/assets/vendor/%2e%2e/%2e%2e/secret.css",
    "/assets/C:%5csecret.css",
    "/assets/" + "a/" * 20 + "x.css",
    "/assets/" + "a" * 600 + ".css",
])
async def test_no_path_reaches_outside_the_web_directory(
    site: tuple[str, Path], target: str,
) -> None:
    base, _ = site
    status, raw = await _raw(base, target)
    assert status in (400, 401, 404, 422), (target, status)
    assert SECRET not in raw and b"color: #123456" not in raw


@pytest.mark.parametrize("name", [
    "../secret.css", "editor/../../secret.css", "..\\secret.css", "/secret.css",
    "//secret.css", ".hidden.css", "outside.css", "loop.css", "site.css\x00.png",
    "vendor/../../secret.css", "vendor/grapesjs/../../../secret.css", "editor", "index.html",
])
async def test_the_handler_refuses_them_too(tmp_path: Path, name: str) -> None:
    """Behind the OpenAPI pattern (which answers 422 first), the handler's
    own checks: the name, then where it resolves."""
    files = WebFiles(*_tree(tmp_path))
    assert await files.asset(name) is None
    assert (await files.asset("inside.css")) is not None


async def test_a_matching_etag_is_a_304_and_gzip_has_its_own(site: tuple[str, Path]) -> None:
    base, _ = site
    url = base + "/assets/site.css"
    status, plain, body = await _get(url, headers={"Accept-Encoding": "identity"})
    assert status == 200 and body == CSS and "Content-Encoding" not in plain
    assert plain["Vary"] == "Accept-Encoding"
    status, packed, zipped = await _get(url, headers={"Accept-Encoding": "gzip, br"})
    assert status == 200 and packed["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped) == CSS and len(zipped) < len(CSS)
    assert packed["ETag"] != plain["ETag"]
    status, _, refused = await _get(url, headers={"Accept-Encoding": "gzip;q=0"})
    assert refused == CSS
    for etag, encoding in ((plain["ETag"], "identity"), (packed["ETag"], "gzip"),
                           ("W/" + plain["ETag"], "identity"), ("*", "identity")):
        status, headers, body = await _get(
            url, headers={"If-None-Match": etag, "Accept-Encoding": encoding})
        assert status == 304 and body == b"", etag
        assert headers["Cache-Control"] == "public, max-age=3600"
    status, _, _ = await _get(url, headers={"If-None-Match": '"other"'})
    assert status == 200
    _, headers, _ = await _get(base + "/")
    status, _, _ = await _get(base + "/", headers={"If-None-Match": headers["ETag"]})
    assert status == 304


@pytest.mark.parametrize("path", ["/", "/docs", "/assets/site.css",
                                  "/assets/vendor/grapesjs/grapes.min.js"])
async def test_head_answers_the_headers_only(site: tuple[str, Path], path: str) -> None:
    base, _ = site
    _, got, body = await _get(base + path, headers={"Accept-Encoding": "identity"})
    status, headers, empty = await _get(base + path, method="HEAD",
                                        headers={"Accept-Encoding": "identity"})
    assert status == 200 and empty == b""
    assert headers["Content-Length"] == str(len(body))
    assert headers["ETag"] == got["ETag"]
    assert headers["Content-Type"] == got["Content-Type"]
    status, _, _ = await _get(base + "/assets/nope.css", method="HEAD")
    assert status == 404


@pytest.mark.parametrize("name", ["site.css", "editor/editor.js", "vendor/grapesjs/grapes.min.js"])
def test_plain_names_are_asset_names(name: str) -> None:
    assert asset_name(name) == name


@pytest.mark.parametrize("name", ["", "/etc/x.css", "../x.css", "a/../x.css", ".x.css", "a\\b.css",
                                  "a\x00.css", "a%2e.css", "c:x.css", "a//b.css", "x.", ".css",
                                  "x.html", "x.exe", "noext"])
def test_other_names_are_refused_before_the_file_system(name: str) -> None:
    assert asset_name(name) is None


# ------------------------------------------------------------ the memory ----


async def test_files_are_kept_in_memory_within_the_budget(serve: Serve, tmp_path: Path) -> None:
    web_dir, modules = _tree(tmp_path)
    kept = await serve(WebFiles(web_dir, modules, max_bytes=200))
    each_time = await serve(WebFiles(web_dir, modules, max_bytes=0))
    for base in (kept, each_time):
        _, _, body = await _get(base + "/assets/app.js")
        assert body == b"console.log('hi');"
    (web_dir / "app.js").write_text("console.log('changed');")
    _, _, body = await _get(kept + "/assets/app.js")
    assert body == b"console.log('hi');"  # read once
    _, _, body = await _get(each_time + "/assets/app.js")
    assert body == b"console.log('changed');"  # no budget: read every time
    # site.css and its gzipped copy are over what is left: read for each request.
    (web_dir / "site.css").write_bytes(CSS + b"/* 2 */")
    _, _, first = await _get(kept + "/assets/site.css", headers={"Accept-Encoding": "identity"})
    (web_dir / "site.css").write_bytes(CSS + b"/* 3 */")
    _, _, second = await _get(kept + "/assets/site.css", headers={"Accept-Encoding": "identity"})
    assert first.endswith(b"/* 2 */") and second.endswith(b"/* 3 */")


def test_the_directories_are_settings(tmp_path: Path) -> None:
    files = WebFiles.from_settings(GatewaySettings(
        gateway_web_dir=str(tmp_path / "site"), gateway_node_modules_dir=str(tmp_path / "nm"),
        gateway_web_max_bytes=5, gateway_web_asset_max_age=60))
    assert files.web_dir == tmp_path / "site" and files.node_modules == tmp_path / "nm"
    assert files.max_bytes == 5 and files.asset_cache_control == "public, max-age=60"
    default = WebFiles.from_settings(GatewaySettings())
    assert (default.web_dir / "index.html").is_file()
    assert default.node_modules.name == "node_modules"


# ------------------------------------------------- the repository's pages ----


async def test_every_file_the_repository_pages_load_is_served(serve: Serve) -> None:
    """The real web/ and node_modules/ (npm ci): every script, style sheet
    and icon a page names is served from here, and none from elsewhere."""
    base = await serve(WebFiles.default())
    for page in ("/", "/docs"):
        status, _, body = await _get(base + page, headers={"Accept-Encoding": "identity"})
        assert status == 200
        refs = re.findall(rb'(?:src|href)="([^"]+)"', body)
        assert refs
        for ref in refs:
            assert ref.startswith(b"/") and not ref.startswith(b"//"), ref  # this server
            if ref.startswith(b"/assets/"):
                status, headers, _ = await _get(base + ref.decode())
                assert status == 200, ref
                assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(("header", "takes"), [
    ("gzip", True), ("*;q=0, gzip", True), ("gzip;q=0, *", False), ("*", True),
    ("br", False), ("*;q=0", False), ("identity, gzip;q=0.5", True), ("", False)])
def test_gzip_is_sent_when_accept_encoding_takes_it(header: str, takes: bool) -> None:
    assert _web._accepts_gzip(header) is takes
