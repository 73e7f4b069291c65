"""Composition root of the template service: builds everything and serves;
``litho.service`` runs it and unwinds it in reverse order."""

from __future__ import annotations

from litho import sandbox
from litho.docstore import DocumentStore
from litho.jsonlimits import JsonLimits
from litho.logs import get_logger
from litho.outbound import AllowList, OutboundGuard
from litho.service import Host
from litho.template.v1 import template_pb2, template_pb2_grpc
from services.template._copilot import CopilotLimits, ModelConfig, ModelPlanner
from services.template._copilot_plans import CopilotPlans
from services.template._copilots import Copilot
from services.template._fonts import FontLibrary, FontLimits, Sandbox
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
        max_data_sources=settings.template_max_data_sources,
        max_data_bytes=settings.template_max_data_bytes,
        max_per_tenant=settings.template_max_per_tenant,
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
    expander = LangExpander(engine, cache_size=settings.template_compile_cache_size,
                            max_bytes=settings.template_compile_cache_bytes)
    fonts = await _font_library(host, store)
    templates = Templates(repo, expander, limits,
                          max_pattern_input=settings.template_max_pattern_input,
                          max_pattern_work=settings.template_max_pattern_work,
                          expand_timeout=settings.template_expand_timeout, fonts=fonts,
                          outbound_allow=AllowList.parse(settings.outbound.allow))
    servicer = TemplateServicer(
        templates, max_variables_bytes=settings.template_max_variables_bytes,
        json_limits=limits.json, fonts=fonts, max_data_sources=settings.template_max_data_sources,
        copilot=await _copilot(host, store, templates, limits),
    )
    await host.serve_grpc(
        [(template_pb2_grpc.add_TemplateServiceServicer_to_server, servicer, SERVICE_NAME)],
        # A CreateFont carries the whole file; ExpandTemplate and
        # EvaluateMapping carry data from sources.
        max_receive_message_bytes=max(settings.template_max_font_bytes,
                                      settings.template_max_data_bytes
                                      + settings.template_max_variables_bytes)
        + _FONT_REQUEST_OVERHEAD)


#: Room for a CreateFont request's other fields and framing.
_FONT_REQUEST_OVERHEAD = 64 * 1024


async def _font_library(host: Host[TemplateSettings], store: DocumentStore) -> FontLibrary:
    settings = host.settings
    blobs = await host.blob_store()
    sandbox = Sandbox(workers=settings.template_font_parse_workers,
                      memory_bytes=settings.template_font_parse_memory,
                      timeout=settings.template_font_parse_timeout,
                      max_waiting=settings.template_font_parse_queue)
    # Workers start (spawn, import fontTools: ~0.3 s) in the background, so
    # the service is ready at once and the first upload finds them warm.
    sandbox.start()
    host.stack.callback(sandbox.close)
    library = FontLibrary(
        store, blobs, sandbox,
        FontLimits(max_bytes=settings.template_max_font_bytes,
                   max_decoded_bytes=settings.template_max_font_decoded_bytes,
                   max_fonts=settings.template_max_fonts,
                   parse_memory=settings.template_font_parse_memory,
                   parse_timeout=settings.template_font_parse_timeout),
        cache_ttl=settings.template_font_cache_ttl,
        cache_size=settings.template_font_cache_size)
    await library.prepare()
    return library


async def _copilot(host: Host[TemplateSettings], store: DocumentStore, templates: Templates,
                   limits: Limits) -> Copilot:
    settings = host.settings
    copilot_limits = CopilotLimits(
        max_prompt_bytes=settings.copilot_max_prompt_bytes,
        max_history_entries=settings.copilot_max_history_entries,
        max_history_bytes=settings.copilot_max_history_bytes,
        max_steps=settings.copilot_max_steps,
        max_operations=settings.copilot_max_operations,
        max_html_bytes=settings.template_max_html_bytes,
        max_model_html_bytes=settings.copilot_max_model_html_bytes,
        max_reply_bytes=settings.copilot_max_reply_bytes,
        model_timeout=settings.copilot_model_timeout,
        max_dimension=settings.template_max_dimension,
        max_variants=settings.copilot_max_variants)
    plans = CopilotPlans(store, ttl=settings.copilot_plan_seconds,
                         max_per_template=settings.copilot_max_plans_per_template,
                         limits=copilot_limits)
    await plans.prepare()
    model = None
    if settings.copilot_url:
        guard = await host.stack.enter_async_context(OutboundGuard(settings.outbound))
        model = ModelPlanner(guard.fetch, ModelConfig(
            url=settings.copilot_url, model=settings.copilot_model,
            api_key=settings.copilot_api_key or None, json_mode=settings.copilot_json_mode),
            copilot_limits)
        log.info("the copilot plans with a model", url=settings.copilot_url[:200],
                 model=settings.copilot_model)
    work = sandbox.Sandbox(
        workers=settings.copilot_workers, memory_bytes=settings.copilot_work_memory,
        timeout=settings.copilot_work_timeout, max_waiting=settings.copilot_queue,
        preload=("services.template._copilot_work",),
        busy=(f"{settings.copilot_queue} copilot requests are already waiting "
              "(LITHO_COPILOT_QUEUE); retry shortly"),
        start_failure=("the copilot cannot start its worker process; if "
                       "LITHO_COPILOT_WORK_MEMORY is very low, raise it"))
    work.start()  # the workers start (spawn) in the background
    host.stack.callback(work.close)
    return Copilot(templates, plans, copilot_limits, work, json_limits=limits.json,
                   model=model, work_timeout=settings.copilot_work_timeout)
