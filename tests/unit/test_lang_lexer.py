from __future__ import annotations

from typing import Any

import pytest

from services.template._lang._lexer import LexError, Token, lex


def kinds(source: str) -> list[tuple[str, Any]]:
    tokens, _ = lex(source, 0, tag_start=None)
    return [(t.kind, t.value) for t in tokens]


def test_tokens_of_an_expression() -> None:
    assert kinds("user.name | truncate: 40, '…'") == [
        ("name", "user"), ("op", "."), ("name", "name"), ("op", "|"), ("name", "truncate"),
        ("op", ":"), ("num", 40), ("op", ","), ("str", "…"), ("end", None),
    ]


@pytest.mark.parametrize("op", ["==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*",
                                "/", "%", "!", "?", ":", ",", ".", "(", ")", "[", "]", "|"])
def test_every_operator(op: str) -> None:
    assert kinds(op)[0] == ("op", op)


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("42", 42), ("007", 7), ("2.5", 2.5), ("1e3", 1000), ("1.5E-3", 0.0015),
    ("9007199254740993", 9007199254740993), ("12345678901234567890", 1.2345678901234567e19),
])
def test_numbers(text: str, value: float) -> None:
    [(kind, got), _] = kinds(text)
    assert kind == "num" and got == value and type(got) is type(value)


def test_number_too_large_is_an_error() -> None:
    with pytest.raises(LexError, match="too large"):
        kinds("1e400")


@pytest.mark.parametrize(("source", "value"), [
    ("'single'", "single"), ('"double"', "double"), (r"'it\'s'", "it's"),
    (r'"say \"hi\""', 'say "hi"'), (r"'a\\b'", "a\\b"), (r"'\n\t\r\b\f\v\0'", "\n\t\r\b\f\v\0"),
    (r"'\x41'", "A"), (r"'\u00e9'", "é"), (r"'\u{1F600}'", "😀"), (r"'\ud83d\ude00'", "😀"),
    (r"'\/\`'", "/`"), ("'}}'", "}}"), ("'multi\nline'", "multi\nline"), ("''", ""),
])
def test_strings(source: str, value: str) -> None:
    assert kinds(source)[0] == ("str", value)


@pytest.mark.parametrize(("source", "message", "offset"), [
    ("'open", "unterminated string", 0),
    ("x + \"open", "unterminated string", 4),
    (r"'\q'", "unknown escape", 1),
    (r"'\x4'", "2 hex digits", 1),
    (r"'\u12'", "4 hex digits", 1),
    (r"'\u{110000}'", "beyond U+10FFFF", 1),
    (r"'\ud800'", "lone surrogate", 1),
    ("a = b", "compare with '=='", 2),
    ("a & b", "'&&'", 2),
    ("{a}", "object literals", 0),
    ("a }", "a tag ends", 2),
    ("a # b", "unexpected character '#'", 2),
])
def test_errors_say_what_and_where(source: str, message: str, offset: int) -> None:
    with pytest.raises(LexError) as caught:
        kinds(source)
    assert message in caught.value.problem.message
    assert caught.value.problem.offset == offset


def test_a_tag_ends_at_its_closing_braces() -> None:
    source = "ab{{ x }}cd"
    tokens, end = lex(source, 4, tag_start=2)
    assert tokens == [Token("name", "x", 5), Token("end", "}}", 7)]
    assert source[end:] == "cd"


def test_closing_braces_inside_a_string_do_not_end_the_tag() -> None:
    tokens, end = lex("{{ '}}' }}", 2, tag_start=0)
    assert [t.kind for t in tokens] == ["str", "end"] and end == 10


def test_unterminated_tag_points_at_its_opening() -> None:
    with pytest.raises(LexError) as caught:
        lex("text {{ name", 7, tag_start=5)
    assert caught.value.problem == (5, "unterminated tag: '{{' has no closing '}}'")
