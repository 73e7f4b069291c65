"""The embedded planner: every intent on a realistic card, deterministic, never damaging."""

from __future__ import annotations

import difflib
import re

import jsonschema
import pytest

from litho.errors import InvalidArgument
from services.template._copilot import (
    AddElement,
    CopilotLimits,
    DuplicateTemplate,
    ResizeCanvas,
    SetStyle,
    Step,
    SwapPalette,
    TemplateView,
    apply,
    plan,
    vocabulary_schema,
)
from services.template._copilot._css import luminance, normalize_color
from services.template._copilot._html import Document
from services.template._lang import Engine
from tests.unit.test_copilot_apply import CARD, OG, TAGS

PLAIN = TemplateView('<body><h1 style="font-size: 64px">{{ title }}</h1></body>', 1200, 630,
                     "plain")


def applied(steps: list[Step], template: TemplateView = CARD) -> str:
    ops = [s.operation for s in steps if s.operation is not None]
    assert ops, [s.description for s in steps]
    html = apply(template, ops).html
    assert Engine().check(html) == []
    # Every template tag, block and loop is still there, in order.
    assert [t for t in TAGS.findall(template.html)] == \
        [t for t in TAGS.findall(html) if "qr(" not in t]
    return html


def body_background(html: str) -> str:
    """The body's background colour: inline if set, else from the <style> block."""
    inline = re.search(r'<body[^>]*style="[^"]*background(?:-color)?:\s*(#[0-9a-f]{6})', html)
    if inline:
        return inline.group(1)
    rule = re.search(r"body\s*\{[^}]*background:\s*(#[0-9a-f]{6})", html)
    assert rule is not None, html
    return rule.group(1)


@pytest.mark.parametrize("prompt", ["make a dark mode version", "dark variant",
                                    "Dark-mode please", "switch to night mode"])
def test_dark_mode_makes_the_background_dark(prompt: str) -> None:
    steps = plan(prompt, CARD)
    assert isinstance(steps[0].operation, SwapPalette)
    html = applied(steps)
    assert luminance(body_background(html)) < 0.05
    # Text colours turned light; the accent stays.
    assert "#e11d48" in html and "color: #111827" not in html


def test_dark_mode_without_colours_sets_a_background() -> None:
    template = TemplateView("<body><h1>{{ title }}</h1></body>", 1200, 630)
    steps = plan("dark mode", template)
    (step,) = steps
    assert isinstance(step.operation, SetStyle) and step.operation.target.selector == "body"
    html = applied(steps, template)
    assert luminance(normalize_color(body_background(html)) or "") < 0.05


def test_dark_mode_on_a_dark_template_changes_nothing() -> None:
    template = TemplateView('<body style="background:#0b1020">x</body>', 10, 10)
    (step,) = plan("dark mode", template)
    assert step.operation is None and "already dark" in step.description


@pytest.mark.parametrize(("prompt", "size"), [
    ("resize for instagram story", (1080, 1920)), ("Make it 1080x1920", (1080, 1920)),
    ("resize for Instagram", (1080, 1080)), ("a version for LinkedIn", (1200, 627)),
    ("resize for twitter", (1600, 900)), ("format for X post", (1600, 900)),
    ("make it 800 by 400", (800, 400)),
])
def test_resize_for_platforms(prompt: str, size: tuple[int, int]) -> None:
    (step,) = plan(prompt, CARD)
    assert isinstance(step.operation, ResizeCanvas)
    assert (step.operation.width, step.operation.height) == size
    assert step.operation.reflow == "scale"
    applied([step])


def test_resize_bounds_and_same_size() -> None:
    (step,) = plan("make it 90000x90", CARD)
    assert step.operation is None and "from 1 to 5000" in step.description
    (step,) = plan("resize for open graph", CARD)
    assert step.operation is None and "already 1200×630" in step.description


def test_brand_colour_swaps_the_most_used_non_grey() -> None:
    (step,) = plan("brand colour #2563EB", CARD)
    assert step.operation == SwapPalette((("#e11d48", "#2563eb"),))
    html = applied([step])
    assert "#e11d48" not in html and html.count("#2563eb") == 2
    (step,) = plan("change the brand color", CARD)
    assert step.operation is None and "Name the new brand colour" in step.description
    (step,) = plan("primary colour teal", PLAIN)
    assert isinstance(step.operation, SetStyle)  # no brand colour: the title is coloured


