"""Traces: OpenTelemetry, configured from the standard ``OTEL_*`` environment.

- :func:`configure` installs the process's ``TracerProvider`` (resource
  ``service.name=litho-<name>``) and, when the environment asks for one, an
  OTLP exporter behind a ``BatchSpanProcessor``; the exit stack flushes it.
  With nothing set, spans still exist (trace ids in logs and ``traceparent``
  headers work) but nothing is exported and nothing touches the network.
- :func:`grpc_server_interceptors` and :func:`grpc_client_interceptors` are the
  official ``opentelemetry-instrumentation-grpc`` aio interceptors (``litho.rpc``
  puts them on every server and channel); :func:`http_middlewares` is the
  official aiohttp-server middleware plus ours, which puts ``traceparent`` and
  ``X-Request-Id`` on every response.
- :func:`inject`, :func:`extract`, :func:`publish_span` and :func:`consume_span`
  carry W3C trace context through NATS message headers.

Spans of our own come from ``opentelemetry.trace.get_tracer("litho.<module>")``;
attributes name tenants, templates, formats and render ids, never variables,
URLs' paths and queries, or secrets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import grpc
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    Span,
    SpanLimits,
    SpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Status
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from litho.errors import ConfigError
from litho.logs import get_logger

log = get_logger(__name__)

#: Every service's ``service.name`` is ``litho-<name>`` unless ``OTEL_SERVICE_NAME`` says otherwise.
SERVICE_PREFIX = "litho-"
REQUEST_ID_HEADER = "X-Request-Id"
#: A client's request id is echoed only if it is this plain: it lands in logs and headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")
#: The request's id, as a span attribute and a log field.
REQUEST_ID_ATTRIBUTE = "litho.request_id"

#: Longest attribute value kept, unless ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` says otherwise.
MAX_ATTRIBUTE_CHARS = 1024
#: Trace context a client may send; the public edge does not trust it (see
#: :func:`http_middlewares`).
_PROPAGATION_HEADERS = ("traceparent", "tracestate", "baggage")

#: The OTLP protocol when none is set: the OpenTelemetry specification's default.
DEFAULT_PROTOCOL = "http/protobuf"
_PROTOCOLS = ("grpc", "http/protobuf")

_TRACECONTEXT = TraceContextTextMapPropagator()


# ---------------------------------------------------------------- the provider


class _FanOut(SpanProcessor):
    """The process provider's one span processor: each :func:`configure` adds
    its export pipeline here and takes it out again on exit, so a process that
    configures twice (tests) neither exports twice nor feeds a stopped exporter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processors: tuple[SpanProcessor, ...] = ()

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._processors = (*self._processors, processor)

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._processors = tuple(p for p in self._processors if p is not processor)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in self._processors:
            processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        processors = self._processors
        if processors:
            span = _encodable(_without_error_text(span))
        for processor in processors:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self._processors:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self._processors)


#: What an exception event keeps: its type. Its message and stack trace can
#: quote a tenant's variables ("cannot negate the string \"sk_live_…\""); the
#: logs have them, with the trace id, where access is the operator's.
_EXCEPTION_TEXT = ("exception.message", "exception.stacktrace")


def _without_error_text(span: ReadableSpan) -> ReadableSpan:
    """``span``, or a copy without error messages: exception events keep their
    type, and a status keeps its code (the description, which gRPC and our
    errors fill with the message, is dropped)."""
    has_text = bool(span.status.description) or any(
        key in (event.attributes or {}) for event in span.events for key in _EXCEPTION_TEXT)
    if not has_text:
        return span
    events = [
        Event(e.name, {k: v for k, v in (e.attributes or {}).items()
                       if k not in _EXCEPTION_TEXT}, e.timestamp)
        for e in span.events
    ]
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=span.attributes, events=events, links=span.links, kind=span.kind,
        status=Status(span.status.status_code), start_time=span.start_time,
        end_time=span.end_time, instrumentation_scope=span.instrumentation_scope,
    )


