"""EvaluateMapping: a binding's variables computed from data by expressions of
the template language, with the limits of a render.

Runs the real service class (and, once, the real servicer behind a gRPC
server with the error interceptor) over the embedded SQLite store.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from litho.docstore import open_document_store
from litho.errors import InvalidArgument
from litho.rpc import ErrorInterceptor, error_from_rpc
from litho.template.v1 import template_pb2 as pb
from litho.template.v1 import template_pb2_grpc as pb_grpc
from services.template._lang import Engine, LangExpander
from services.template._lang import Limits as LangLimits
from services.template._model import Limits
from services.template._service import Templates
from services.template._servicer import TemplateServicer
from services.template._store import TemplateRepository

MAX_VARIABLES = 4096
MAX_DATA = 16384


async def _templates(tmp_path: Path, stack: AsyncExitStack,
                     lang: LangLimits | None = None) -> Templates:
    store = await open_document_store(f"sqlite:///{tmp_path}/t.db", "litho")
    stack.push_async_callback(store.close)
    repo = TemplateRepository(store, version_cache_size=16)
    await repo.prepare()
    limits = Limits(max_html_bytes=512 * 1024, max_dimension=5000,
                    max_variables_bytes=MAX_VARIABLES, max_output_bytes=2 * 1024 * 1024,
                    max_data_bytes=MAX_DATA)
    return Templates(repo, LangExpander(Engine(lang)), limits, max_pattern_input=10_000,
                     expand_timeout=5.0)


@pytest.fixture
async def templates(tmp_path: Path) -> AsyncIterator[Templates]:
    async with AsyncExitStack() as stack:
        yield await _templates(tmp_path, stack)


async def evaluate(templates: Templates, mapping: dict[str, str], data: Any) -> Any:
    return json.loads(await templates.evaluate_mapping(mapping, json.dumps(data)))


async def refused(templates: Templates, mapping: dict[str, str], data_json: str = "{}",
                  *, check_only: bool = False) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        await templates.evaluate_mapping(mapping, data_json, check_only=check_only)
    return {e.field: e.message for e in info.value.errors}


DATA = {"items": [{"name": "Lamp", "price": 10, "stock": 0}], "currency": "EUR",
        "meta": {"source": "shop"}}


async def test_expressions_read_the_data_fields_and_dotted_names_nest(
    templates: Templates,
) -> None:
    got = await evaluate(templates, {
        "title": "items[0].name | uppercase",
        "price.amount": "items[0].price * 1.2",
        "price.currency": "currency",
        "price.label": "items[0].stock > 0 ? 'In stock' : 'Sold out'",
        "count": "length(items)",
        "deep.a.b.c": "meta.source",
    }, DATA)
    assert got == {"title": "LAMP", "price": {"amount": 12, "currency": "EUR",
                                              "label": "Sold out"},
                   "count": 1, "deep": {"a": {"b": {"c": "shop"}}}}


async def test_data_is_the_whole_value_and_a_field_named_data_wins(
    templates: Templates,
) -> None:
    assert await evaluate(templates, {"n": "length(data)", "first": "data[0]"},
                          [5, 6, 7]) == {"n": 3, "first": 5}
    assert await evaluate(templates, {"d": "data.currency", "keys": "length(data)"},
                          DATA) == {"d": "EUR", "keys": 3}
    # A field called "data" shadows the whole value.
    assert await evaluate(templates, {"d": "data", "x": "x"},
                          {"data": "inner", "x": 1}) == {"d": "inner", "x": 1}
    # Scalars: only "data".
    assert await evaluate(templates, {"d": "data * 2"}, 21) == {"d": 42}


async def test_a_missing_path_maps_to_null_not_an_error(templates: Templates) -> None:
    got = await evaluate(templates, {
        "a": "nothing", "b": "items[5].name", "c": "meta.missing.deeper",
        "d": "default(meta.label, 'none')",
    }, DATA)
    assert got == {"a": None, "b": None, "c": None, "d": "none"}
    # Even with no data at all.
    assert json.loads(await templates.evaluate_mapping({"a": "x.y"}, "")) == {"a": None}


async def test_a_syntax_error_names_the_variable_line_and_column(
    templates: Templates,
) -> None:
    errors = await refused(templates, {"ok": "1", "price": "items[0].price *\n  * 2",
                                       "label": "upper(name)"})
    assert set(errors) == {"mapping.price", "mapping.label"}
    assert errors["mapping.price"].startswith("line 2, column 3: ")
    assert errors["mapping.label"].startswith("line 1, column 1: unknown function 'upper'")


async def test_every_problem_is_reported_at_once(templates: Templates) -> None:
    errors = await refused(templates, {
        "a": "(", "b": "1 +", "9lives": "1", "bad-name": "1", "c": "'open",
    })
    assert set(errors) == {"mapping.a", "mapping.b", "mapping.9lives", "mapping.bad-name",
                           "mapping.c"}
    assert "variable name" in errors["mapping.9lives"]


async def test_a_name_that_is_also_a_prefix_conflicts_naming_both(
    templates: Templates,
) -> None:
    errors = await refused(templates, {"price": "1 +", "price.amount": "2", "price.x.y": "3",
                                       "pricey": "4"})
    # Reported along with the syntax error of one of them.
    assert set(errors) == {"mapping.price", "mapping.price.amount", "mapping.price.x.y"}
    assert "mapping.price" in errors["mapping.price.amount"]
    assert "'price'" in errors["mapping.price.x.y"] and "x.y" in errors["mapping.price.x.y"]
    # Siblings and look-alike prefixes are fine.
    assert await evaluate(templates, {"a.b": "1", "a.c": "2", "ab": "3"}, {}) == {
        "a": {"b": 1, "c": 2}, "ab": 3}


async def test_check_only_checks_syntax_and_ignores_the_data(templates: Templates) -> None:
    assert await templates.evaluate_mapping({"a": "items[0].name"}, "not json",
                                            check_only=True) == "{}"
    errors = await refused(templates, {"a": "1 +"}, "not json", check_only=True)
    assert list(errors) == ["mapping.a"]
    # Without check_only, the same data is refused.
    errors = await refused(templates, {"a": "items"}, "not json")
    assert list(errors) == ["data"]


async def test_an_evaluation_error_names_the_variable(templates: Templates) -> None:
    errors = await refused(templates, {"ok": "1", "bad": "items * 2", "worse": "meta - []"},
                           json.dumps(DATA))
    assert set(errors) == {"mapping.bad", "mapping.worse"}
    assert errors["mapping.bad"].startswith("line 1, column 7: cannot apply '*'")


async def test_the_step_budget_is_a_render_s_and_shared(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        templates = await _templates(tmp_path, stack, LangLimits(max_steps=200))
        data = json.dumps({"x": 1})
        expression = " + ".join(["x"] * 30)  # ~60 steps
        assert json.loads(await templates.evaluate_mapping({"a": expression}, data)) == {
            "a": 30}
        mapping = {f"v{i}": expression for i in range(6)}
        errors = await refused(templates, mapping, data)
        [(field, message)] = errors.items()
        assert field.startswith("mapping.v") and field != "mapping.v0"
        assert "LITHO_TEMPLATE_MAX_STEPS" in message


async def test_data_is_bounded_by_its_own_setting(templates: Templates) -> None:
    # Data larger than a render's variables is fine (a source's answer is
    # often larger than what the mapping keeps of it) ...
    mapped = await templates.evaluate_mapping(
        {"n": "length(s)"}, json.dumps({"s": "x" * (MAX_VARIABLES + 10)}), check_only=False)
    assert json.loads(mapped) == {"n": MAX_VARIABLES + 10}
    # ... up to LITHO_TEMPLATE_MAX_DATA_BYTES.
    big = json.dumps({"s": "x" * MAX_DATA})
    errors = await refused(templates, {"a": "s"}, big)
    assert "LITHO_TEMPLATE_MAX_DATA_BYTES" in errors["data"]
    deep = "[" * 200 + "]" * 200
    errors = await refused(templates, {"a": "data"}, deep)
    [field] = errors
    assert field.startswith("data")


async def test_mapped_variables_too_large_for_a_render_are_refused(
    templates: Templates,
) -> None:
    data = json.dumps({"s": "x" * 1000})
    errors = await refused(templates, {f"v{i}": "s" for i in range(5)}, data)
    assert "LITHO_TEMPLATE_MAX_VARIABLES_BYTES" in errors["mapping"]


async def test_over_grpc_a_bad_mapping_is_invalid_argument_with_field_errors(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        templates = await _templates(tmp_path, stack)
        server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        pb_grpc.add_TemplateServiceServicer_to_server(
            TemplateServicer(templates, max_variables_bytes=MAX_VARIABLES), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stack.push_async_callback(server.stop, None)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stack.push_async_callback(channel.close)
        stub = pb_grpc.TemplateServiceStub(channel)

        ok = await stub.EvaluateMapping(pb.EvaluateMappingRequest(
            mapping={"p.a": "items[0].price", "p.b": "currency"},
            data_json=json.dumps(DATA)))
        assert json.loads(ok.variables_json) == {"p": {"a": 10, "b": "EUR"}}

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.EvaluateMapping(pb.EvaluateMappingRequest(
                mapping={"a": "1 +", "b": "2"}, check_only=True))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        error = error_from_rpc(info.value)
        assert [(e.field, e.message[:18]) for e in error.errors] == [
            ("mapping.a", "line 1, column 4: ")]