@pytest.mark.parametrize(("prompt", "size"), [
    ("bigger title", "90px"), ("make the title smaller", "57.6px"),
    ("make the headline 50% bigger", "108px"), ("title much larger", "108px"),
])
def test_title_size(prompt: str, size: str) -> None:
    (step,) = plan(prompt, CARD)
    assert isinstance(step.operation, SetStyle)
    assert step.operation.target.selector == "h1"
    assert step.operation.styles == (("font-size", size),)
    assert "data-fit-max" in step.description
    html = applied([step])
    assert f"font: 700 72px/1.1 'Inter'; color: {{{{ titleColor | default: \"#111827\" }}}}; " \
           f"font-size: {size}" in html


def test_title_falls_back_to_the_largest_font() -> None:
    template = TemplateView('<div><p style="font-size:20px">a</p>'
                            '<p style="font: bold 50px serif">b</p></div>', 10, 10)
    (step,) = plan("make the title bigger", template)
    assert isinstance(step.operation, SetStyle)
    assert step.operation.target.selector == "p" and step.operation.target.index == 1


def test_qr_code_for_a_variable_and_a_url() -> None:
    (step,) = plan("add a QR code for {{ url }}", CARD)
    assert isinstance(step.operation, AddElement) and step.operation.kind == "qr"
    html = applied([step])
    assert re.search(r'<img data-litho-id="qr-1" src="\{\{ qr\(\(url\), 158\) \}\}"', html)
    (step,) = plan("add a qr code linking to https://litho.dev/t/1.", CARD)
    assert isinstance(step.operation, AddElement)
    assert step.operation.props.value == "https://litho.dev/t/1"


def test_badge_takes_its_text_and_the_brand_colour() -> None:
    (step,) = plan('add a "Sale" badge', CARD)
    assert isinstance(step.operation, AddElement) and step.operation.props.text == "Sale"
    assert ("background", "#e11d48") in step.operation.props.style
    (step,) = plan("add a badge saying 50% off!", CARD)
    assert isinstance(step.operation, AddElement)
    assert step.operation.props.text == "50% off"
    html = applied([step])
    assert ">50% off</span>" in html


def test_background_variants_are_new_templates() -> None:
    steps = plan("3 background variants", CARD)
    assert [s.id for s in steps] == ["s1", "s2", "s3"]
    backgrounds = set()
    for step in steps:
        assert isinstance(step.operation, DuplicateTemplate)
        (edit,) = step.operation.operations
        assert isinstance(edit, SetStyle) and edit.target.selector == "body"
        backgrounds.add(edit.styles[0][1])
    assert len(backgrounds) == 3
    result = apply(CARD, [s.operation for s in steps if s.operation is not None])
    assert result.html == OG and len(result.created) == 3
    assert len(plan("generate five background colours", CARD)) == 5
    assert len(plan("two variations of the background", CARD)) == 2
    (step,) = plan("40 background variants", CARD)
    assert step.operation is None and "from 1 to 10" in step.description


def test_several_intents_in_prompt_order_and_as_a_copy() -> None:
    steps = plan("resize for instagram story, then dark mode and add a QR code", CARD)
    assert [type(s.operation) for s in steps] == [ResizeCanvas, SwapPalette, AddElement]
    assert [s.id for s in steps] == ["s1", "s2", "s3"]
    applied(steps)
    (copy,) = plan("dark mode as a new template", CARD)
    assert isinstance(copy.operation, DuplicateTemplate)
    assert copy.operation.name == "og (copy)"


def test_deterministic_and_valid_against_the_schema() -> None:
    prompts = ["dark mode", "resize for linkedin", "brand colour #123456", "bigger title",
               "add a qr code", "add a badge", "4 background variants", "hello"]
    for prompt in prompts:
        first = plan(prompt, CARD)
        assert first == plan(prompt, CARD)
        jsonschema.validate({"steps": [{"description": s.description,
                                        "operation": s.operation and s.operation.to_json()}
                                       for s in first]}, vocabulary_schema())