def _encodable(span: ReadableSpan) -> ReadableSpan:
    """``span``, or a copy whose text can be encoded to protobuf.

    Request text reaches spans (aiohttp hands over a User-Agent or a path
    that is not UTF-8 with lone surrogates), and protobuf cannot encode such
    a string: the OTLP encoder drops that attribute with a logged traceback
    (a log line any client could cause at will), and a span name or status
    text with one loses the whole batch, other requests' spans with it."""
    texts = [span.name, span.status.description or ""]
    texts += _texts(span.attributes)
    for event in span.events:
        texts.append(event.name)
        texts += _texts(event.attributes)
    if all(_is_utf8(t) for t in texts):
        return span
    return ReadableSpan(
        name=_clean(span.name), context=span.context, parent=span.parent,
        resource=span.resource, attributes=_clean_attributes(span.attributes),
        events=[Event(_clean(e.name), _clean_attributes(e.attributes), e.timestamp)
                for e in span.events],
        links=span.links, kind=span.kind,
        status=Status(span.status.status_code, _clean(span.status.description or "") or None),
        start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _texts(attributes: Attributes) -> list[str]:
    out: list[str] = []
    for value in (attributes or {}).values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, tuple | list):
            out += [v for v in value if isinstance(v, str)]
    return out


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _clean(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode()


def _clean_attributes(attributes: Attributes) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if isinstance(value, str):
            value = _clean(value)
        elif isinstance(value, tuple | list):
            value = tuple(_clean(v) if isinstance(v, str) else v for v in value)
        cleaned[_clean(key)] = value
    return cleaned


_fan_out: _FanOut | None = None
_install_lock = threading.Lock()


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _install(service_name: str) -> _FanOut | None:
    """The process's span fan-out, installing the provider on first use."""
    global _fan_out
    with _install_lock:
        if _fan_out is not None:
            return _fan_out
        current = trace.get_tracer_provider()
        fan_out = _FanOut()
        if isinstance(current, TracerProvider):
            # Someone (a test, an auto-instrumentation) installed one first: join it.
            current.add_span_processor(fan_out)
        elif isinstance(current, trace.ProxyTracerProvider):
            provider = TracerProvider(resource=_resource(service_name), span_limits=_limits())
            provider.add_span_processor(fan_out)
            trace.set_tracer_provider(provider)
        else:
            log.warning("a non-SDK tracer provider is installed; litho exports nothing itself",
                        provider=type(current).__name__)
            return None
        _fan_out = fan_out
        return fan_out


def _limits() -> SpanLimits:
    """Attribute values are bounded (request text such as a Host header
    reaches spans), by ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` if set."""
    limited = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT" in os.environ
    return SpanLimits(max_attribute_length=None if limited else MAX_ATTRIBUTE_CHARS)


def _resource(service_name: str) -> Resource:
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override our defaults.
    ours = Resource({SERVICE_NAME: SERVICE_PREFIX + service_name, "service.namespace": "litho"})
    return Resource.create(dict(ours.merge(OTELResourceDetector().detect()).attributes))


def exporters_from_env(environ: Mapping[str, str] | None = None) -> list[SpanExporter]:
    """The span exporters the ``OTEL_*`` environment asks for.

    ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``) chooses; unset,
    it is ``otlp`` if an OTLP endpoint is set and ``none`` otherwise, so a
    bare ``make run`` exports nothing. ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
    or ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` or ``http/protobuf``, the
    default) chooses the OTLP exporter, which reads its endpoint, headers,
    timeout and compression from ``os.environ`` itself (``environ`` only
    chooses, for tests).
    """
    env = os.environ if environ is None else environ
    _protocol(env)  # a wrong value fails at start-up, exporting or not
    names = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint = (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                    or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        names = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "otlp":
            exporters.append(_otlp_exporter(env))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r} is not supported: "
                              "set otlp, console or none")
    return exporters


def _protocol(env: Mapping[str, str]) -> str:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(name, "").strip()
        if value and value not in _PROTOCOLS:
            raise ConfigError(f"{name}={value!r} is not supported: "
                              f"set one of {', '.join(_PROTOCOLS)}")
        if value:
            return value
    return DEFAULT_PROTOCOL


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = _protocol(env)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: "
                      f"set one of {', '.join(_PROTOCOLS)}")


def configure(service_name: str, stack: AsyncExitStack) -> None:
    """Trace this process as ``litho-<service_name>``, exporting as ``OTEL_*`` says.

    The provider is process-wide (OpenTelemetry allows one); a second call in
    the same process shares it and adds its own exporters. ``stack`` flushes
    and stops this call's exporters on exit, so the spans of a stopping
    service are exported. ``OTEL_SDK_DISABLED=true`` turns all of it off.
    """
    if _disabled():
        log.info("tracing disabled", reason="OTEL_SDK_DISABLED")
        return
    exporters = exporters_from_env()
    # Cutting values is what the attribute limit is for (a recorded
    # exception's stack trace passes it on every refused request): not worth
    # a warning line each time.
    logging.getLogger("opentelemetry.attributes").setLevel(logging.ERROR)
    fan_out = _install(service_name)
    if fan_out is None:
        return
    for exporter in exporters:
        add_span_processor(stack, BatchSpanProcessor(exporter))
    log.info("tracing configured", service=SERVICE_PREFIX + service_name,
             exporters=[f"{type(e).__module__}.{type(e).__name__}" for e in exporters]
             or "none")


