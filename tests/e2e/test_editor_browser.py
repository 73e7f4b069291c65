"""The editor (``/editor``) driven in real Chromium against the live stack.

The gateway serves the page with its strict CSP; a CSP violation, an uncaught
error or a request to another origin fails the test. Set
``LITHO_WRITE_SCREENSHOTS=1`` to write ``docs/editor.png``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Locator, Page

from tests.e2e._browser import ROOT, chromium
from tests.e2e.conftest import Live
from tests.e2e.test_render_path import fetch_image

pytestmark = pytest.mark.e2e

SCREENSHOT = ROOT / "docs" / "editor.png"
RED = "#ff0000"

#: Every kind of place a template tag can sit: in the shell's <style>, in the
#: <body> tag, in class and quoted attributes (one with the other quote inside),
#: blocks between elements, in a list, in a table row (where the HTML parser
#: moves stray text out), in <img src>, comparisons in text, entities, a
#: comment, an SVG with a self-closing child, and white space everywhere.
ROUND_TRIP = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<style>
  body { margin: 0; font-family: sans-serif }
  .item { color: {{ brand | default: '#333' }}; }
</style>
</head>
<body style="background:{{ bg }}; margin:0">
  <h1 class="title {{ if big }}big{{ end }}" data-x='{{ "q" }}'>{{ title }} &amp; more&nbsp;!</h1>
  {{ if user }}<p>Hi {{ user.name }}!</p>{{ else if guest }}<p>Hi guest</p>{{ else }}
  <p>Hi stranger</p>{{ end }}
  <ul>
    {{ for item, i in items }}<li class="item" data-i="{{ i }}">{{ item }}</li>{{ else }}
    <li>none</li>{{ end }}
  </ul>
  <table><tr>{{ for c in cells }}<td>{{ c }}</td>{{ end }}</tr></table>
  <img src="{{ qr(url, 240) }}" width="240" height="240" alt="">
  <p>{{ if count > 1 }}{{ count }} items{{ end }} x &gt; y ' "</p>
  <!-- a comment -->
  <svg width="10" height="10"><rect width="10" height="10" fill="{{ bg }}"/></svg>
</body>
</html>
"""
ROUND_TRIP_VARIABLES = {"bg": "#eeeeff", "big": True, "title": "T", "user": {"name": "Ada"},
                        "items": ["a", "b"], "cells": [1, 2], "url": "https://example.com",
                        "count": 3}

#: Smaller sources the HTML parser or GrapesJS would each change in some way.
TRICKY = [
    '<div style="padding: 10px;color:red">Hello, {{ user.name }}!</div>'
    "{{ for t in tags }}<span>#{{ t }}</span>{{ end }}",
    '<select>{{ for o in opts }}<option value="{{ o }}">{{ o }}</option>{{ end }}</select>',
    "<ul><li>a<li>b</ul><p>one<p>two",
    '<DIV CLASS="x" Data-Y=1>hi</DIV >',
    "<div title={{ t }}>x</div>",
    '<input {{ if checked }}checked{{ end }} type="checkbox">',
    "<style>.a { color: {{ c }} }</style><div class=\"a\">x</div>",
    "<p>&copy; 2024 &mdash; &#169; &lt;tag&gt; a&b &nbsp;</p>",
    "<p>{{ '}} <b>' }}</p><p>Hello <b>{{ name }}</b>, <i>welcome</i>!</p>",
    "<div>\r\n  a\r\n</div>\r\n",
    "  <div>{{ raw html }}</div>\n{{ raw html }}\n  ",
    "<table>{{ if x }}<tr><td>a</td></tr>{{ end }}{{ t }}</table>",
    "<br><br/><img src=\"{{ u }}\"><hr>",
    '<a href="{{ url }}?a=1&amp;b=2">link</a>',
    "<!doctype html><div>x</div>",
    "<html><body class='{{ theme }}'>\n<p>x</p>\n</body></html>",
    '<svg viewBox="0 0 10 10"><linearGradient id="g"><stop offset="0"/></linearGradient>'
    '<circle cx="5" cy="5" r="{{ r }}"></circle></svg>',
    "<div a a>dup</div>",
]

