"""A batch's variable sets from a CSV upload.

The header row names the variables; a dotted name nests (``product.name``
gives ``{"product": {"name": …}}``). Every value is text, typed later by the
template's variable definitions and samples, as a signed URL's query is. An
empty cell leaves its variable unset, so the template's default applies.
Anything malformed is an :class:`InvalidArgument` naming the row or column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from litho.errors import FieldError, InvalidArgument

#: Longest header name, and the most dotted levels one may have.
MAX_NAME_CHARS = 200


def _refuse(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"the CSV is invalid: {field} {problem}",
                           errors=[FieldError(field, problem)])


def decode(data: bytes) -> str:
    """UTF-8 text (a leading byte-order mark is dropped), or a 422 naming
    where the first byte that is not UTF-8 is."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise _refuse("body", f"is not UTF-8 text (line {line}, byte {exc.start}); "
                              "save the file as UTF-8") from None


def _paths(header: list[str], max_depth: int) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    #: Each full name, and each proper prefix of one, with the column that made it.
    names: dict[tuple[str, ...], str] = {}
    prefixes: dict[tuple[str, ...], str] = {}
    for number, raw in enumerate(header, start=1):
        name = raw.strip().lstrip("\ufeff")  # a byte-order mark saved twice
        column = f"column {number}"
        if not name:
            raise _refuse(column, "has no name in the header row")
        if len(name) > MAX_NAME_CHARS:
            raise _refuse(column, f"has a name longer than {MAX_NAME_CHARS} characters")
        if "\x00" in name:
            raise _refuse(column, "has a name with a NUL character")
        path = tuple(name.split("."))
        if any(not part for part in path):
            raise _refuse(column, f"{name!r} has an empty part between dots")
        if len(path) > max_depth:
            raise _refuse(column, f"{name!r} nests deeper than {max_depth} levels")
        if path in names:
            raise _refuse(column, f"{name!r} repeats {names[path]!r}")
        clash = prefixes.get(path) or next(
            (names[path[:n]] for n in range(1, len(path)) if path[:n] in names), None)
        if clash is not None:
            raise _refuse(column, f"{name!r} clashes with {clash!r}: a value cannot also "
                                  "hold nested values")
        names[path] = name
        for n in range(1, len(path)):
            prefixes.setdefault(path[:n], name)
        paths.append(path)
    return paths


def _nest(paths: list[tuple[str, ...]], row: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in zip(paths, row, strict=True):
        if value == "":
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _rows(text: str) -> Iterator[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _refuse(f"line {reader.line_num}", f"cannot be read as CSV: {exc}") from None
        if row:  # a blank line is no item
            yield row


def variable_sets(data: bytes, *, max_items: int, max_depth: int,
                  max_columns: int) -> Iterator[dict[str, Any]]:
    """One variables object per data row, made as the rows are read (the
    caller encodes and checks each one before the next is built, so a CSV
    never exists whole as Python objects)."""
    rows = _rows(decode(data))
    header = next(rows, None)
    if header is None:
        raise _refuse("body", "is empty; the first row names the variables")
    if len(header) > max_columns:
        raise _refuse("body", f"has {len(header)} columns; at most {max_columns} "
                              "(LITHO_BATCH_MAX_CSV_COLUMNS)")
    paths = _paths(header, max_depth)
    made = 0
    for number, row in enumerate(rows, start=2):
        if len(row) != len(paths):
            raise _refuse(f"row {number}", f"has {len(row)} fields; the header has {len(paths)}")
        if made == max_items:
            raise _refuse("variableSets", f"has more than {max_items} rows "
                                          "(LITHO_BATCH_MAX_ITEMS)")
        if any("\x00" in value for value in row):
            raise _refuse(f"row {number}", "contains a NUL character")
        made += 1
        yield _nest(paths, row)
    if not made:
        raise _refuse("variableSets", "is empty: the CSV has a header row but no data rows")