def add_span_processor(stack: AsyncExitStack, processor: SpanProcessor) -> None:
    """Send every span of this process to ``processor`` until ``stack`` closes
    (an exporter of one's own, or a test's in-memory one)."""
    fan_out = _install("unknown") if not _disabled() else None
    if fan_out is None:
        return
    fan_out.add(processor)

    async def stop() -> None:
        fan_out.remove(processor)
        # Shutting down flushes, and may wait on the network: not on the loop.
        await asyncio.to_thread(processor.shutdown)

    stack.push_async_callback(stop)


# ---------------------------------------------------------------- gRPC


def _traced_rpcs() -> Any:
    """Which RPCs get spans: not health checks (probes call Health/Check every
    few seconds: a trace each is noise), nor the services named in
    ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`` (the instrumentors' own variable)."""
    from opentelemetry.instrumentation.grpc import filters

    excluded = [filters.health_check()]
    for name in os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").split(","):
        if name.strip():
            excluded.append(filters.service_name(name.strip()))
    return filters.negate(filters.any_of(*excluded))


def grpc_server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The official aio server interceptor: a server span per RPC, parented by
    the caller's ``traceparent`` metadata (health checks are left out). None
    when ``OTEL_SDK_DISABLED``: the interceptor costs even with no spans."""
    if _disabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=_traced_rpcs())
    return [interceptor]


def grpc_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The official aio client interceptors, one per call shape: a client span
    per RPC, its context sent as ``traceparent`` metadata (none when
    ``OTEL_SDK_DISABLED``)."""
    if _disabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(  # type: ignore[no-untyped-call]
        filter_=_traced_rpcs())
    return interceptors


# ---------------------------------------------------------------- HTTP


def request_id(sent: str | None) -> str:
    """The client's request id if it is sane, else a new one."""
    if sent and _SANE_REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


