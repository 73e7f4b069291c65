"""Composition root of the gateway: ``create_app`` wires routes, ``main`` serves."""

from __future__ import annotations

import functools

from aiohttp import web

from litho import messaging
from litho.binding.v1 import binding_pb2_grpc
from litho.docstore import DocumentStore
from litho.errors import ConfigError
from litho.experiment.v1 import experiment_pb2_grpc
from litho.lifecycle import periodic
from litho.logs import get_logger
from litho.notes import NatsLink, following, send_note
from litho.outbound import AllowList
from litho.renderer.v1 import renderer_pb2_grpc
from litho.service import Host
from litho.streams import EXPERIMENT_CHANGED_SUBJECT, KEY_REVOKED_SUBJECT
from litho.template.v1 import template_pb2_grpc
from litho.webhook.v1 import webhook_pb2_grpc
from services.gateway import _batches as batches
from services.gateway import _bindings as bindings
from services.gateway import _copilot as copilot
from services.gateway import _experiment_images as experiment_images
from services.gateway import _experiments as experiments
from services.gateway import _fonts as fonts
from services.gateway import _handlers as h
from services.gateway import _health as health
from services.gateway import _key_routes as key_routes
from services.gateway import _signed as signed
from services.gateway import _webhooks as webhooks
from services.gateway._experiment_images import (
    EXPERIMENT_IMAGES,
    ExperimentImages,
    experiment_memo,
    render_memo,
)
from services.gateway._idempotency import IdempotencyKeys, idempotency_middleware
from services.gateway._images import get_image
from services.gateway._keys import KeyStore
from services.gateway._middleware import (
    auth_middleware,
    errors_middleware,
    tracing_middlewares,
    url_text_middleware,
)
from services.gateway._openapi import RequestValidator, load_document
from services.gateway._ratelimit import RateLimiter, limiter_from
from services.gateway._scopes import SCOPE_OF
from services.gateway._settings import GatewaySettings
from services.gateway._state import DEPS, MAX_BODY_BYTES, Deps
from services.gateway._validation import validation_middleware
from services.gateway._web import WebFiles, add_routes

log = get_logger(__name__)
#: Seconds a view waits for JetStream to store its count before it is served uncounted.
COUNT_PUBLISH_TIMEOUT = 0.5