@dataclass
class EditorPage:
    page: Page
    origin: str
    problems: list[str] = field(default_factory=list)

    async def poll(self, expression: str, seconds: float = 20.0) -> Any:
        """The value of a page expression once it is truthy (the CSP forbids
        Playwright's wait_for_function, which evaluates a string)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            value = await self.page.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"still false after {seconds} s: {expression}")
            await asyncio.sleep(0.1)

    async def sign_in(self, key: str) -> None:
        await self.page.fill("#api-key", key)
        await self.page.click("#sign-in-form button[type=submit]")

    async def open(self, template_id: str) -> None:
        await self.page.evaluate(f"window.location.hash = '{template_id}'")
        await self.poll(f"window.lithoEditor && lithoEditor.templateId === '{template_id}'"
                        " && document.querySelector('#gjs iframe.gjs-frame') !== null")

    async def edit_text(self, locator: Locator) -> None:
        """Double-click an element of the canvas and wait until its text is
        being edited: on a loaded machine the editor takes a moment to turn
        its rich-text editing on, and keys typed before go nowhere. A
        double-click that lands before the canvas has bound its handlers
        (the frame is there, its components not yet) starts nothing: it is
        tried again, a few times."""
        editing = ("(() => { const d = document.querySelector('#gjs iframe.gjs-frame')"
                   ".contentDocument; return d && d.activeElement"
                   " && d.activeElement.isContentEditable; })()")
        for attempt in range(4):
            await locator.dblclick()
            try:
                await self.poll(editing, seconds=8.0)
                return
            except AssertionError:
                if attempt == 3:
                    raise

    async def exported(self) -> str:
        html: str = await self.page.evaluate("window.lithoEditor.exportHtml()")
        return html


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser(live: Live) -> AsyncIterator[tuple[Browser, str]]:
    async with chromium() as b:
        yield b, live.url


@pytest_asyncio.fixture(loop_scope="session")
async def editor(browser: tuple[Browser, str]) -> AsyncIterator[EditorPage]:
    b, origin = browser
    context = await b.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(20000)
    ed = EditorPage(page, origin)

    def console(message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or (
                message.type == "error" and ("Refused" in text or "Uncaught" in text)):
            ed.problems.append(text)

    def request(url: str) -> None:
        if not (url.startswith((origin + "/", "data:", "blob:")) or url == "about:blank"):
            ed.problems.append(f"request to another origin: {url}")

    page.on("console", console)
    page.on("pageerror", lambda exc: ed.problems.append(f"uncaught: {exc}"))
    page.on("request", lambda r: request(r.url))
    await page.goto(f"{origin}/editor")
    yield ed
    await context.close()
    assert ed.problems == []


async def create_template(live: Live, **fields: Any) -> dict[str, Any]:
    async with live.http.post(f"{live.url}/v1/templates", json=fields, headers=live.auth()) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 201, body
        return body


async def get(live: Live, path: str) -> dict[str, Any]:
    async with live.http.get(f"{live.url}{path}", headers=live.auth()) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 200, body
        return body


async def render(live: Live, template_id: str, variables: dict[str, Any],
                 version: int | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"variables": variables, "format": "png"}
    if version is not None:
        request["version"] = version
    async with live.http.post(f"{live.url}/v1/templates/{template_id}/render", json=request,
                              headers=live.auth()) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 200, body
        return body


def red_pixels(image: Any) -> int:
    data = image.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3)
               if data[i] > 200 and data[i + 1] < 70 and data[i + 2] < 70)


async def preview_has_red(live: Live, editor: EditorPage) -> None:
    """Wait (previews are debounced) until the preview image shows red text."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        src = await editor.poll(
            "(() => { const img = document.querySelector('#preview');"
            " return !img.hidden && img.complete && img.naturalWidth === 1200 && img.src; })()")
        preview, _ = await fetch_image(live, live.url + "/images/" + src.rsplit("/images/", 1)[1])
        if red_pixels(preview) > 200:
            return
        assert asyncio.get_running_loop().time() < deadline, "the preview never showed red text"
        await asyncio.sleep(0.3)


