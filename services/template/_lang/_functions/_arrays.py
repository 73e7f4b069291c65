"""Array functions; those that also make sense for text (length, slice…) accept it."""

from __future__ import annotations

from typing import Any

from services.template._lang._errors import ArgumentError
from services.template._lang._functions._args import array, key_path, pick, sequence, text, whole
from services.template._lang._functions._registry import Function
from services.template._lang._runtime import Runtime
from services.template._lang._values import describe, equal, json_text, type_name

#: Sort order between kinds, so a mixed array still sorts the same way every time.
_KIND_ORDER = {"null": 0, "boolean": 1, "number": 2, "string": 3}


def length(rt: Runtime, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, list | str | dict):
        return len(value)
    raise ArgumentError(f"expected an array, a string or an object, got {describe(value)}")


def first(rt: Runtime, value: Any) -> Any:
    items = sequence(value)
    return items[0] if items else None


def last(rt: Runtime, value: Any) -> Any:
    items = sequence(value)
    return items[-1] if items else None


def join(rt: Runtime, value: Any, separator: Any = ", ") -> str:
    pieces = [text(rt, item) for item in array(value)]
    sep = text(rt, separator)
    rt.check_string(sum(map(len, pieces)) + len(sep) * max(len(pieces) - 1, 0))
    return sep.join(pieces)


def slice_(rt: Runtime, value: Any, start: Any, end: Any = None) -> list[Any] | str:
    items = sequence(value)
    begin = whole(start, "a whole-number position")
    if end is None:
        return items[begin:]
    return items[begin:whole(end, "a whole-number position")]


def _search_cost(haystack: str, needle: str) -> int:
    """Finding text in text: a step per 64 characters searched, which covers
    the worst case of Python's search (a needle that almost matches
    everywhere), about ten times a plain scan."""
    return (len(haystack) + len(needle)) >> 6


def contains(rt: Runtime, value: Any, item: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        needle = text(rt, item)
        rt.charge(_search_cost(value, needle))
        return needle in value
    if isinstance(value, dict):
        return isinstance(item, str) and item in value
    return any(equal(element, item, rt.charge) for element in array(value))


def index_of(rt: Runtime, value: Any, item: Any) -> int:
    if isinstance(value, str):
        needle = text(rt, item)
        rt.charge(_search_cost(value, needle))
        return value.find(needle)
    for position, element in enumerate(array(value)):
        if equal(element, item, rt.charge):
            return position
    return -1


def _sort_key(value: Any) -> tuple[int, Any]:
    kind = type_name(value)
    if kind not in _KIND_ORDER:
        raise ArgumentError("cannot sort arrays or objects without a key; "
                            "give one, as in sort(items, 'name')")
    if value != value:
        return _KIND_ORDER[kind], float("inf")
    return _KIND_ORDER[kind], value


def sort(rt: Runtime, value: Any, key: Any = None) -> list[Any]:
    items = array(value)
    if key is None:
        keys = [_sort_key(item) for item in items]
    else:
        path = key_path(rt, key, len(items))
        keys = [_sort_key(pick(item, path)) for item in items]
    if len(items) > 1:
        # n log n comparisons, each reading at most the shorter text of the two:
        # charged up front, before the one call that cannot be interrupted.
        text_kib = sum(len(k[1]) for k in keys if isinstance(k[1], str)) >> 10
        rt.charge(len(items).bit_length() * (len(items) + text_kib))
    order = sorted(range(len(items)), key=keys.__getitem__)
    return [items[index] for index in order]


def reverse(rt: Runtime, value: Any) -> list[Any] | str:
    return sequence(value)[::-1]


def _identity(rt: Runtime, value: Any) -> Any:
    kind = type_name(value)
    if kind in ("array", "object"):
        return kind, json_text(value, rt.limits.max_string_length, rt.charge)
    if kind == "string" and len(value) >= 1024:
        rt.charge(len(value) >> 10)  # hashing reads all of it
    return kind, value


def unique(rt: Runtime, value: Any) -> list[Any]:
    seen: set[Any] = set()
    result = []
    for item in array(value):
        identity = _identity(rt, item)
        if identity not in seen:
            seen.add(identity)
            result.append(item)
    return result


def pluck(rt: Runtime, value: Any, key: Any) -> list[Any]:
    items = array(value)
    path = key_path(rt, key, len(items))
    return [pick(item, path) for item in items]


FUNCTIONS = (
    Function(
        "length", length, 1, 1, "arrays", "length(value)",
        "The number of items, characters or keys; 0 for null.",
        "length(items)", 3, {"items": ["a", "b", "c"]},
    ),
    Function(
        "first", first, 1, 1, "arrays", "first(value)",
        "The first item (or character), or null when there is none.",
        "first([3, 1, 2])", 3,
    ),
    Function(
        "last", last, 1, 1, "arrays", "last(value)",
        "The last item (or character), or null when there is none.",
        "last('abc')", "c",
    ),
    Function(
        "join", join, 1, 2, "arrays", "join(array, separator = ', ')",
        "The items as text, separated by the separator.",
        "join(tags, ' · ')", "news · tech", {"tags": ["news", "tech"]},
    ),
    Function(
        "slice", slice_, 2, 3, "arrays", "slice(value, start, end?)",
        "The part from start up to (not including) end; negative positions count from "
        "the end.",
        "slice([1, 2, 3, 4], 1, -1)", [2, 3],
    ),
    Function(
        "contains", contains, 2, 2, "arrays", "contains(value, item)",
        "Whether an array holds the item (compared by value), a string holds the text, "
        "or an object has the key. Null holds nothing.",
        "contains(tags, 'tech')", True, {"tags": ["news", "tech"]},
    ),
    Function(
        "indexOf", index_of, 2, 2, "arrays", "indexOf(value, item)",
        "The position (from 0) of the item in an array, or of the text in a string; -1 "
        "when it is absent.",
        "indexOf(['a', 'b', 'c'], 'b')", 1,
    ),
    Function(
        "sort", sort, 1, 2, "arrays", "sort(array, key?)",
        "The items in ascending order; with a key (or a dotted path such as 'author.name'), "
        "objects ordered by that property. Nulls come first, then booleans, numbers, "
        "and text by code point.",
        "sort(people, 'age') | pluck: 'name'", ["Bo", "Al"],
        {"people": [{"name": "Al", "age": 40}, {"name": "Bo", "age": 30}]},
    ),
    Function(
        "reverse", reverse, 1, 1, "arrays", "reverse(value)",
        "The items (or characters) in reverse order.",
        "reverse([1, 2, 3])", [3, 2, 1],
    ),
    Function(
        "unique", unique, 1, 1, "arrays", "unique(array)",
        "The items without repeats (compared by value), first occurrences kept.",
        "unique([1, 2, 1, 3, 2])", [1, 2, 3],
    ),
    Function(
        "pluck", pluck, 2, 2, "arrays", "pluck(array, key)",
        "The given property (or dotted path) of every item; null where it is missing.",
        "pluck(items, 'name')", ["Pen", "Ink"], {"items": [{"name": "Pen"}, {"name": "Ink"}]},
    ),
)