def create_app(deps: Deps, *, max_body_bytes: int, trust_client_trace: bool = False,
               images: ExperimentImages | None = None,
               web_files: WebFiles | None = None, limiter: RateLimiter | None = None,
               idempotency: IdempotencyKeys | None = None) -> web.Application:
    # The limiter right after authentication (per tenant and key; an invalid
    # request still counts), Idempotency-Key last (a request refused before it
    # claims no key; a replay still counts as a request, not as a render).
    app = web.Application(
        middlewares=[*tracing_middlewares(trust_client_trace=trust_client_trace),
                     errors_middleware, url_text_middleware, auth_middleware,
                     *([limiter.middleware] if limiter is not None else []),
                     validation_middleware,
                     *([idempotency_middleware(idempotency)] if idempotency is not None
                       else [])],
        client_max_size=max_body_bytes,
    )
    if limiter is not None:
        limiter.install(app)
    app[DEPS] = deps
    app[MAX_BODY_BYTES] = max_body_bytes
    if images is not None:
        app[EXPERIMENT_IMAGES] = images
    r = app.router
    r.add_post("/v1/templates", h.create_template)
    r.add_get("/v1/templates", h.list_templates, allow_head=False)
    r.add_get("/v1/templates/{templateId}", h.get_template, allow_head=False)
    r.add_put("/v1/templates/{templateId}", h.update_template)
    r.add_delete("/v1/templates/{templateId}", h.delete_template)
    r.add_get("/v1/templates/{templateId}/versions", h.list_versions, allow_head=False)
    r.add_post("/v1/templates/{templateId}/copilot", copilot.plan_copilot)
    r.add_post("/v1/templates/{templateId}/copilot/preview", copilot.preview_copilot)
    r.add_post("/v1/templates/{templateId}/copilot/apply", copilot.apply_copilot)
    r.add_post("/v1/templates/{templateId}/render", h.render_template, name="renderTemplate")
    r.add_post("/template/{templateId}/render", h.render_template, name="renderTemplateShort")
    r.add_post("/v1/templates/{templateId}/pdf", h.render_pdf)
    r.add_post("/v1/render", h.render_html)
    r.add_post("/v1/templates/{templateId}/batch-render", batches.create_batch)
    r.add_get("/v1/batches", batches.list_batches, allow_head=False)
    r.add_get("/v1/batches/{batchId}", batches.get_batch, allow_head=False)
    r.add_get("/v1/batches/{batchId}/results", batches.list_results, allow_head=False)
    r.add_post("/v1/batches/{batchId}/cancel", batches.cancel_batch)
    r.add_get("/v1/batches/{batchId}/archive.zip", batches.get_archive, allow_head=False)
    r.add_post("/v1/webhook-subscriptions", webhooks.create_subscription)
    r.add_get("/v1/webhook-subscriptions", webhooks.list_subscriptions, allow_head=False)
    r.add_get("/v1/webhook-subscriptions/{subscriptionId}", webhooks.get_subscription,
              allow_head=False)
    r.add_patch("/v1/webhook-subscriptions/{subscriptionId}", webhooks.update_subscription)
    r.add_delete("/v1/webhook-subscriptions/{subscriptionId}", webhooks.delete_subscription)
    r.add_post("/v1/webhook-subscriptions/{subscriptionId}/rotate-secret",
               webhooks.rotate_secret)
    r.add_get("/v1/webhook-subscriptions/{subscriptionId}/deliveries",
              webhooks.list_deliveries, allow_head=False)
    r.add_post("/v1/webhook-subscriptions/{subscriptionId}/deliveries/{deliveryId}/redeliver",
               webhooks.redeliver)
    r.add_post("/v1/bindings", bindings.create_binding)
    r.add_get("/v1/bindings", bindings.list_bindings, allow_head=False)
    r.add_post("/v1/bindings/preview", bindings.preview_binding)
    r.add_get("/v1/bindings/{bindingId}", bindings.get_binding, allow_head=False)
    r.add_patch("/v1/bindings/{bindingId}", bindings.update_binding)
    r.add_delete("/v1/bindings/{bindingId}", bindings.delete_binding)
    r.add_post("/v1/bindings/{bindingId}/pause", bindings.pause_binding)
    r.add_post("/v1/bindings/{bindingId}/resume", bindings.resume_binding)
    r.add_post("/v1/bindings/{bindingId}/refresh", bindings.refresh_binding)
    r.add_get("/v1/bindings/{bindingId}/data", bindings.get_binding_data, allow_head=False)
    r.add_post("/v1/data-sources/test", bindings.test_data_source)
    r.add_get("/b/{bindingFile}", bindings.get_binding_image)  # also answers HEAD
    r.add_post("/b/{bindingId}/push", bindings.push_binding_data)
    r.add_post("/v1/experiments", experiments.create_experiment)
    r.add_get("/v1/experiments", experiments.list_experiments, allow_head=False)
    r.add_get("/v1/experiments/{experimentId}", experiments.get_experiment, allow_head=False)
    r.add_patch("/v1/experiments/{experimentId}", experiments.update_experiment)
    r.add_delete("/v1/experiments/{experimentId}", experiments.delete_experiment)
    r.add_post("/v1/experiments/{experimentId}/start", experiments.start_experiment)
    r.add_post("/v1/experiments/{experimentId}/pause", experiments.pause_experiment)
    r.add_post("/v1/experiments/{experimentId}/complete", experiments.complete_experiment)
    r.add_post("/v1/experiments/{experimentId}/archive", experiments.archive_experiment)
    r.add_post("/v1/events", experiments.record_events)
    r.add_get("/s/{tenantHandle}/{experimentFile}", experiment_images.get_experiment_image)
    r.add_get("/s/{tenantHandle}/{slug}/click", experiment_images.click_experiment,
              allow_head=False)
    r.add_get("/v1/experiments/{experimentId}/stats", experiments.get_experiment_stats,
              allow_head=False)
    r.add_post("/v1/fonts", fonts.create_font)
    r.add_get("/v1/fonts", fonts.list_fonts, allow_head=False)
    r.add_delete("/v1/fonts/{fontId}", fonts.delete_font)
    r.add_get("/images/{imageFile}", get_image)  # also answers HEAD
    r.add_get("/r/{file}", signed.render_signed)  # also answers HEAD
    r.add_post("/v1/signed-urls", signed.create_signed_url)
    r.add_get("/v1/signing-key", signed.get_signing_key, allow_head=False)
    r.add_post("/v1/expressions/validate", h.validate_expression)
    r.add_post("/v1/expressions/test", h.test_expression)
    r.add_get("/v1/expressions/functions", h.list_functions, allow_head=False)
    r.add_post("/v1/keys", key_routes.create_key)
    r.add_get("/v1/keys", key_routes.list_keys, allow_head=False)
    r.add_delete("/v1/keys/{keyId}", key_routes.delete_key)
    r.add_get("/openapi.json", h.get_openapi, allow_head=False)
    r.add_get("/healthz", h.get_health, allow_head=False)
    r.add_get("/livez", health.get_live, allow_head=False)
    r.add_get("/readyz", health.get_ready, allow_head=False)
    # The pages and their files, for browsers (documented as text/html operations).
    add_routes(app, web_files or WebFiles.default())
    if deps is not None:
        check_routes(app, deps.validator)
    return app