@pytest.mark.parametrize("prompt", ["hello", "delete everything", "<script>alert(1)</script>",
                                    "h1 { color: red }; body", "{{ raw x }}"])
def test_unrecognised_prompts_explain_and_change_nothing(prompt: str) -> None:
    (step,) = plan(prompt, CARD)
    assert step.operation is None and step.error is None
    assert "dark mode" in step.description


def test_hostile_prompts_and_history() -> None:
    with pytest.raises(InvalidArgument, match="at most 4096 bytes") as caught:
        plan("a" * 1024 * 1024, CARD)
    assert caught.value.errors[0].field == "prompt"
    with pytest.raises(InvalidArgument, match="bytes"):
        plan("é" * 3000, CARD)  # 6000 bytes in 3000 characters
    with pytest.raises(InvalidArgument, match="lone surrogate"):
        plan("dark \ud800 mode", CARD)
    with pytest.raises(InvalidArgument, match="empty"):
        plan("   ", CARD)
    with pytest.raises(InvalidArgument, match="must be a string"):
        plan(["dark"], CARD)
    with pytest.raises(InvalidArgument, match="entries"):
        plan("dark", CARD, history=[{"role": "user", "content": "x"}] * 21)
    with pytest.raises(InvalidArgument, match=r"history\[0\]\.role"):
        plan("dark", CARD, history=[{"role": "system", "content": "x"}])
    with pytest.raises(InvalidArgument, match="LITHO_COPILOT_MAX_HISTORY_BYTES"):
        plan("dark", CARD, history=[{"role": "user", "content": "x" * 20000}])
    with pytest.raises(InvalidArgument, match="at most 2"):
        plan("5 background variants", CARD, limits=CopilotLimits(max_steps=2))
    assert plan("dark", CARD, history=[{"role": "assistant", "content": "ok"}])


def test_the_title_and_background_rules_on_a_fragment() -> None:
    fragment = TemplateView('<div class="root" style="background: #fafafa">'
                            '<h2>{{ a }}</h2><h1>{{ b }}</h1></div>', 600, 300)
    doc = Document(fragment.html)
    assert doc.root() is not None and doc.root().tag == "div"  # type: ignore[union-attr]
    (size,) = plan("bigger title", fragment)
    assert isinstance(size.operation, SetStyle) and size.operation.target.selector == "h1"
    (dark,) = plan("dark mode", fragment)
    html = applied([dark], fragment)
    colour = re.search(r"background: (#[0-9a-f]{6})", html)
    assert colour is not None and luminance(colour.group(1)) < 0.05


def test_a_step_that_would_not_apply_becomes_an_explanation() -> None:
    (step,) = plan("add a QR code for {{ if x }}", CARD)
    assert step.operation is None and step.description.startswith("Cannot do this")
    # An <h1> without its end tag: the planner says so instead of editing.
    broken = TemplateView("<body><h1>{{ title }}<p>x</p></body>", 100, 100)
    (step,) = plan("bigger title", broken)
    assert isinstance(step.operation, SetStyle)  # a style edit needs only the start tag
    (step,) = plan("dark mode", TemplateView("", 10, 10))
    assert step.operation is None


@pytest.mark.parametrize("prompt", [
    "make a dark mode version", "resize for instagram story", "brand colour #2563eb",
    "bigger title", "make the title smaller", "add a QR code for {{ url }}",
    "add a badge saying NEW",
])
def test_every_intent_edits_only_outside_the_template_tags(prompt: str) -> None:
    html = applied(plan(prompt, CARD))
    tags = [(m.start(), m.end()) for m in TAGS.finditer(OG)]
    matcher = difflib.SequenceMatcher(None, OG, html, autojunk=False)
    changed = [(i1, i2) for op, i1, i2, _, _ in matcher.get_opcodes() if op != "equal"]
    assert changed
    for i1, i2 in changed:
        for start, end in tags:
            assert i2 <= start or i1 >= end, (prompt, OG[i1:i2], OG[start:end])


def test_unreadable_html_gives_an_explanation() -> None:
    (step,) = plan("dark mode", TemplateView("<p>a</p><![foo[ x", 10, 10))
    assert step.operation is None and "could not be read safely" in step.description
