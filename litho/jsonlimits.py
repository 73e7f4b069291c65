"""Strict, bounded JSON for every value Litho accepts from outside.

A value that one layer accepts must be readable by every later layer: the
SQLite and MongoDB stores, protobuf string fields, the template language and
the gateway's JSON encoder. So whatever arrives as JSON is held to limits that
all of them can read back:

- nesting at most ``max_depth`` levels (Python's decoders recurse and give up
  near 1,000 levels; MongoDB refuses more than 100);
- every string and object key valid Unicode (a lone surrogate such as
  ``"\\ud800"`` cannot be encoded as UTF-8, so it breaks protobuf and storage);
- every number literal at most ``max_number_chars`` characters and finite
  (a 4,000-digit integer makes errors and arithmetic that repeat it huge);
- every integer within the signed 64-bit range and no object key holding
  NUL (U+0000): MongoDB stores integers as int64 and keys as C strings, so
  either would be accepted and then fail to be stored.

:func:`loads` parses and checks in one call and raises :class:`JsonLimitError`
naming the first problem by its JSON pointer. The check walks the value with
an explicit stack, so no limit here depends on the recursion limit.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

#: Defaults shared by the services' settings (``LITHO_*_JSON_MAX_DEPTH``, ...).
DEFAULT_MAX_DEPTH: Final = 32
DEFAULT_MAX_NUMBER_CHARS: Final = 32
#: The integers MongoDB (BSON int64) can store.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")
#: A ``\\uD800``-``\\uDFFF`` escape, paired or not (pairs are rare and the
#: precise walk then decides); ``\\\\u`` in text that is not an escape may
#: match too, which only costs the precise walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: Tokens of JSON text that matter for nesting: strings (skipped whole, so a
#: bracket inside one is not counted) and structural characters.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]', re.DOTALL)


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = DEFAULT_MAX_DEPTH
    max_number_chars: int = DEFAULT_MAX_NUMBER_CHARS
    #: Names of the settings, so a refusal can say which one to change.
    depth_setting: str = "max_depth"
    number_setting: str = "max_number_chars"


class JsonLimitError(ValueError):
    """``path`` is a JSON pointer (``""`` for the whole value, ``/a/0/b``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or '(top level)'}: {problem}")
        self.path = path
        self.problem = problem


class _BadNumber:
    """Stands in for a refused number literal so the walk can report its path."""

    __slots__ = ("literal", "problem")

    def __init__(self, literal: str, problem: str) -> None:
        self.literal = literal
        self.problem = problem


def pointer(parts: list[str | int]) -> str:
    """An RFC 6901 JSON pointer for ``parts``, with any lone surrogate in a key
    written as ``\\uXXXX`` so that the pointer itself is valid Unicode."""
    text = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    # NUL too: a pointer travels on in messages and logs, where it may end a C string.
    return safe_text(text).replace("\x00", "\\u0000")


def safe_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by its ``\\uXXXX`` escape."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def describe_text(text: str) -> str:
    """Why ``text`` is not valid Unicode, or ``""`` if it is."""
    match = _SURROGATE.search(text)
    if match is None:
        return ""
    return (f"is not valid Unicode: a lone surrogate U+{ord(match.group()):04X} "
            f"at character {match.start()}")


def loads(text: str | bytes, limits: JsonLimits) -> Any:
    """Parse strict JSON (no NaN/Infinity) and check it against ``limits``.

    Raises :class:`JsonLimitError` for a value over a limit and ``ValueError``
    for text that is not JSON.
    """

    if isinstance(text, bytes | bytearray):
        # As json.loads decodes bytes (which lets UTF-8-encoded surrogates
        # through); decoding first lets the checks below see the text.
        text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
    flagged: list[str] = []

    def number(literal: str, convert: type[int] | type[float]) -> Any:
        if len(literal) > limits.max_number_chars:
            flagged.append(literal)
            return _BadNumber(literal, _number_problem(literal, limits))
        value = convert(literal)
        if isinstance(value, float) and not math.isfinite(value):
            flagged.append(literal)
            return _BadNumber(literal, _number_problem(literal, limits))
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            flagged.append(literal)
            return _BadNumber(literal, _int64_problem(literal))
        return value

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(text, parse_constant=constant,
                           parse_int=lambda s: number(s, int),
                           parse_float=lambda s: number(s, float))
    except RecursionError:
        # Python's decoder gave up (near 1,000 levels); find where our much
        # lower limit is first crossed, without recursion.
        raise JsonLimitError(_too_deep_at(text, limits.max_depth),
                             _depth_problem(limits)) from None
    # The precise walk (which names the path) costs about a microsecond per
    # value, so it runs only when a cheap test over the whole says it must.
    if (flagged or _may_hold_surrogate(text) or _NUL_ESCAPE in text
            or not depth_within(value, limits.max_depth)):
        check(value, limits)
    return value