def check_routes(app: web.Application, validator: RequestValidator) -> None:
    """Every route is an operation of the OpenAPI document, so the validation
    middleware checks every request, and every operation has a scope; a route
    the document lacks, or an operation ``_scopes.py`` does not classify,
    stops start-up."""
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        operation = validator.operation_for(route.method, resource.canonical)
        if operation is None:
            raise ConfigError(
                f"route {route.method} {resource.canonical} is not in openapi.json")
        if operation not in SCOPE_OF:
            raise ConfigError(f"operation {operation} has no scope: classify it in "
                              "services/gateway/_scopes.py")


SETTINGS = GatewaySettings


async def build(host: Host[GatewaySettings]) -> None:
    settings, stack = host.settings, host.stack
    store = await host.document_store()
    blobs = await host.blob_store()
    backends = await host.channels()
    keys = await _key_store(host, store, nats="experiment" in backends)
    doc = load_document()
    webhook_stub = webhook_pb2_grpc.WebhookServiceStub(backends["webhook"])
    deps = Deps(
        keys=keys,
        templates=template_pb2_grpc.TemplateServiceStub(backends["template"]),
        renderer=renderer_pb2_grpc.RendererServiceStub(backends["renderer"]),
        webhooks=webhook_stub,
        blobs=blobs,
        openapi=doc,
        validator=RequestValidator(doc),
        backends=backends,
        signed_cache_control=f"public, max-age={settings.gateway_signed_url_max_age}",
        image_base_url=settings.image_base_url,
        json_limits=settings.json_limits(),
        max_font_bytes=settings.gateway_max_font_bytes,
        batch_max_bytes=settings.batch_max_bytes,
        batch_max_items=settings.batch_max_items,
        batch_max_item_bytes=settings.batch_max_item_bytes,
        batch_max_csv_columns=settings.batch_max_csv_columns,
        outbound_allow=AllowList.parse(settings.outbound.allow),
        register_batch_webhook=webhooks.batch_registrar(webhook_stub),
        bindings=(binding_pb2_grpc.BindingServiceStub(backends["binding"])
                  if "binding" in backends else None),
        binding_max_push_bytes=settings.binding_max_push_bytes,
        experiments=(experiment_pb2_grpc.ExperimentServiceStub(backends["experiment"])
                     if "experiment" in backends else None),
        readiness=health.render_path_readiness(
            backends, store, ttl=settings.gateway_ready_cache_seconds,
            timeout=settings.gateway_ready_timeout),
    )
    images = (await _experiment_images(host, deps, settings)
              if deps.experiments is not None else None)
    limiter = limiter_from(store, settings.rate_limits(),
                           overrides_ttl=settings.gateway_rate_limit_overrides_ttl,
                           lease_fraction=settings.gateway_rate_limit_lease_fraction,
                           lease_seconds=settings.gateway_rate_limit_lease_seconds,
                           store_timeout=settings.gateway_rate_limit_store_timeout)
    idempotency = await _idempotency_keys(host, store)
    app = create_app(deps, max_body_bytes=settings.gateway_max_body_bytes,
                     trust_client_trace=settings.gateway_trust_client_trace, images=images,
                     web_files=WebFiles.from_settings(settings), limiter=limiter,
                     idempotency=idempotency)
    # Request lines up to 16 KiB, so that a long query (a 10 KB vid) reaches
    # the validation and gets a 422 naming it, not aiohttp's bare 400.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, max_line_size=16_384)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
    await site.start()
    host.http_port = runner.addresses[0][1]
    deps.base_url = settings.base_url(host.http_port)
    log.info("gateway listening", url=deps.base_url)


