"""Update documents (``{"$set": ..., "$inc": ..., "$setOnInsert": ...}``): the
checks both adapters run before anything reaches a store, and the way the
SQLite adapter applies them (MongoDB applies them itself).

A malformed update is a programming error and raises ``ValueError``. An update
that is well formed but cannot apply to the stored data (``$inc`` of a string
or null, a result outside int64, a dotted path through a string or an array)
raises :class:`litho.errors.InvalidArgument`, as MongoDB refuses it, and the
document it failed on is not written. Atomicity is per document (see
:mod:`litho.docstore._port`): SQLite writes no match of a failed call,
MongoDB may keep the matches it updated before the failing one. A float
result that overflows to infinity is refused here too; MongoDB stores it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litho.docstore._checks import check_depth, check_field
from litho.docstore._port import Document, Filter
from litho.errors import FieldError, InvalidArgument

SET, INC, SET_ON_INSERT = "$set", "$inc", "$setOnInsert"
OPERATORS = (SET, INC, SET_ON_INSERT)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Update:
    """A checked update: each path appears once across all operators."""

    set: dict[str, Any]
    inc: dict[str, int | float]
    set_on_insert: dict[str, Any]

    def as_mongo(self) -> dict[str, dict[str, Any]]:
        parts = {SET: self.set, INC: self.inc, SET_ON_INSERT: self.set_on_insert}
        return {op: dict(fields) for op, fields in parts.items() if fields}


def check_update(update: Mapping[str, Any], collection: str) -> Update:
    if not isinstance(update, Mapping) or not update:
        raise ValueError(f"an update is a non-empty mapping of operators {', '.join(OPERATORS)}")
    parts: dict[str, dict[str, Any]] = {op: {} for op in OPERATORS}
    for op, fields in update.items():
        if op not in parts:
            hint = (" (to set fields, use {'$set': {...}})"
                    if isinstance(op, str) and not op.startswith("$") else "")
            raise ValueError(
                f"unsupported update operator {op!r}; the port supports "
                f"{', '.join(OPERATORS)}{hint}")
        if not isinstance(fields, Mapping):
            raise ValueError(f"{op} needs a mapping of field to value, got {fields!r}")
        for path, value in fields.items():
            check_field(path)
            if path == "_id" or path.startswith("_id."):
                raise ValueError(f"an update cannot change _id ({op} {path!r})")
            if op == INC:
                _check_amount(path, value, collection)
            else:
                check_depth(value, collection, under=path.count(".") + 1)
            parts[op][path] = value
    paths = [p for fields in parts.values() for p in fields]
    for i, p in enumerate(paths):
        for q in paths[i + 1:]:
            if overlap(p, q):
                raise ValueError(f"update fields {p!r} and {q!r} overlap")
    return Update(parts[SET], parts[INC], parts[SET_ON_INSERT])


def check_return(return_document: object) -> None:
    if return_document not in ("before", "after"):
        raise ValueError(f"return_document is 'before' or 'after', got {return_document!r}")


def _check_amount(path: str, amount: object, collection: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ValueError(f"$inc {path!r} needs a number, got {amount!r}")
    if isinstance(amount, float) and not math.isfinite(amount):
        raise ValueError(f"$inc {path!r} needs a finite number, got {amount!r}")
    if isinstance(amount, int) and not INT64_MIN <= amount <= INT64_MAX:
        raise InvalidArgument(
            f"$inc {path!r} in {collection}: {amount} is outside the signed 64-bit range")


def overlap(p: str, q: str) -> bool:
    return p == q or p.startswith(q + ".") or q.startswith(p + ".")


def upsert_seed(flt: Filter, update: Update) -> Document:
    """The document an upsert starts from, as MongoDB builds it: the filter's
    plain equality conditions (dotted ones nested), before the update applies.

    The port requires the filter to name ``_id`` as a string (every document
    has a string ``_id``, and two concurrent upserts then meet on the key
    instead of both inserting). ``$in`` is refused: MongoDB seeds from some
    forms of it and not others, and code must not come to depend on either.
    """
    doc_id = flt.get("_id")
    if not isinstance(doc_id, str):
        raise ValueError(f"an upsert needs a filter with a string _id, got _id {doc_id!r}")
    seeded = [p for p, cond in flt.items() if not isinstance(cond, Mapping)]
    for p, cond in flt.items():
        if isinstance(cond, Mapping) and "$in" in cond:
            raise ValueError(f"an upsert's filter cannot use $in (on {p!r})")
    updated = [*update.set, *update.inc, *update.set_on_insert]
    for i, p in enumerate(seeded):
        for q in [*seeded[i + 1:], *updated]:
            if p != q and overlap(p, q):
                raise ValueError(f"upsert: filter field {p!r} and field {q!r} overlap")
    doc: Document = {}
    for p in seeded:
        _put(doc, p, flt[p], "")  # cannot fail: the paths do not overlap
    return doc


def apply_update(doc: Document, update: Update, collection: str, *, inserting: bool) -> None:
    """Apply ``update`` to ``doc`` in place (``$setOnInsert`` only when inserting)."""
    for path, value in update.set.items():
        _put(doc, path, value, collection)
    if inserting:
        for path, value in update.set_on_insert.items():
            _put(doc, path, value, collection)
    for path, amount in update.inc.items():
        parent, key = _parent(doc, path, collection)
        current = parent.get(key, 0)
        if isinstance(current, bool) or not isinstance(current, int | float):
            raise InvalidArgument(
                f"cannot apply $inc to {path!r} of {collection} document {_id(doc)}: it holds "
                f"{_type_name(current)}, not a number")
        result = current + amount
        if isinstance(result, int) and not INT64_MIN <= result <= INT64_MAX:
            raise InvalidArgument(
                f"cannot apply $inc to {path!r} of {collection} document {_id(doc)}: the result "
                "is outside the signed 64-bit range", errors=[FieldError(
                    path, "the result is outside the signed 64-bit range")])
        if isinstance(result, float) and not math.isfinite(result):
            # JSON has no infinity, so the document could not be stored or
            # served; refused like the int64 overflow rather than a 500.
            raise InvalidArgument(
                f"cannot apply $inc to {path!r} of {collection} document {_id(doc)}: the result "
                "overflows to infinity, which a document cannot hold", errors=[FieldError(
                    path, "the result overflows to infinity")])
        parent[key] = result


def _put(doc: Document, path: str, value: Any, collection: str) -> None:
    parent, key = _parent(doc, path, collection)
    parent[key] = value


def _parent(doc: Document, path: str, collection: str) -> tuple[dict[str, Any], str]:
    """The object holding the last segment of ``path``, creating missing
    objects on the way, as MongoDB does."""
    *ancestors, key = path.split(".")
    node: dict[str, Any] = doc
    walked: list[str] = []
    for name in ancestors:
        walked.append(name)
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise InvalidArgument(
                f"cannot update {path!r} of {collection} document {_id(doc)}: "
                f"{'.'.join(walked)!r} holds {_type_name(child)}, not an object")
        node = child
    return node, key


def _id(doc: Document) -> str:
    return repr(doc.get("_id"))[:100]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a number"
