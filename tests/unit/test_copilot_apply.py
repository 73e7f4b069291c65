"""The copilot's applier: minimal splices, whole blocks, all or nothing."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from litho.errors import InvalidArgument
from services.template._copilot import (
    ApplyError,
    CopilotLimits,
    TemplateView,
    apply,
    operation_from_json,
)
from services.template._lang import Engine

# A realistic OG card: a <style> block, inline styles in both quote styles, a
# tag holding a quote inside an attribute, an {{ if }} with an else, and a loop.
OG = """<html>
<head>
<style>
  body { margin: 0; width: 1200px; height: 630px; background: #ffffff; color: #111827; }
  .tag { color: #e11d48; border: 2px solid #e11d48; padding: 4px 12px; }
</style>
</head>
<body>
  <div class="card" style="position:absolute; left:60px; top:48px; width:1080px">
    <h1 data-fit data-fit-max="96" style="font: 700 72px/1.1 'Inter'; color: {{ titleColor | default: "#111827" }}">{{ title }}</h1>
    {{ if subtitle }}<p class="lead" style='font-size: 32px; color:#4b5563'>{{ subtitle | truncate: 80 }}</p>{{ else }}<p class="lead">No subtitle</p>{{ end }}
    <ul class="tags">{{ for t in tags }}<li class="tag">{{ t }}</li>{{ end }}</ul>
  </div>
  <img src="{{ avatar }}" alt="" style="position:absolute; right:60px; bottom:48px; width:120px; height:120px; border-radius:60px">
</body>
</html>
"""  # noqa: E501
CARD = TemplateView(OG, 1200, 630, "og")
TAGS = re.compile(r"\{\{.*?\}\}")


def run(*ops: dict[str, Any], template: TemplateView = CARD) -> Any:
    return apply(template, [operation_from_json(o) for o in ops])


def only_changed(before: str, after: str) -> tuple[str, str]:
    """The differing middle of two strings (common prefix and suffix removed)."""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
        end += 1
    return before[start:len(before) - end], after[start:len(after) - end]


def valid(html: str) -> None:
    assert Engine().check(html) == []


def test_set_style_replaces_one_value_and_nothing_else() -> None:
    result = run({"op": "set_style", "target": {"selector": "p.lead"},
                  "styles": {"color": "#2563eb"}})
    assert only_changed(OG, result.html) == ("4b5563", "2563eb")
    valid(result.html)


def test_set_style_appends_removes_and_keeps_the_quote_style() -> None:
    result = run({"op": "set_style", "target": {"selector": "p.lead"},
                  "styles": {"font-size": None, "font-family": '"Brand Sans"'}})
    assert "<p class=\"lead\" style='color:#4b5563; font-family: \"Brand Sans\"'>" \
        in result.html
    # No style attribute yet: one is added, quoted, its quotes escaped.
    result = run({"op": "set_style", "target": {"selector": "p.lead", "index": 1},
                  "styles": {"font-family": '"Brand Sans"'}})
    assert '<p class="lead" style="font-family: &quot;Brand Sans&quot;">No subtitle' \
        in result.html
    valid(result.html)


def test_set_text_keeps_tags_and_escapes_the_rest() -> None:
    result = run({"op": "set_text", "target": {"selector": "h1"},
                  "text": "Hello <b>{{ name | uppercase }}</b> & co"})
    assert only_changed(OG, result.html) == (
        "{{ title }}", "Hello &lt;b&gt;{{ name | uppercase }}&lt;/b&gt; &amp; co")
    valid(result.html)


def test_set_text_refuses_an_element_with_children_or_split_blocks() -> None:
    with pytest.raises(ApplyError, match="holds other elements"):
        run({"op": "set_text", "target": {"selector": "ul"}, "text": "x"})
    split = TemplateView("<div>{{ if a }}<p>x</div>{{ end }}</p>", 10, 10)
    with pytest.raises(ApplyError, match="blocks"):
        run({"op": "remove_element", "target": {"selector": "div"}}, template=split)


def test_resize_scales_positions_sizes_and_keeps_the_rest() -> None:
    result = run({"op": "resize_canvas", "width": 1080, "height": 1920, "reflow": "scale"})
    assert (result.width, result.height) == (1080, 1920)
    html = result.html
    # The canvas-sized body follows the canvas; positions follow their axis.
    assert "width: 1080px; height: 1920px;" in html
    assert "left:54px; top:146.29px; width:972px" in html
    assert "right:54px; bottom:146.29px; width:108px; height:108px" in html
    assert "font: 700 64.8px/1.1 'Inter'" in html and 'data-fit-max="86"' in html
    assert TAGS.findall(html) == TAGS.findall(OG)
    valid(html)
    plain = run({"op": "resize_canvas", "width": 1080, "height": 1920, "reflow": "none"})
    assert plain.html == OG


def test_add_qr_writes_a_qr_tag_in_an_img_at_the_end_of_the_body() -> None:
    result = run({"op": "add_element", "kind": "qr", "props": {
        "value": "{{ url }}", "size": 200, "style": {"position": "absolute",
                                                     "right": "40px"}}})
    before, after = only_changed(OG, result.html)
    assert before == ""
    assert after.strip() == ('<img data-litho-id="qr-1" src="{{ qr((url), 200) }}" alt="QR code" '
                             'style="width: 200px; height: 200px; position: absolute; '
                             'right: 40px">')
    valid(result.html)
    literal = run({"op": "add_element", "kind": "qr",
                   "props": {"value": "https://x.test/it's"}})
    assert "{{ qr('https://x.test/it\\'s', 240) }}" in literal.html
    valid(literal.html)
    # A tag is a variable and nothing else: its own text never reaches the page.
    with pytest.raises(InvalidArgument, match="naming a variable"):
        run({"op": "add_element", "kind": "qr",
             "props": {"value": '{{ link | default: "https://x.test" }}'}})


def test_added_elements_get_unique_ids_and_escape_text() -> None:
    result = run({"op": "add_element", "kind": "badge", "props": {"text": "<NEW>"}},
                 {"op": "add_element", "kind": "badge", "props": {"text": "{{ label }}"}},
                 {"op": "add_element", "kind": "text", "parent": {"selector": ".card"},
                  "position": "start", "props": {"text": "Hi", "tag": "h2"}},
                 {"op": "add_element", "kind": "shape", "props": {"shape": "circle"}},
                 {"op": "add_element", "kind": "image",
                  "props": {"src": "https://x.test/a.png?a=1&b=2", "alt": 'say "hi"'}})
    html = result.html
    assert 'data-litho-id="badge-1"' in html and 'data-litho-id="badge-2"' in html
    assert ">&lt;NEW&gt;</span>" in html and ">{{ label }}</span>" in html
    assert '<div class="card" style="position:absolute; left:60px; top:48px; width:1080px">' \
           '<h2 data-litho-id="text-1">Hi</h2>' in html
    assert "border-radius: 50%" in html
    assert 'src="https://x.test/a.png?a=1&amp;b=2" alt="say &quot;hi&quot;"' in html
    valid(html)


def test_remove_element_takes_its_line() -> None:
    result = run({"op": "remove_element", "target": {"selector": "img"}})
    before, after = only_changed(OG, result.html)
    assert after == "" and before.startswith("  <img src=\"{{ avatar }}\"")
    with pytest.raises(ApplyError, match="frames the document"):
        run({"op": "remove_element", "target": {"selector": "body"}})


def test_swap_palette_in_styles_and_style_blocks_not_in_tags() -> None:
    result = run({"op": "swap_palette", "map": {"#ffffff": "#111827", "#111827": "#f9fafb"}})
    assert "background: #111827; color: #f9fafb;" in result.html
    # The tag's default colour is the template's: left as it is.
    assert '{{ titleColor | default: "#111827" }}' in result.html
    assert len(result.html) == len(OG)
    named = TemplateView('<p style="color: White; font-family: Red Hat; '
                         'background: rgba(255, 0, 0, 0.5)">x</p>', 10, 10)
    swapped = run({"op": "swap_palette", "map": {"white": "#000", "red": "#00f"}},
                  template=named)
    assert swapped.html == ('<p style="color: #000000; font-family: Red Hat; '
                            'background: #0000ff80">x</p>')


def test_duplicate_builds_a_new_template_and_leaves_this_one() -> None:
    result = run({"op": "duplicate_template", "name": "Story", "operations": [
        {"op": "resize_canvas", "width": 1080, "height": 1920}]})
    assert result.html == OG and (result.width, result.height) == (1200, 630)
    (created,) = result.created
    assert (created.name, created.width, created.height) == ("Story", 1080, 1920)


def test_a_failing_operation_applies_nothing_and_names_the_step() -> None:
    ops = [operation_from_json(o) for o in (
        {"op": "swap_palette", "map": {"#fff": "#000"}},
        {"op": "set_text", "target": {"selector": "h3"}, "text": "x"})]
    with pytest.raises(ApplyError) as caught:
        apply(CARD, ops, labels=["s1", "s2"], field="steps")
    assert caught.value.field == "steps[1]"
    assert caught.value.message == "s2: the target 'h3' matches no element"
    with pytest.raises(ApplyError, match="index 5 is past them"):
        run({"op": "set_text", "target": {"selector": "p", "index": 5}, "text": "x"})


def test_size_limits() -> None:
    limits = CopilotLimits(max_html_bytes=len(OG.encode()) + 10)
    with pytest.raises(ApplyError, match="size limit"):
        apply(CARD, [operation_from_json({"op": "add_element", "kind": "badge",
                                          "props": {"text": "x" * 100}})], limits=limits)
    with pytest.raises(ApplyError, match="larger than the copilot edits"):
        apply(TemplateView("x" * 100, 1, 1), [], limits=CopilotLimits(max_html_bytes=10))


def test_hostile_markup_is_refused_or_left_alone() -> None:
    # A '<' inside a tag is not markup; an unclosed element is not guessed at.
    tricky = TemplateView("<div>{{ if a<b }}<p>one{{ end }}<section>two</div>", 10, 10)
    result = run({"op": "set_style", "target": {"selector": "div"},
                  "styles": {"color": "red"}}, template=tricky)
    assert result.html == ('<div style="color: red">{{ if a<b }}<p>one{{ end }}'
                           "<section>two</div>")
    with pytest.raises(ApplyError, match="no matching </section>"):
        run({"op": "set_text", "target": {"selector": "section"}, "text": "x"},
            template=tricky)
    # A selector-looking class or id in the document is matched exactly, never parsed.
    weird = TemplateView('<p class="a,b">x</p><p id="q">y</p>', 10, 10)
    with pytest.raises(ApplyError, match="matches no element"):
        run({"op": "set_text", "target": {"selector": ".a"}, "text": "z"}, template=weird)
    # A tag with a string of its own (which could hold the attribute's quote,
    # or an off-site url()) is refused before it reaches any attribute.
    quoted = TemplateView("<p style='color: red'>x</p>", 10, 10)
    with pytest.raises(InvalidArgument, match="name a variable"):
        run({"op": "set_style", "target": {"selector": "p"},
             "styles": {"color": "{{ c | default: 'red' }}"}}, template=quoted)


def test_deeply_nested_html_is_handled() -> None:
    deep = TemplateView("<div>" * 1000 + "{{ x }}" + "</div>" * 1000, 10, 10)
    result = run({"op": "set_style", "target": {"selector": "div", "index": 999},
                  "styles": {"color": "red"}}, template=deep)
    assert '<div style="color: red">{{ x }}</div>' in result.html


POOL: list[dict[str, Any]] = [
    {"op": "set_text", "target": {"selector": sel, "index": i}, "text": text}
    for sel in ("h1", "p", "li", "ul", ".card", "img", "title")
    for i in (0, 1) for text in ("{{ if a }}A{{ else }}B{{ end }}", "x < y")
] + [
    {"op": "set_style", "target": {"selector": sel, "index": i},
     "styles": {"color": "{{ c }}", "left": None, "font-family": '"A B"'}}
    for sel in ("body", "h1", "p.lead", "li.tag", "div", "ul") for i in (0, 1)
] + [
    {"op": "remove_element", "target": {"selector": sel, "index": i}}
    for sel in ("h1", "p", "li", "ul", ".card", "img") for i in (0, 1)
] + [
    {"op": "add_element", "kind": kind, "parent": {"selector": sel}, "props": props}
    for sel in ("body", ".card", "ul", "li", "h1", "img")
    for kind, props in (("qr", {"value": "{{ url }}"}), ("badge", {"text": "{{ n }}!"}))
] + [
    {"op": "resize_canvas", "width": 1080, "height": 1920},
    {"op": "resize_canvas", "width": 300, "height": 300},
    {"op": "swap_palette", "map": {"#ffffff": "#000000", "#e11d48": "#2563eb"}},
]


def test_random_sequences_never_corrupt_the_template() -> None:
    rng = random.Random(13)
    engine = Engine()
    outcomes = {"applied": 0, "refused": 0}
    for _ in range(300):
        ops = [operation_from_json(rng.choice(POOL)) for _ in range(rng.randint(1, 4))]
        try:
            result = apply(CARD, ops)
        except ApplyError:
            outcomes["refused"] += 1
            continue
        outcomes["applied"] += 1
        assert engine.check(result.html) == [], ops
        # Whatever was not edited is still there: the head and the loop's tags
        # survive unless an operation removed the list.
        assert result.html.startswith("<html>\n<head>\n<style>")
    assert outcomes["applied"] > 50 and outcomes["refused"] > 50, outcomes


def test_positions_survive_crlf_comments_doctype_and_scripts() -> None:
    html = ("<!DOCTYPE html>\r\n<!-- <p>not this</p> -->\r\n<html><body>\r\n"
            "<script>if (a < b) { document.write('</p>') }</script>\r\n"
            "<p title='a > b' data-x=\"{{ x }}\">one &amp; two</p>\r\n</body></html>")
    result = run({"op": "set_text", "target": {"selector": "p"}, "text": "three"},
                 template=TemplateView(html, 10, 10))
    assert result.html == html.replace("one &amp; two", "three")


def test_markup_the_parser_cannot_read_is_refused() -> None:
    broken = TemplateView("<p>a</p><![foo[ x", 10, 10)
    with pytest.raises(ApplyError, match="cannot be read safely"):
        run({"op": "set_text", "target": {"selector": "p"}, "text": "b"}, template=broken)