async def _idempotency_keys(host: Host[GatewaySettings], store: DocumentStore
                            ) -> IdempotencyKeys:
    """The Idempotency-Key records every replica shares, swept of expired ones."""
    settings = host.settings
    keys = IdempotencyKeys(
        store, seconds=settings.gateway_idempotency_seconds,
        max_response_bytes=settings.gateway_idempotency_max_response_bytes,
        # Every body a handler streams itself must fit: a batch, a font form.
        max_request_bytes=max(settings.batch_max_bytes,
                              settings.gateway_max_font_bytes + 64 * 1024,
                              settings.gateway_max_body_bytes),
        wait_seconds=settings.gateway_idempotency_wait_seconds,
        lock_seconds=settings.gateway_idempotency_lock_seconds,
        max_keys_per_tenant=settings.gateway_idempotency_max_keys_per_tenant)
    await keys.prepare()
    await host.stack.enter_async_context(periodic(
        keys.sweep, settings.gateway_idempotency_sweep_seconds, name="idempotency sweep"))
    return keys


async def _key_store(host: Host[GatewaySettings], store: DocumentStore, *,
                     nats: bool) -> KeyStore:
    """The key store. Deleting a key notes its id to every replica (core
    NATS), which drop it at once; the notes ride the NATS connection the
    gateway opens for experiments (the registry's gateway always has one).
    Without it, the key cache's time to live alone bounds a revocation."""
    settings = host.settings
    nc = await host.nats() if nats else None
    keys = KeyStore(store, cache_ttl=settings.gateway_key_cache_ttl,
                    link=NatsLink(nc) if nc is not None else None,
                    announce=(functools.partial(send_note, nc, KEY_REVOKED_SUBJECT)
                              if nc is not None else None),
                    max_per_tenant=settings.gateway_max_keys_per_tenant,
                    last_used_interval=settings.gateway_key_last_used_interval)
    await keys.prepare()
    host.stack.push_async_callback(keys.close)
    if nc is None:
        log.warning("no NATS: a deleted API key is refused by other replicas only after "
                    "LITHO_GATEWAY_KEY_CACHE_TTL", seconds=settings.gateway_key_cache_ttl)
    else:
        await host.stack.enter_async_context(
            following(nc, KEY_REVOKED_SUBJECT, keys.revoked))
    return keys


async def _experiment_images(host: Host[GatewaySettings], deps: Deps,
                             settings: GatewaySettings) -> ExperimentImages:
    """What ``/s/`` needs: NATS (counts go to JetStream; the experiment
    service's change notes drop the memo) and the memo itself."""
    assert deps.experiments is not None
    nc = await host.nats()
    js = nc.jetstream()
    link = NatsLink(nc)
    memo = experiment_memo(link, seconds=settings.gateway_experiment_memo_seconds,
                           max_bytes=settings.gateway_experiment_memo_bytes)
    images = ExperimentImages(
        experiments=deps.experiments, renderer=deps.renderer, blobs=deps.blobs,
        counts=messaging.Publisher(js, timeout=COUNT_PUBLISH_TIMEOUT), memo=memo,
        bots=settings.bot_pattern(),
        renders=render_memo(settings.gateway_experiment_render_seconds),
        max_image_bytes=settings.gateway_experiment_image_bytes,
        connected=lambda: link.generation() is not None,
        secure_cookie=settings.base_url(settings.gateway_port).startswith("https://"))
    await host.stack.enter_async_context(
        following(nc, EXPERIMENT_CHANGED_SUBJECT, images.changed))
    return images