_CLIENT_CONTEXT = web.RequestKey("client_trace_context", trace.SpanContext)
#: Attributes of the server span that the official middleware fills with
#: request text (a path, a query with a signed URL's variables): replaced by
#: the route's template, so no variable or unrouted path is exported.
_URL_ATTRIBUTES = ("http.target", "http.url", "url.full", "url.path")
_QUERY_ATTRIBUTES = ("url.query",)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``X-Request-Id`` and ``traceparent`` on every response, errors too; the
    request id goes on the server span and on every log line of the request."""
    rid = request_id(request.headers.get(REQUEST_ID_HEADER))
    span = trace.get_current_span()
    span.set_attribute(REQUEST_ID_ATTRIBUTE, rid)
    _scrub(span, request)
    client = request.get(_CLIENT_CONTEXT)
    if client is not None:
        # The client's trace, which the edge does not join, linked for reference.
        span.add_link(client, {"litho.link": "client traceparent"})
    headers: dict[str, str] = {REQUEST_ID_HEADER: rid}
    if span.get_span_context().is_valid:
        _TRACECONTEXT.inject(headers)
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects are raised, not returned
            exc.headers.update(headers)
            raise
    if not response.prepared:
        response.headers.update(headers)
    return response


def _scrub(span: trace.Span, request: web.Request) -> None:
    if not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    for name in _URL_ATTRIBUTES:
        if name in attributes:
            span.set_attribute(name, route)
    for name in _QUERY_ATTRIBUTES:
        if name in attributes:
            span.set_attribute(name, "")


def _url_is_readable(request: web.Request) -> bool:
    """Whether aiohttp can build this request's URL (the official middleware
    reads it unguarded): a ``Host`` that is no host name (``\\xff``, an IDNA
    label such as ``xn--zz``) makes yarl raise."""
    try:
        url = request.url
        url.host  # noqa: B018
        url.port  # noqa: B018
        str(url)
        request.path_qs  # noqa: B018
        request.host  # noqa: B018
    except Exception:
        return False
    return True


def http_middlewares(*, trust_client_trace: bool = False) -> list[Middleware]:
    """The gateway's outermost middlewares: the official aiohttp-server one (a
    server span per request), then :func:`request_id_middleware` inside its span.

    A public edge does not trust the trace context a client sends (it could
    choose the trace id, switch tracing off with an unsampled flag, force
    sampling, or ride ``baggage`` into every internal call): unless
    ``trust_client_trace``, ``traceparent``, ``tracestate`` and ``baggage``
    are dropped, every request starts a trace of its own, and the client's
    context is kept only as a link on the server span.
    """
    if _disabled():
        # No spans at all: only the request id (the instrumentation costs
        # even when every span is a no-op).
        return [request_id_middleware]
    from opentelemetry.instrumentation.aiohttp_server import (
        AioHttpServerInstrumentor,
        create_aiohttp_middleware,
    )

    instrumentor = AioHttpServerInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        # instrument() is what reads the exclusion list and makes the metric
        # instruments the middleware uses; it also swaps web.Application for
        # a subclass that adds the middleware to every app in the process
        # (test servers too), which we undo: the gateway lists it itself.
        # Making that subclass is what aiohttp warns about.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    message="Inheritance class _InstrumentedApplication")
            instrumentor.instrument()
        instrumentor.uninstrument()
    official = create_aiohttp_middleware()

    @web.middleware
    async def untrusted_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trust_client_trace or not any(h in request.headers for h in _PROPAGATION_HEADERS):
            return await handler(request)
        sent = trace.get_current_span(propagate.extract(request.headers)).get_span_context()
        kept = CIMultiDict((k, v) for k, v in request.headers.items()
                           if k.lower() not in _PROPAGATION_HEADERS)
        request = request.clone(headers=kept)
        if sent.is_valid:
            request[_CLIENT_CONTEXT] = sent
        return await handler(request)

    @web.middleware
    async def server_span(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _url_is_readable(request):
            # That request gets a plain span of ours, not a 500.
            with trace.get_tracer(__name__).start_as_current_span(
                    f"{request.method} (invalid Host)", context=propagate.extract(
                        request.headers), kind=trace.SpanKind.SERVER):
                return await handler(request)
        response: web.StreamResponse = await official(request, handler)
        return response

    return [untrusted_context, server_span, request_id_middleware]


# ---------------------------------------------------------------- NATS


def inject(headers: dict[str, str]) -> None:
    """Write the current trace context (``traceparent``) into message headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message's headers carry (empty if none)."""
    return propagate.extract(dict(headers or {}))


_MESSAGING = "litho.messaging"


@contextmanager
def publish_span(
    subject: str, headers: dict[str, str], *, message_id: str = "", body_size: int | None = None,
) -> Iterator[trace.Span]:
    """A PRODUCER span around one publish; its context goes into ``headers``,
    so the consumer's span continues the same trace."""
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": subject,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    if body_size is not None:
        attributes["messaging.message.body.size"] = body_size
    tracer = trace.get_tracer(_MESSAGING)
    with tracer.start_as_current_span(f"publish {subject}", kind=trace.SpanKind.PRODUCER,
                                      attributes=attributes) as span:
        inject(headers)
        yield span


@contextmanager
def consume_span(
    subject: str, headers: Mapping[str, str] | None, *, consumer: str = "",
    message_id: str = "", delivery: int = 0, body_size: int | None = None,
) -> Iterator[trace.Span]:
    """A CONSUMER span around handling one message, child of the publisher's
    span when the headers carry its context."""
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.operation.name": "consume",
        "messaging.destination.name": subject,
    }
    if consumer:
        attributes["messaging.consumer.group.name"] = consumer
    if message_id:
        attributes["messaging.message.id"] = message_id
    if delivery:
        attributes["messaging.nats.delivery_count"] = delivery
    if body_size is not None:
        attributes["messaging.message.body.size"] = body_size
    tracer = trace.get_tracer(_MESSAGING)
    with tracer.start_as_current_span(f"process {subject}", context=extract(headers),
                                      kind=trace.SpanKind.CONSUMER,
                                      attributes=attributes) as span:
        yield span


__all__: Sequence[str] = (
    "REQUEST_ID_HEADER", "add_span_processor", "configure", "consume_span",
    "exporters_from_env", "extract", "grpc_client_interceptors", "grpc_server_interceptors",
    "http_middlewares", "inject", "publish_span", "request_id", "request_id_middleware",
)
