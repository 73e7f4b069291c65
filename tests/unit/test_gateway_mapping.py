from __future__ import annotations

import json

import pytest

from litho import errors
from services.gateway._openapi import RequestValidator, load_document
from services.gateway._problems import from_error, http_status


@pytest.mark.parametrize(("status", "code"), [
    ("INVALID_ARGUMENT", 422), ("NOT_FOUND", 404), ("UNAUTHENTICATED", 401),
    ("PERMISSION_DENIED", 403), ("RESOURCE_EXHAUSTED", 429), ("DEADLINE_EXCEEDED", 504),
    ("UNAVAILABLE", 503), ("ABORTED", 409), ("INTERNAL", 500), ("DATA_LOSS", 500),
])
def test_grpc_status_to_http(status: str, code: int) -> None:
    assert http_status(status) == code


def test_problem_bodies() -> None:
    busy = from_error(errors.ResourceExhausted("full", retry_after=2.4))
    assert busy.status == 429 and busy.headers["Retry-After"] == "2"
    assert busy.content_type == "application/problem+json"
    hidden = from_error(errors.Unavailable("cannot connect to 10.0.0.5:4222"))
    assert hidden.status == 503 and "10.0.0.5" not in (hidden.text or "")
    invalid = from_error(errors.InvalidArgument("bad", errors=[errors.FieldError("w", "m")]))
    assert json.loads(invalid.text or "")["errors"] == [{"field": "w", "message": "m"}]


def test_validator_checks_bodies_and_params() -> None:
    validator = RequestValidator(load_document())
    validator.check_body("createTemplate", {"name": "n", "html": "h", "width": 1, "height": 1})
    with pytest.raises(errors.InvalidArgument) as info:
        validator.check_body("createTemplate", {"name": "", "html": "h", "width": 0})
    fields = {e.field for e in info.value.errors}
    assert fields == {"/", "/name", "/width"}
    with pytest.raises(errors.InvalidArgument):
        validator.check_body("createTemplate", None)
    validator.check_body("renderTemplate", None)
    with pytest.raises(errors.InvalidArgument):
        validator.check_params("getTemplate", {("path", "templateId"): "../etc"})
    with pytest.raises(errors.InvalidArgument):
        validator.check_params("listTemplates", {("query", "pageSize"): 1000})


def test_openapi_document_is_valid_and_matches_the_routes() -> None:
    from openapi_spec_validator import validate

    from services.gateway._app import create_app

    doc = load_document()
    validate(doc)
    app = create_app(None, max_body_bytes=10)  # type: ignore[arg-type]
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        routes.add((info.get("path") or info.get("formatter"), route.method.lower()))
    documented = {(p, m) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    # aiohttp answers HEAD for every GET route; the document lists HEAD where it matters.
    assert routes - {(p, "head") for p, _ in routes} == documented - {
        (p, "head") for p, _ in documented}
    assert {(p, m) for p, m in documented if m == "head"} <= routes


@pytest.mark.parametrize(("raw", "field"), [
    ("/r/tpl_%ED%A0%80.png", "path"),
    ("/r/t.png?title=%ED%A0%80&sig=x", "title"),
    ("/r/t.png?ti%ED%B0%80tle=x", "ti\ufffd\ufffd\ufffdtle"),
    ("/v1/templates?pageToken=%FF", "pageToken"),
    ("/v1/templates?pageToken=a\ud800", "pageToken"),
])
def test_urls_that_are_not_utf8_text_are_refused(raw: str, field: str) -> None:
    from services.gateway._requests import check_url_text

    with pytest.raises(errors.InvalidArgument) as info:
        check_url_text(raw)
    assert info.value.errors[0].field == field
    check_url_text("/r/t.png?title=%F0%9F%98%80+x&a=%C3%A9")  # valid UTF-8 passes