#: How a NUL can appear in strict JSON text (raw control characters are refused).
_NUL_ESCAPE: Final = "\\u0000"


def _may_hold_surrogate(text: str) -> bool:
    return _SURROGATE_ESCAPE.search(text) is not None or has_surrogate(text)


def depth_within(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests at most ``max_depth`` containers, level by level."""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return False
        below: list[Any] = []
        for item in level:
            below.extend([v for v in (item.values() if type(item) is dict else item)
                          if type(v) is dict or type(v) is list])
        level = below
    return True


def check(value: Any, limits: JsonLimits) -> None:
    """Raise :class:`JsonLimitError` for the first part of ``value`` over a limit."""
    # Paths are built for containers only (at most max_depth long); scalars
    # are checked where their container is read, which keeps the walk cheap.
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    if type(value) not in (dict, list):
        _check_scalar(value, (), limits)
        return
    while stack:
        item, path = stack.pop()
        if len(path) >= limits.max_depth:
            raise JsonLimitError(pointer(list(path)), _depth_problem(limits))
        pairs = item.items() if type(item) is dict else enumerate(item)
        for key, child in pairs:
            if type(key) is str:
                if has_surrogate(key):
                    raise JsonLimitError(pointer([*path, key]), "the key " + describe_text(key))
                if "\x00" in key:
                    raise JsonLimitError(pointer([*path, key]), _NUL_KEY_PROBLEM)
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, (*path, key)))
            elif kind is str or kind is _BadNumber or kind is float or kind is int:
                _check_scalar(child, (*path, key), limits)


def _check_scalar(value: Any, path: tuple[str | int, ...], limits: JsonLimits) -> None:
    if isinstance(value, str):
        problem = describe_text(value)
        if problem:
            raise JsonLimitError(pointer(list(path)), problem)
    elif isinstance(value, _BadNumber):
        raise JsonLimitError(pointer(list(path)), value.problem)
    elif isinstance(value, float) and not math.isfinite(value):
        raise JsonLimitError(pointer(list(path)), "must be a finite number")
    elif type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        raise JsonLimitError(pointer(list(path)), _int64_problem(str(value)))


_NUL_KEY_PROBLEM: Final = ("the key contains a NUL character (U+0000), which MongoDB "
                           "cannot store in a key")


def _depth_problem(limits: JsonLimits) -> str:
    return (f"is nested more than {limits.max_depth} levels deep "
            f"(limit {limits.depth_setting}={limits.max_depth})")


def _number_problem(literal: str, limits: JsonLimits) -> str:
    return (f"the number {_shown(literal)} is too large or too long: at most "
            f"{limits.max_number_chars} characters and finite "
            f"(limit {limits.number_setting}={limits.max_number_chars})")


def _int64_problem(literal: str) -> str:
    # Not a setting: MongoDB stores integers as signed 64-bit (BSON int64).
    return (f"the integer {_shown(literal)} is outside the signed 64-bit range "
            f"({INT64_MIN} to {INT64_MAX}) that MongoDB stores; send it as a string")


def _shown(literal: str) -> str:
    return literal if len(literal) <= 40 else f"{literal[:20]}…({len(literal)} characters)"


def _too_deep_at(text: str, max_depth: int) -> str:
    """The pointer of the first container nested deeper than ``max_depth``
    in ``text`` (which is assumed to be JSON), found with an explicit stack."""
    # One frame per open container: its kind, and the key most recently read
    # (objects) or the index of the current element (arrays).
    frames: list[list[Any]] = []
    expecting_key = False
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            if len(frames) >= max_depth:
                return pointer([f[1] for f in frames])
            frames.append([token, "" if token == "{" else 0])
            expecting_key = token == "{"
        elif token in "]}":
            if frames:
                frames.pop()
            expecting_key = False
        elif token == ",":
            if frames and frames[-1][0] == "[":
                frames[-1][1] += 1
            expecting_key = bool(frames) and frames[-1][0] == "{"
        elif token == ":":
            expecting_key = False
        elif expecting_key and frames:
            try:
                frames[-1][1] = str(json.loads(token))
            except ValueError:
                frames[-1][1] = token[1:-1]
    return ""