async def test_sign_in_keeps_the_key_in_the_tab_only(live: Live, editor: EditorPage) -> None:
    page = editor.page
    await editor.sign_in("lk_not-a-key")
    await editor.poll("document.querySelector('#sign-in-error').textContent.length > 0")
    assert "invalid API key" in (await page.text_content("#sign-in-error") or "")
    assert await page.evaluate("sessionStorage.length") == 0
    await editor.sign_in(live.stack.api_key)
    await page.wait_for_selector("#library:not([hidden])")
    assert await page.evaluate("sessionStorage.getItem('litho.apiKey')") == live.stack.api_key
    assert await page.evaluate("localStorage.length") == 0
    assert await page.evaluate("document.cookie") == ""
    await page.click("#sign-out")
    await page.wait_for_selector("#sign-in:not([hidden])")
    assert await page.evaluate("sessionStorage.length") == 0


async def test_names_and_errors_are_text_not_markup(live: Live, editor: EditorPage) -> None:
    name = '<img src=x id="injected"><b>bold</b>'
    await create_template(live, name=name, html="<p>x</p>", width=100, height=100)
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#template-list li")
    assert await editor.page.locator("#template-list li .grow", has_text=name).count() >= 1
    assert await editor.page.locator("#injected, #template-list b").count() == 0


