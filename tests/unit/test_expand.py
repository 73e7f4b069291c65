from __future__ import annotations

import pytest

from litho.errors import InvalidArgument
from services.template._expand import LookupExpander, lookup, parse_path, to_text


@pytest.mark.parametrize(("source", "path"), [
    ("name", ("name",)),
    (" user.name ", ("user", "name")),
    ("items[0].title", ("items", 0, "title")),
    ("row['key with space']", ("row", "key with space")),
    ('row["k"][-1]', ("row", "k", -1)),
    ("$x._y1", ("$x", "_y1")),
])
def test_parse_path(source: str, path: tuple[object, ...]) -> None:
    assert parse_path(source) == path


@pytest.mark.parametrize("source", ["", "1 + 2", "a.", "a b", ".a", "a[x]", "a['x]", "[0]"])
def test_parse_path_rejects_non_lookups(source: str) -> None:
    assert parse_path(source) is None


def test_lookup_walks_json_only() -> None:
    data = {"user": {"name": "Ada", "tags": ["a", "b"]}, "s": "text"}
    assert lookup(data, ("user", "tags", -1)) == "b"
    assert lookup(data, ("user", "tags", 5)) is None
    assert lookup(data, ("user", "missing", "x")) is None
    assert lookup(data, ("s", "__class__")) is None
    assert lookup(data, ("s", 0)) is None


@pytest.mark.parametrize(("value", "text"), [
    (None, ""), (True, "true"), (False, "false"), (3, "3"), (2.0, "2"), (44.1, "44.1"),
    ("x", "x"), ([1, "a"], '[1,"a"]'), ({"k": "é"}, '{"k":"é"}'),
])
def test_to_text(value: object, text: str) -> None:
    assert to_text(value) == text


def test_expand_escapes_html_and_fills_missing_with_empty() -> None:
    out = LookupExpander().expand(
        "<b>{{ name }}</b>{{missing}}|{{ items[1].t }}",
        {"name": "<script>\"&'", "items": [{}, {"t": "two"}]},
        max_output=1000,
    )
    assert out == "<b>&lt;script&gt;&quot;&amp;&#x27;</b>|two"


def test_expand_output_limit() -> None:
    with pytest.raises(InvalidArgument, match="larger than 10 bytes"):
        LookupExpander().expand("{{ a }}", {"a": "x" * 11}, max_output=10)


def test_check_reports_line_and_column() -> None:
    problems = LookupExpander().check("ok {{ a }}\n  x {{ 1 + }}\n{{ b.c }}")
    assert len(problems) == 1
    assert problems[0].field == "html"
    assert problems[0].message.startswith("line 2, column 5:")
