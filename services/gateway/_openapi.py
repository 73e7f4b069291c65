"""The OpenAPI 3.1 document is the contract: it is served as-is and every
request body, path and query parameter is validated against it, per route, by
the operation the document gives that method and path (``_validation.py``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from litho.errors import FieldError, InvalidArgument

_DOC_URI = "urn:litho:openapi"
_ARTICLE = {"integer": "an"}


def _boolean(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(text)


def _integer(text: str) -> int:
    # int() would also take "1_000", " 7" and non-ASCII digits.
    if not re.fullmatch(r"-?[0-9]{1,19}", text):
        raise ValueError(text)
    return int(text)


def _number(text: str) -> float:
    if not re.fullmatch(r"-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?", text):
        raise ValueError(text)
    return float(text)


_QUERY_TYPES: dict[str, Callable[[str], Any]] = {
    "integer": _integer, "number": _number, "boolean": _boolean, "string": str}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def load_document() -> dict[str, Any]:
    text = resources.files("services.gateway").joinpath("openapi.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if not ref.startswith("#/"):
        return schema
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return dict(node)


def _case_insensitive_fields(doc: dict[str, Any], schema: dict[str, Any] | None,
                             depth: int = 3) -> frozenset[tuple[str, ...]]:
    """Paths of the body fields marked ``x-litho-case-insensitive``, in nested
    objects too (a binding's ``output.format``), a few levels deep."""
    if schema is None or depth == 0:
        return frozenset()
    found: set[tuple[str, ...]] = set()
    for name, prop in _resolve(doc, schema).get("properties", {}).items():
        resolved = _resolve(doc, prop)
        if resolved.get("x-litho-case-insensitive"):
            found.add((name,))
        elif "properties" in resolved:
            found.update((name, *inner) for inner in
                         _case_insensitive_fields(doc, resolved, depth - 1))
    return frozenset(found)


@dataclass(frozen=True)
class _Operation:
    body: Draft202012Validator | None
    body_required: bool
    params: dict[tuple[str, str], tuple[bool, Draft202012Validator]]
    #: JSON type of each query parameter: query values arrive as text.
    query_types: dict[str, str]
    #: Body fields whose schema is marked ``x-litho-case-insensitive`` (format
    #: names): folded to lower case before validation, so ``PNG`` is ``png``.
    folded: frozenset[tuple[str, ...]] = frozenset()
    #: The handler reads the body itself (``x-litho-body-read-by-handler``: a
    #: body other media may carry, or larger than other bodies) and checks it
    #: with :meth:`RequestValidator.check_body`.
    read_by_handler: bool = False


class RequestValidator:
    """Validators for each ``operationId``, compiled once."""

    def __init__(self, doc: dict[str, Any]) -> None:
        registry: Registry[Any] = Registry().with_resource(
            _DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
        )
        self._ops: dict[str, _Operation] = {}
        self._by_route: dict[tuple[str, str], str] = {}
        for path, item in doc["paths"].items():
            shared = item.get("parameters", [])
            for method, op in item.items():
                if method == "parameters":
                    continue
                self._by_route[(method.upper(), path)] = op["operationId"]
                params = {}
                query_types = {}
                for p in [*shared, *op.get("parameters", [])]:
                    params[(p["in"], p["name"])] = (
                        bool(p.get("required")), self._validator(p["schema"], registry))
                    if p["in"] == "query":
                        query_types[p["name"]] = str(p["schema"].get("type", "string"))
                body = op.get("requestBody")
                # Only JSON bodies are validated here; an operation that takes
                # other media (a font upload) reads and checks its body itself.
                json_body = (body or {}).get("content", {}).get("application/json")
                schema = json_body["schema"] if json_body else None
                self._ops[op["operationId"]] = _Operation(
                    body=self._validator(schema, registry) if schema else None,
                    body_required=bool(json_body and body and body.get("required")),
                    params=params,
                    query_types=query_types,
                    folded=_case_insensitive_fields(doc, schema),
                    read_by_handler=bool(op.get("x-litho-body-read-by-handler")),
                )

    @staticmethod
    def _validator(schema: dict[str, Any], registry: Registry[Any]) -> Draft202012Validator:
        if "$ref" in schema:
            schema = {"$ref": _DOC_URI + schema["$ref"]}
        return Draft202012Validator(schema, registry=registry)

    @property
    def operation_ids(self) -> set[str]:
        return set(self._ops)

    def operation_for(self, method: str, path: str) -> str | None:
        """The operation id the document gives ``method`` on the route ``path``
        (aiohttp's canonical form, ``/v1/templates/{templateId}``); HEAD falls
        back to GET, as aiohttp answers HEAD on GET routes."""
        found = self._by_route.get((method, path))
        if found is None and method == "HEAD":
            found = self._by_route.get(("GET", path))
        return found

    def has_body(self, operation_id: str) -> bool:
        """Whether the middleware reads and checks the JSON body before the handler."""
        op = self._ops[operation_id]
        return op.body is not None and not op.read_by_handler

    def query_values(self, operation_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        """The declared query parameters, read as their schema's type; a value
        that is not of that type is refused here, naming the parameter."""
        values: dict[str, Any] = {}
        problems = []
        for name, kind in self._ops[operation_id].query_types.items():
            if name not in query:
                continue
            text = query[name]
            try:
                values[name] = _QUERY_TYPES.get(kind, str)(text)
            except ValueError:
                problems.append(FieldError(name, f"must be {_ARTICLE.get(kind, 'a')} {kind}"))
        if problems:
            raise InvalidArgument("the request parameters are invalid", errors=problems)
        return values

    def check_params(self, operation_id: str, values: dict[tuple[str, str], Any]) -> None:
        problems = []
        for (where, name), (required, validator) in self._ops[operation_id].params.items():
            if where == "header":
                continue
            value = values.get((where, name))
            if value is None:
                if required:
                    problems.append(FieldError(name, f"{where} parameter is required"))
                continue
            if isinstance(value, str) and _CONTROL.search(value):
                # ECMA-262 "$" (and Python's re.search) accept a trailing
                # newline; no parameter of ours ever holds control characters.
                problems.append(FieldError(name, "must not contain control characters"))
                continue
            for err in validator.iter_errors(value):
                problems.append(FieldError(name, err.message))
        if problems:
            raise InvalidArgument("the request parameters are invalid", errors=problems)

    def fold_case(self, operation_id: str, body: Any) -> Any:
        """``body`` with its case-insensitive fields in lower case."""
        folded = self._ops[operation_id].folded
        if not folded or not isinstance(body, dict):
            return body
        return _folded(body, folded)

    def check_body(self, operation_id: str, body: Any) -> None:
        op = self._ops[operation_id]
        if op.body is None:
            return
        if body is None:
            if op.body_required:
                raise InvalidArgument(
                    "a JSON request body is required", errors=[FieldError("body", "is required")])
            return
        problems = [
            FieldError("/" + "/".join(str(p) for p in err.absolute_path), err.message)
            for err in sorted(op.body.iter_errors(body), key=lambda e: list(e.absolute_path))
        ]
        if problems:
            raise InvalidArgument("the request body is invalid", errors=problems)


def _folded(body: dict[str, Any], paths: frozenset[tuple[str, ...]]) -> dict[str, Any]:
    here = {p[0] for p in paths if len(p) == 1}
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in here and isinstance(value, str):
            value = value.lower()
        elif isinstance(value, dict):
            inner = frozenset(p[1:] for p in paths if len(p) > 1 and p[0] == key)
            if inner:
                value = _folded(value, inner)
        out[key] = value
    return out