async def test_designer_builds_an_og_card(live: Live, editor: EditorPage) -> None:
    page = editor.page
    await editor.sign_in(live.stack.api_key)
    await page.fill("#new-name", "OG card from the editor")
    await page.select_option("#new-preset", "1200x630")
    await page.click("#create")
    await editor.poll("window.lithoEditor && document.querySelector('#gjs iframe.gjs-frame')")
    template_id = (await page.evaluate("location.hash"))[1:]
    created = await get(live, f"/v1/templates/{template_id}")
    assert (created["width"], created["height"], created["version"]) == (1200, 630, 1)

    await page.click("#blocks .gjs-block[title='Text']")
    canvas = page.frame_locator("#gjs iframe.gjs-frame")
    await editor.edit_text(canvas.locator("text=Your text"))
    await page.keyboard.press("Control+A")
    await page.keyboard.type("{{ title }}")
    await page.click("#styles .gjs-sm-sector-title >> text=Typography")
    colour = page.locator("#styles .gjs-sm-property__color input")
    await colour.fill(RED)
    await colour.press("Enter")

    await page.click("button[data-tab=data]")
    await page.fill("#sample", '{"title": oops}')
    await editor.poll(
        "document.querySelector('#sample-error').textContent.includes('Invalid JSON')")
    await page.fill("#sample", '{"title": "Hello"}')
    await editor.poll("document.querySelector('#sample-error').textContent === ''")
    # The preview is the real renderer's image of the current canvas and sample data.
    await editor.poll("document.querySelector('#discovered').textContent.includes('title')")
    await preview_has_red(live, editor)
    await page.click("#save")
    await editor.poll("document.querySelector('#status').textContent === 'Saved version 2'")
    versions = (await get(live, f"/v1/templates/{template_id}/versions"))["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    saved = versions[0]
    assert "{{ title }}" in saved["html"] and "color:#ff0000" in saved["html"].replace(" ", "")
    assert saved["sampleVariables"] == {"title": "Hello"}
    result = await render(live, template_id, {"title": "Hello"})
    assert result["templateVersion"] == 2
    image, _ = await fetch_image(live, result["url"])
    assert red_pixels(image) > 200
    # Without the title there is no text, so no red: the pixels came from {{ title }}.
    empty, _ = await fetch_image(live, (await render(live, template_id, {}))["url"])
    assert red_pixels(empty) == 0
    # What the editor writes, it reads back unchanged.
    await page.click("#open-library")
    await editor.open(template_id)
    assert await editor.exported() == saved["html"]

    # The copilot's dark-mode variant, accepted whole and saved as version 3.
    await page.click("button[data-tab=copilot]")
    await page.fill("#copilot-prompt", "make a dark-mode variant")
    await page.click("#copilot-form button[type=submit]")
    await editor.poll("document.querySelectorAll('#copilot-steps input:checked').length > 0")
    await page.click("#copilot-apply")
    await editor.poll("document.querySelector('#copilot-status').textContent"
                      ".startsWith('Applied as version 3')")
    await page.click("button[data-tab=data]")
    src = await editor.poll(
        "(() => { const img = document.querySelector('#preview');"
        " return !img.hidden && img.complete && img.naturalWidth === 1200 && img.src; })()")
    preview, _ = await fetch_image(live, live.url + "/images/" + src.rsplit("/images/", 1)[1])
    assert corner_luminance(preview) < 80
    dark = await render(live, template_id, {"title": "Hello"})
    assert dark["templateVersion"] == 3
    image, _ = await fetch_image(live, dark["url"])
    assert corner_luminance(image) < 80 and red_pixels(image) > 200
    # The canvas shows it too (GrapesJS's own frame style would paint it white).
    canvas_background = await editor.poll(
        "getComputedStyle(document.querySelector('#gjs iframe.gjs-frame')"
        ".contentDocument.body).backgroundColor")
    assert canvas_background == "rgb(15, 17, 21)"
    if os.environ.get("LITHO_WRITE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOT))


async def test_open_and_save_keeps_the_template_byte_for_byte(
        live: Live, editor: EditorPage) -> None:
    template = await create_template(live, name="round trip", html=ROUND_TRIP, width=600,
                                     height=400, sampleVariables=ROUND_TRIP_VARIABLES)
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    assert await editor.exported() == ROUND_TRIP
    await editor.page.click("#save")
    await editor.poll("document.querySelector('#status').textContent === 'Saved version 2'")
    saved = await get(live, f"/v1/templates/{template['id']}")
    assert (saved["version"], saved["html"]) == (2, ROUND_TRIP)
    first = await render(live, template["id"], ROUND_TRIP_VARIABLES, version=1)
    second = await render(live, template["id"], ROUND_TRIP_VARIABLES, version=2)
    before, _ = await fetch_image(live, first["url"])
    after, _ = await fetch_image(live, second["url"])
    assert before.tobytes() == after.tobytes()

    # Restoring version 1 makes version 3 with version 1's fields.
    await editor.page.click("button[data-tab=versions]")
    await editor.page.locator("#versions li", has_text="v1 ").get_by_role("button").click()
    await editor.poll("document.querySelector('#status').textContent"
                      " === 'Restored version 1 as version 3'")
    restored = await get(live, f"/v1/templates/{template['id']}")
    assert (restored["version"], restored["html"]) == (3, ROUND_TRIP)


async def test_tricky_sources_come_back_unchanged(live: Live, editor: EditorPage) -> None:
    ids = [(await create_template(live, name=f"tricky {i}", html=html, width=300,
                                  height=200))["id"] for i, html in enumerate(TRICKY)]
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    changed = []
    for template_id, html in zip(ids, TRICKY, strict=True):
        await editor.open(template_id)
        exported = await editor.exported()
        if exported != html:
            changed.append((html, exported))
    assert changed == []


async def test_blocks_insert_their_markup(live: Live, editor: EditorPage) -> None:
    template = await create_template(live, name="blocks", html="<body></body>", width=400,
                                     height=300)
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    for title in ("Text", "Image", "Shape", "QR code", "Badge"):
        # A click appends the block to the selected element: select the body.
        await editor.page.evaluate("lithoEditor.editor.select(lithoEditor.editor.getWrapper())")
        await editor.page.click(f"#blocks .gjs-block[title='{title}']")
        if title == "Image":  # the asset manager may open for the image's URL
            await editor.page.keyboard.press("Escape")
    html = await editor.exported()
    assert html.startswith("<body><div style=") and html.endswith("</span></body>")
    assert '<img src="{{ qr(url, 240) }}" width="240" height="240" alt="QR code">' in html
    assert '<img src="{{ image }}" alt="" style="width:320px;' in html
    assert "border-radius:999px" in html
    async with live.http.post(f"{live.url}/v1/expressions/validate", json={"template": html},
                              headers=live.auth()) as r:
        assert await r.json() == {"valid": True, "errors": [], "variables": ["image", "url"]}


async def test_an_edit_keeps_every_other_tag(live: Live, editor: EditorPage) -> None:
    """Changing one element writes that element fresh and leaves the rest as it was."""
    html = ('<div class="card">{{ for p in products }}<h2 title="{{ p.name }}">{{ p.name }}</h2>'
            '{{ if p.sale }}<span class="sale">{{ p.price * 0.9 | currency }}</span>{{ end }}'
            '{{ end }}<p id="footer">Old footer</p></div>')
    template = await create_template(live, name="one edit", html=html, width=400, height=300)
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    await editor.page.evaluate(
        "(() => { const c = window.lithoEditor.editor.getWrapper().find('#footer')[0];"
        " c.components('New footer {{ year }} & {{ a < b }}'); })()")
    assert await editor.exported() == html.replace(
        "Old footer", "New footer {{ year }} &amp; {{ a < b }}")


async def test_preview_shows_the_renders_warnings(live: Live, editor: EditorPage) -> None:
    # The image comes from the sample data, so the canvas itself never asks for it.
    template = await create_template(
        live, name="warned", html='<img src="{{ img }}" width="50" height="50">', width=100,
        height=100, sampleVariables={"img": live.secret.url("editor.png")})
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    await editor.page.click("button[data-tab=data]")
    warnings = await editor.poll("document.querySelector('#preview-warnings').textContent")
    assert warnings.startswith("denied: " + live.secret.url("editor.png"))
    assert "LITHO_OUTBOUND_ALLOW" in warnings


async def test_duplicate_makes_a_new_template_with_the_same_source(
        live: Live, editor: EditorPage) -> None:
    html = "<p>{{ if a }}A{{ end }}</p>"
    await create_template(live, name="to duplicate", html=html, width=320, height=100,
                          sampleVariables={"a": True})
    await editor.sign_in(live.stack.api_key)
    row = editor.page.locator("#template-list li", has_text="to duplicate")
    await row.get_by_role("button", name="Duplicate").click()
    await editor.poll("document.querySelector('#status').textContent"
                      ".includes('Duplicated as “to duplicate (copy)”')")
    async with live.http.get(f"{live.url}/v1/templates?namePrefix=to%20duplicate%20(copy)",
                             headers=live.auth()) as r:
        copies = (await r.json())["templates"]
    assert [(c["html"], c["width"], c["height"], c["sampleVariables"]) for c in copies] == [
        (html, 320, 100, {"a": True})]


async def test_styling_the_body_keeps_its_own_attributes(
        live: Live, editor: EditorPage) -> None:
    html = '<html><body class="k" style="background:{{ bg }}; margin:0"><p>x</p></body></html>'
    template = await create_template(live, name="body", html=html, width=300, height=100)
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    await editor.page.evaluate(
        "lithoEditor.editor.getWrapper().addStyle({'background-color': '#ff0000'})")
    assert await editor.exported() == html.replace(
        "margin:0", "margin:0;background-color:#ff0000;")


async def test_typing_next_to_block_tags_keeps_them(live: Live, editor: EditorPage) -> None:
    html = '<p class="x">{{ if a }}Yes{{ else }}No{{ end }} and {{ b }}</p>'
    template = await create_template(live, name="typing", html=html, width=300, height=100)
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    await editor.edit_text(editor.page.frame_locator("#gjs iframe.gjs-frame").locator("p"))
    await editor.page.keyboard.press("End")
    await editor.page.keyboard.type("!")
    await editor.page.click("#save")
    await editor.poll("document.querySelector('#status').textContent === 'Saved version 2'")
    saved = await get(live, f"/v1/templates/{template['id']}")
    assert saved["html"] == html.replace("</p>", "!</p>")


async def test_syntax_errors_show_line_and_column_and_block_the_save(
        live: Live, editor: EditorPage) -> None:
    template = await create_template(live, name="broken on purpose", html="<p>ok</p>",
                                     width=300, height=200)
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    await editor.edit_text(
        editor.page.frame_locator("#gjs iframe.gjs-frame").locator("text=ok"))
    await editor.page.keyboard.press("Control+A")
    await editor.page.keyboard.type("{{ if a }}never closed")
    await editor.page.click("button[data-tab=data]")
    errors = await editor.poll("document.querySelector('#syntax-errors').textContent")
    assert "line 1, column" in errors and "never closed" in errors
    await editor.page.click("#save")
    await editor.poll("document.querySelector('#status').textContent"
                      " === 'Not saved: the template has errors'")
    assert (await get(live, f"/v1/templates/{template['id']}"))["version"] == 1


def corner_luminance(image: Any) -> float:
    r, g, b = image.convert("RGB").getpixel((3, 3))
    return float(0.2126 * r + 0.7152 * g + 0.0722 * b)


async def test_copilot_dark_mode_variant_is_previewed_and_applied(
        live: Live, editor: EditorPage) -> None:
    html = ('<body style="margin:0;background:#ffffff;color:#111111;font-family:sans-serif">'
            '<h1 style="font-size:64px">{{ title }}</h1></body>')
    template = await create_template(live, name="copilot dark", html=html, width=600,
                                     height=315, sampleVariables={"title": "Hi"})
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    await editor.page.click("button[data-tab=copilot]")
    await editor.page.fill("#copilot-prompt", "make a dark-mode variant")
    await editor.page.click("#copilot-form button[type=submit]")
    await editor.poll("document.querySelectorAll('#copilot-steps input:checked').length > 0")
    # Reject every step but the first, preview, then apply.
    boxes = editor.page.locator("#copilot-steps input:checked")
    while await boxes.count() > 1:
        await boxes.nth(1).uncheck()
    await editor.page.click("#copilot-preview")
    src = await editor.poll("(() => { const img = document.querySelector('#copilot-image');"
                            " return !img.hidden && img.complete && img.naturalWidth && img.src;"
                            " })()")
    drafted, _ = await fetch_image(live, live.url + "/images/" + src.rsplit("/images/", 1)[1])
    assert corner_luminance(drafted) < 80
    assert (await get(live, f"/v1/templates/{template['id']}"))["version"] == 1
    await editor.page.click("#copilot-apply")
    await editor.poll("document.querySelector('#copilot-status').textContent"
                      ".startsWith('Applied as version 2')")
    await editor.page.click("button[data-tab=data]")
    src = await editor.poll(
        "(() => { const img = document.querySelector('#preview');"
        " return !img.hidden && img.complete && img.naturalWidth === 600 && img.src; })()")
    preview, _ = await fetch_image(live, live.url + "/images/" + src.rsplit("/images/", 1)[1])
    assert corner_luminance(preview) < 80
    assert (await get(live, f"/v1/templates/{template['id']}"))["version"] == 2


async def test_copilot_panel_says_when_the_server_has_no_copilot(
        live: Live, editor: EditorPage) -> None:
    """A gateway without the copilot answers 404: the panel says so (the
    browser is made to get that 404, whatever this gateway has)."""
    template = await create_template(live, name="copilot", html="<p>x</p>", width=300, height=200)
    await editor.page.route("**/copilot", lambda route: route.fulfill(
        status=404, content_type="application/problem+json",
        body='{"type": "about:blank", "title": "Not Found", "status": 404}'))
    await editor.sign_in(live.stack.api_key)
    await editor.page.wait_for_selector("#library:not([hidden])")
    await editor.open(template["id"])
    await editor.page.click("button[data-tab=copilot]")
    await editor.page.fill("#copilot-prompt", "make a dark-mode variant")
    await editor.page.click("#copilot-form button[type=submit]")
    await editor.poll("document.querySelector('#copilot-status').textContent"
                      " === 'The copilot is not available on this server yet.'")
    assert await editor.page.locator("#copilot-apply").is_hidden()
