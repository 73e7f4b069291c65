"""The copilot's vocabulary: strict reading from JSON, paths in errors, round trips."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from services.template._copilot import (
    CopilotLimits,
    SetStyle,
    Step,
    VocabularyError,
    accept,
    operation_from_json,
    step_from_json,
    vocabulary_schema,
)

EXAMPLES: list[dict[str, Any]] = [
    {"op": "set_text", "target": {"selector": "h1", "index": 0}, "text": "Hi {{ name }}"},
    {"op": "set_style", "target": {"selector": "p.lead", "index": 1},
     "styles": {"color": "#e11d48", "letter-spacing": None}},
    {"op": "resize_canvas", "width": 1080, "height": 1920, "reflow": "scale"},
    {"op": "add_element", "kind": "qr", "props": {"value": "{{ url }}", "size": 200}},
    {"op": "add_element", "kind": "badge", "parent": {"selector": "#card", "index": 0},
     "position": "start", "props": {"text": "NEW", "style": {"top": "10px"}}},
    {"op": "add_element", "kind": "image", "props": {"src": "https://example.com/a.png",
                                                     "alt": "logo"}},
    {"op": "add_element", "kind": "shape", "props": {"shape": "circle"}},
    {"op": "add_element", "kind": "text", "props": {"text": "{{ if a }}A{{ end }}",
                                                    "tag": "h2"}},
    {"op": "remove_element", "target": {"selector": '[data-litho-id="qr-1"]', "index": 0}},
    {"op": "swap_palette", "map": {"#ffffff": "#111827"}},
    {"op": "duplicate_template", "name": "Dark copy", "operations": [
        {"op": "swap_palette", "map": {"#ffffff": "#111827"}}]},
]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: str(e["op"]))
def test_round_trip_and_schema(example: dict[str, Any]) -> None:
    operation = operation_from_json(example)
    assert operation_from_json(operation.to_json()) == operation
    jsonschema.validate({"steps": [{"description": "x", "operation": operation.to_json()}]},
                        vocabulary_schema())


def refused(value: Any, path: str = "steps[2].operation",
            limits: CopilotLimits | None = None) -> VocabularyError:
    with pytest.raises(VocabularyError) as caught:
        operation_from_json(value, path, limits)
    return caught.value


@pytest.mark.parametrize(("value", "field", "words"), [
    ({"op": "explode"}, "steps[2].operation.op", "set_text, set_style"),
    ({"target": {"selector": "h1"}}, "steps[2].operation.op", "is required"),
    ({"op": "set_text", "target": {"selector": "h1"}}, "steps[2].operation.text",
     "is required"),
    ({"op": "set_text", "target": {"selector": "h1"}, "text": "a", "html": "<b>"},
     "steps[2].operation.html", "unknown field"),
    ({"op": "set_text", "target": {"selector": "h1"}, "text": 5},
     "steps[2].operation.text", "must be a string, not a number"),
    ({"op": "resize_canvas", "width": "1080", "height": 10},
     "steps[2].operation.width", "must be an integer"),
    ({"op": "resize_canvas", "width": 10**9, "height": 10},
     "steps[2].operation.width", "from 1 to 5000"),
    ({"op": "resize_canvas", "width": True, "height": 10},
     "steps[2].operation.width", "not a boolean"),
    ({"op": "set_style", "target": {"selector": "h1"}, "styles": {"color": "red; x: y"}},
     "steps[2].operation.styles.color", "; { }"),
    ({"op": "set_style", "target": {"selector": "h1"},
      "styles": {"background": "url(http://evil.example/x.png)"}},
     "steps[2].operation.styles.background", "url()"),
    ({"op": "set_style", "target": {"selector": "h1"},
      "styles": {"background": "URL( //evil.example/x.png )"}},
     "steps[2].operation.styles.background", "url()"),
    ({"op": "set_style", "target": {"selector": "h1"},
      "styles": {"width": "expression(alert(1))"}},
     "steps[2].operation.styles.width", "script"),
    ({"op": "set_style", "target": {"selector": "h1"}, "styles": {"color": "red</style>"}},
     "steps[2].operation.styles.color", "< >"),
    ({"op": "set_style", "target": {"selector": "h1"}, "styles": {"Color!": "red"}},
     "steps[2].operation.styles['Color!']", "CSS property"),
    ({"op": "set_style", "target": {"selector": "h1"},
      "styles": {"color": "{{ if x }}red{{ end }}"}},
     "steps[2].operation.styles.color", "block tag"),
    ({"op": "set_style", "target": {"selector": "h1"}, "styles": {"color": "x" * 501}},
     "steps[2].operation.styles.color", "at most 500"),
    ({"op": "set_text", "target": {"selector": "h1 > p"}, "text": "a"},
     "steps[2].operation.target.selector", "not a supported selector"),
    ({"op": "set_text", "target": {"selector": "h1,body"}, "text": "a"},
     "steps[2].operation.target.selector", "not a supported selector"),
    ({"op": "set_text", "target": {"selector": '[data-litho-id="a"] , *'}, "text": "a"},
     "steps[2].operation.target.selector", "not a supported selector"),
    ({"op": "set_text", "target": {"selector": "h1", "index": -1}, "text": "a"},
     "steps[2].operation.target.index", "from 0 to 999"),
    ({"op": "set_text", "target": {"selector": "h1"}, "text": "{{ if a }}open"},
     "steps[2].operation.text", "not whole"),
    ({"op": "set_text", "target": {"selector": "h1"}, "text": "{{ 'unterminated }}"},
     "steps[2].operation.text", "does not parse"),
    ({"op": "set_text", "target": {"selector": "h1"}, "text": "a\ud800b"},
     "steps[2].operation.text", "lone surrogate"),
    ({"op": "swap_palette", "map": {"#ggg": "#000"}}, "steps[2].operation.map['#ggg']",
     "not a colour"),
    ({"op": "swap_palette", "map": {"#fff": "url(x)"}}, "steps[2].operation.map['#fff']",
     "must map to a colour"),
    ({"op": "swap_palette", "map": {"#fff": "#000", "#FFFFFF": "#111"}},
     "steps[2].operation.map['#FFFFFF']", "already in the map"),
    ({"op": "add_element", "kind": "script", "props": {}}, "steps[2].operation.kind",
     "text, image, shape, qr, badge"),
    ({"op": "add_element", "kind": "text", "props": {"text": "a", "html": "<b>"}},
     "steps[2].operation.props.html", "unknown field"),
    ({"op": "add_element", "kind": "image", "props": {"src": "javascript:alert(1)"}},
     "steps[2].operation.props.src", "http(s) URL"),
    ({"op": "add_element", "kind": "qr", "props": {"value": "{{ if a }}x{{ end }}"}},
     "steps[2].operation.props.value", "exactly one template tag"),
    ({"op": "duplicate_template", "name": "x", "operations": [
        {"op": "duplicate_template", "name": "y", "operations": []}]},
     "steps[2].operation.operations[0].op", "cannot hold another"),
    ({"op": "duplicate_template", "name": " x", "operations": []},
     "steps[2].operation.name", "space"),
])
def test_refusals_name_the_field(value: Any, field: str, words: str) -> None:
    error = refused(value)
    assert error.path == field
    assert words in error.problem
    assert error.errors[0].field == field
    assert error.status == "INVALID_ARGUMENT"


def test_too_many_operations_and_styles_are_refused() -> None:
    limits = CopilotLimits(max_steps=2, max_style_properties=2)
    ops = [{"op": "swap_palette", "map": {"#fff": "#000"}}] * 3
    assert "at most 2" in refused({"op": "duplicate_template", "name": "x",
                                   "operations": ops}, limits=limits).problem
    styles = {"color": "red", "top": "1px", "left": "2px"}
    assert "at most 2" in refused({"op": "set_style", "target": {"selector": "h1"},
                                   "styles": styles}, limits=limits).problem


def test_styles_allow_template_tags_and_safe_urls() -> None:
    operation = operation_from_json({
        "op": "set_style", "target": {"selector": "body"},
        "styles": {"background": "url({{ image }}) center / cover",
                   "color": "{{ brand.colour }}",
                   "border-image": "url(data:image/png;base64,AAAA)"}})
    assert isinstance(operation, SetStyle)
    assert dict(operation.styles)["color"] == "{{ brand.colour }}"


@pytest.mark.parametrize(("operation", "field"), [
    # A tag's own text escapes every check the value gets: strings, calls
    # and filters carry markup, quotes and off-site URLs past them.
    ({"op": "set_style", "target": {"selector": "body"},
      "styles": {"background": "url({{ 'https://evil.example/t.png' }})"}},
     "operation.styles.background"),
    ({"op": "set_style", "target": {"selector": "h1"},
      "styles": {"color": "{{ raw 'red\\u0022 onmouseover=\\u0022alert(1)' }}"}},
     "operation.styles.color"),
    ({"op": "set_style", "target": {"selector": "h1"}, "styles": {"color": "{{ c | upper }}"}},
     "operation.styles.color"),
    ({"op": "set_text", "target": {"selector": "h1"},
      "text": '{{ raw "<script>x()</script>" }}'}, "operation.text"),
    ({"op": "set_text", "target": {"selector": "h1"}, "text": "Hi {{ name | raw }}"},
     "operation.text"),
    ({"op": "add_element", "kind": "badge", "props": {"text": '{{ "<img onerror=x>" | raw }}'}},
     "operation.props.text"),
    ({"op": "add_element", "kind": "image", "props": {"src": "{{ title | raw }}"}},
     "operation.props.src"),
    ({"op": "add_element", "kind": "image",
      "props": {"src": "{{ image }}", "alt": "{{ raw alt }}"}}, "operation.props.alt"),
])
def test_template_tags_cannot_smuggle_markup_or_urls(operation: dict[str, Any],
                                                     field: str) -> None:
    with pytest.raises(VocabularyError) as exc:
        operation_from_json(operation)
    assert exc.value.errors[0].field == field


def test_colours_are_normalised() -> None:
    operation = operation_from_json({"op": "swap_palette",
                                     "map": {"#FFF": "Black", "#e11d48ff": "#123"}})
    assert operation.to_json()["map"] == {"#ffffff": "#000000", "#e11d48": "#112233"}


def test_steps_round_trip_and_accept() -> None:
    steps = [Step("s1", "explain"), Step("s2", "do", operation_from_json(EXAMPLES[2])),
             Step("s3", "refused", None, "bad")]
    assert [step_from_json(s.to_json()) for s in steps] == steps
    assert accept(steps, ["s2"]) == [steps[1]]
    for ids, words in ((["s9"], "no step 's9'"), (["s2", "s2"], "twice"),
                       (["s1"], "no operation"), (["s3"], "no operation"), ([], "non-empty"),
                       ("s2", "non-empty")):
        with pytest.raises(VocabularyError) as caught:
            accept(steps, ids)
        assert words in caught.value.problem
