"""Composition root of the template service: builds everything and serves;
``litho.service`` runs it and unwinds it in reverse order."""

from __future__ import annotations

from litho.jsonlimits import JsonLimits
from litho.logs import get_logger
from litho.service import Host
from litho.template.v1 import template_pb2, template_pb2_grpc
from services.template._lang import Engine, LangExpander
from services.template._lang import Limits as LangLimits
from services.template._model import Limits
from services.template._service import Templates
from services.template._servicer import TemplateServicer
from services.template._settings import TemplateSettings
from services.template._store import TemplateRepository

log = get_logger(__name__)
SERVICE_NAME = template_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name
SETTINGS = TemplateSettings


async def build(host: Host[TemplateSettings]) -> None:
    settings = host.settings
    store = await host.document_store()
    repo = TemplateRepository(store, version_cache_size=settings.template_version_cache_size)
    await repo.prepare()
    limits = Limits(
        max_html_bytes=settings.template_max_html_bytes,
        max_dimension=settings.template_max_dimension,
        max_variables_bytes=settings.template_max_variables_bytes,
        max_output_bytes=settings.template_max_output_bytes,
        json=JsonLimits(
            max_depth=settings.template_json_max_depth,
            max_number_chars=settings.template_json_max_number_chars,
            depth_setting="LITHO_TEMPLATE_JSON_MAX_DEPTH",
            number_setting="LITHO_TEMPLATE_JSON_MAX_NUMBER_CHARS",
        ),
    )
    engine = Engine(LangLimits(
        max_template_bytes=settings.template_max_html_bytes,
        max_loop_iterations=settings.template_max_loop_iterations,
        max_depth=settings.template_max_depth,
        max_steps=settings.template_max_steps,
        max_string_length=settings.template_max_string_length,
        max_array_length=settings.template_max_array_length,
        max_errors=settings.template_max_errors,
    ))
    expander = LangExpander(engine, cache_size=settings.template_compile_cache_size)
    servicer = TemplateServicer(
        Templates(repo, expander, limits,
                  max_pattern_input=settings.template_max_pattern_input,
                  max_pattern_work=settings.template_max_pattern_work,
                  expand_timeout=settings.template_expand_timeout),
        max_variables_bytes=settings.template_max_variables_bytes,
        json_limits=limits.json,
    )
    await host.serve_grpc([
        (template_pb2_grpc.add_TemplateServiceServicer_to_server, servicer, SERVICE_NAME)])
