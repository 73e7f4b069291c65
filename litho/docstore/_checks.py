"""Argument rules every document-store adapter enforces the same way.

Only names matching these patterns reach a query (in SQLite, SQL text), so
they are both the port's contract and an injection guard.
"""

from __future__ import annotations

import re

from litho.docstore import MAX_DOCUMENT_DEPTH, DocumentTooDeep
from litho.jsonlimits import depth_within

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
OPERATORS = "equality, $in, $gt, $gte, $lt, $lte"


def check_field(field: object) -> str:
    if not isinstance(field, str) or not FIELD.fullmatch(field):
        if isinstance(field, str) and field.startswith("$"):
            raise ValueError(f"unsupported operator {field!r}; the port supports {OPERATORS}")
        raise ValueError(f"invalid field name {field!r}: use dotted names of letters, digits and _")
    return field


def is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float)


def check_depth(value: object, collection: str, *, under: int = 0) -> None:
    """Refuse a value nested deeper than any adapter can store and read back;
    ``under`` is how many levels already hold it (an update's dotted path)."""
    if not depth_within(value, MAX_DOCUMENT_DEPTH - under):
        raise DocumentTooDeep(
            f"a document for {collection} nests objects and arrays more than "
            f"{MAX_DOCUMENT_DEPTH} levels deep, which no document store can read back")
