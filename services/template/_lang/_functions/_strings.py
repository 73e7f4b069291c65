"""Text functions. Lengths count Unicode code points, as Python strings do."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from services.template._lang._errors import ArgumentError
from services.template._lang._functions._args import text, whole
from services.template._lang._functions._registry import Function
from services.template._lang._runtime import Runtime

_WORD = re.compile(r"\S+")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")

# Case mapping can lengthen text ("ß" becomes "SS"): at most three times.
_CASE_GROWTH = 3


def _cased(rt: Runtime, value: str, result: str) -> str:
    if len(value) * _CASE_GROWTH > rt.limits.max_string_length:
        rt.check_string(len(result))
    return result


def uppercase(rt: Runtime, value: Any) -> str:
    source = text(rt, value)
    return _cased(rt, source, source.upper())


def lowercase(rt: Runtime, value: Any) -> str:
    source = text(rt, value)
    return _cased(rt, source, source.lower())


def capitalize(rt: Runtime, value: Any) -> str:
    source = text(rt, value)
    return _cased(rt, source, source[:1].upper() + source[1:])


def title_case(rt: Runtime, value: Any) -> str:
    source = text(rt, value)
    # A Python call per word: pay for the most words the text can hold.
    rt.charge((len(source) + 1) >> 1)
    result = _WORD.sub(lambda m: m.group()[:1].upper() + m.group()[1:].lower(), source)
    return _cased(rt, source, result)


def trim(rt: Runtime, value: Any) -> str:
    return text(rt, value).strip()


def truncate(rt: Runtime, value: Any, length: Any, suffix: Any = "…") -> str:
    source, end = text(rt, value), text(rt, suffix)
    limit = whole(length, "a length")
    if limit < 0:
        raise ArgumentError(f"the length must not be negative, got {limit}")
    if len(source) <= limit:
        return source
    keep = limit - len(end)
    if keep <= 0:
        return source[:limit]
    return source[:keep].rstrip() + end


def replace(rt: Runtime, value: Any, search: Any, replacement: Any) -> str:
    source, old, new = text(rt, value), text(rt, search), text(rt, replacement)
    count = source.count(old)
    rt.check_string(len(source) + count * (len(new) - len(old)))
    return source.replace(old, new)


def split(rt: Runtime, value: Any, separator: Any) -> list[str]:
    source, sep = text(rt, value), text(rt, separator)
    if source == "":
        return []
    rt.check_array(len(source) if sep == "" else source.count(sep) + 1)
    return list(source) if sep == "" else source.split(sep)


def _padding(rt: Runtime, value: Any, length: Any, fill: Any) -> tuple[str, str]:
    source, pad = text(rt, value), text(rt, fill)
    target = whole(length, "a length")
    if target <= len(source) or pad == "":
        return source, ""
    rt.check_string(target)
    missing = target - len(source)
    return source, (pad * (missing // len(pad) + 1))[:missing]


def pad_start(rt: Runtime, value: Any, length: Any, fill: Any = " ") -> str:
    source, padding = _padding(rt, value, length, fill)
    return padding + source


def pad_end(rt: Runtime, value: Any, length: Any, fill: Any = " ") -> str:
    source, padding = _padding(rt, value, length, fill)
    return source + padding


def slugify(rt: Runtime, value: Any) -> str:
    source = text(rt, value)
    # Normalisation runs at tens of MB/s, a tenth of other text operations.
    rt.charge(len(source) >> 3)
    decomposed = unicodedata.normalize("NFKD", source)
    rt.check_string(len(decomposed))
    ascii_only = decomposed.encode("ascii", "ignore").decode("ascii").lower()
    return _NOT_SLUG.sub("-", ascii_only).strip("-")


FUNCTIONS = (
    Function(
        "uppercase", uppercase, 1, 1, "strings", "uppercase(text)",
        "The text in capital letters.",
        "uppercase(name)", "ADA LOVELACE", {"name": "Ada Lovelace"},
    ),
    Function(
        "lowercase", lowercase, 1, 1, "strings", "lowercase(text)",
        "The text in small letters.",
        "lowercase('Hello World')", "hello world",
    ),
    Function(
        "capitalize", capitalize, 1, 1, "strings", "capitalize(text)",
        "The first character in capitals; the rest is left as it is.",
        "capitalize('hello world')", "Hello world",
    ),
    Function(
        "titleCase", title_case, 1, 1, "strings", "titleCase(text)",
        "Each word (a run of non-space characters) with its first letter in capitals and "
        "the rest in small letters.",
        "titleCase('the QUICK brown fox')", "The Quick Brown Fox",
    ),
    Function(
        "trim", trim, 1, 1, "strings", "trim(text)",
        "The text without whitespace at either end.",
        "trim('  hello  ')", "hello",
    ),
    Function(
        "truncate", truncate, 2, 3, "strings", "truncate(text, length, suffix = '…')",
        "Text longer than length characters is cut so that, with the suffix (one '…' "
        "character by default) added, it is at most length characters; whitespace before "
        "the suffix is dropped. Shorter text is returned unchanged.",
        "truncate(title, 12)", "Introducing…", {"title": "Introducing Litho"},
    ),
    Function(
        "replace", replace, 3, 3, "strings", "replace(text, search, replacement)",
        "Every occurrence of search replaced by replacement. Both are plain text, not "
        "patterns.",
        "replace('a-b-c', '-', ' / ')", "a / b / c",
    ),
    Function(
        "split", split, 2, 2, "strings", "split(text, separator)",
        "The pieces of the text between separators, as an array. An empty separator "
        "splits into characters; empty text gives an empty array.",
        "split('red,green,blue', ',')", ["red", "green", "blue"],
    ),
    Function(
        "padStart", pad_start, 2, 3, "strings", "padStart(text, length, fill = ' ')",
        "The text, lengthened to length characters by repeating fill before it.",
        "padStart(7, 3, '0')", "007",
    ),
    Function(
        "padEnd", pad_end, 2, 3, "strings", "padEnd(text, length, fill = ' ')",
        "The text, lengthened to length characters by repeating fill after it.",
        "padEnd('ab', 5, '.')", "ab...",
    ),
    Function(
        "slugify", slugify, 1, 1, "strings", "slugify(text)",
        "A URL-friendly form: accents removed, lowercase ASCII letters and digits joined "
        "by single hyphens. Characters without an ASCII form are dropped.",
        "slugify('Héllo, Wörld!')", "hello-world",
    ),
)
