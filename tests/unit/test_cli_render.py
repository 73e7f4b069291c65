"""``litho render``'s variables (``--var`` values are JSON when they parse)
and its format (from ``--format``, else the output's extension)."""

from __future__ import annotations

from pathlib import Path

import pytest

from litho.cli._errors import UsageError
from litho.cli._render import output_format, variables


def test_var_values_are_json_when_they_parse_else_strings() -> None:
    assert variables(["n=3", "ok=true", "tags=[\"a\"]", "title=Hello world", "empty=",
                      "eq=a=b", "quoted=\"7\"", "x=null"], None, 1024) == {
        "n": 3, "ok": True, "tags": ["a"], "title": "Hello world", "empty": "",
        "eq": "a=b", "quoted": "7", "x": None}


def test_var_flags_override_the_vars_file(tmp_path: Path) -> None:
    f = tmp_path / "vars.json"
    f.write_text('{"title": "from file", "price": 9.5}')
    assert variables(["title=flag"], f, 1024) == {"title": "flag", "price": 9.5}


@pytest.mark.parametrize(("content", "message"), [
    ("[1, 2]", "must hold a JSON object"),
    ("{nope", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "over"),
])
def test_a_bad_vars_file_is_a_usage_error(tmp_path: Path, content: str,
                                          message: str) -> None:
    f = tmp_path / "vars.json"
    f.write_text(content)
    with pytest.raises(UsageError, match=message):
        variables([], f, 64 * 1024)


@pytest.mark.parametrize("pair", ["novalue", "=3"])
def test_a_var_without_a_name_is_a_usage_error(pair: str) -> None:
    with pytest.raises(UsageError, match="name=value"):
        variables([pair], None, 1024)


def test_the_format_follows_the_output_name_unless_given() -> None:
    assert output_format(None, Path("card.JPG")) == "jpeg"
    assert output_format(None, Path("doc.pdf")) == "pdf"
    assert output_format(None, Path("out")) == "png"
    assert output_format("webp", Path("card.png")) == "webp"
