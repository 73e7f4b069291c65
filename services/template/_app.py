"""Composition root of the template service: builds everything, serves, unwinds."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from litho import rpc
from litho.config import DocumentStoreSettings, docstore_url, load
from litho.docstore import open_document_store
from litho.jsonlimits import JsonLimits
from litho.logs import configure_logging, get_logger
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


async def main(stop: asyncio.Event) -> None:
    settings = load(TemplateSettings)
    configure_logging("template", level=settings.log_level, fmt=settings.log_format)
    store_settings = load(DocumentStoreSettings)
    async with AsyncExitStack() as stack:
        store = await open_document_store(
            docstore_url(store_settings, settings, "template"), store_settings.database
        )
        stack.push_async_callback(store.close)
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
        await rpc.start_server(
            stack,
            address=settings.template_grpc_address,
            services=[(template_pb2_grpc.add_TemplateServiceServicer_to_server, servicer,
                       SERVICE_NAME)],
            grace=settings.shutdown_grace,
        )
        await stop.wait()
