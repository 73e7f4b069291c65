"""gRPC plumbing shared by every service.

- :func:`start_server` builds a ``grpc.aio`` server inside the running loop with
  the standard ``grpc.health.v1`` service, the tracing interceptor and the error
  interceptor, and registers a graceful stop (health NOT_SERVING, then ``stop(grace)``).
- :class:`ErrorInterceptor` is the one place where a :class:`LithoError` becomes a
  gRPC status, for all four call shapes; its details travel as JSON in
  ``litho-error-bin`` trailing metadata.
- :func:`open_channel` gives a traced channel whose calls, unary and streaming,
  carry a default deadline and turn a failed call back into the matching
  :class:`LithoError` (for a streaming response, while it is read).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from litho import errors, telemetry
from litho.logs import get_logger

log = get_logger(__name__)

ERROR_METADATA_KEY = "litho-error-bin"
#: Largest error payload sent in trailing metadata (before base64), and
#: largest status message: together well under gRPC's 8 KiB metadata limit.
MAX_ERROR_PAYLOAD_BYTES = 3072
MAX_STATUS_MESSAGE_BYTES = 256

_STATUS_BY_NAME: dict[str, grpc.StatusCode] = {c.name: c for c in grpc.StatusCode}

_ERROR_BY_STATUS: dict[grpc.StatusCode, type[errors.LithoError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.ABORTED: errors.Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.CANCELLED: errors.Unavailable,
}

Register = Callable[[Any, grpc.aio.Server], None]


# ---------------------------------------------------------------- server side


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Map domain errors to status codes; hide everything else behind INTERNAL.

    Streaming responses keep their shape (an async generator stays one; a
    handler that writes with ``context.write`` is drained), and an error after
    some messages were sent still ends the stream with its status."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        codec: dict[str, Any] = {"request_deserializer": handler.request_deserializer,
                                 "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary_response(handler.unary_unary, method), **codec)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary_response(handler.stream_unary, method), **codec)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream_response(handler.unary_stream, method), **codec)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _stream_response(handler.stream_stream, method), **codec)
        return handler


def _unary_response(inner: Any, method: str) -> Callable[[Any, Context], Awaitable[Any]]:
    async def behavior(request: Any, context: Context) -> Any:
        try:
            return await inner(request, context)
        except Exception as exc:
            await _fail(context, exc, method)

    return behavior


def _stream_response(inner: Any, method: str) -> Callable[[Any, Context], AsyncIterator[Any]]:
    async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            result = inner(request, context)
            if hasattr(result, "__aiter__"):
                async for response in result:
                    yield response
            else:  # a coroutine that sends with context.write
                await result
        except Exception as exc:
            await _fail(context, exc, method)

    return behavior


async def _fail(context: Context, exc: Exception, method: str) -> None:
    """End the call with the status ``exc`` stands for (always raises)."""
    if isinstance(exc, errors.LithoError):
        await _abort(context, exc, method)
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, NotImplementedError):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
    log.error("unhandled error in rpc", method=method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


async def _abort(context: Context, exc: errors.LithoError, method: str) -> None:
    code = _STATUS_BY_NAME.get(exc.status, grpc.StatusCode.INTERNAL)
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        log.error("internal error in rpc", method=method, error=str(exc))
        await context.abort(code, "internal error")
    await context.abort(code, status_message(exc.message),
                        trailing_metadata=((ERROR_METADATA_KEY, error_payload(exc)),))


def error_payload(exc: errors.LithoError) -> bytes:
    """The error's details as JSON, at most ``MAX_ERROR_PAYLOAD_BYTES``: an
    oversized trailer would turn any error into RESOURCE_EXHAUSTED."""
    max_errors, max_detail = errors.MAX_FIELD_ERRORS, errors.MAX_DETAIL_CHARS
    while True:
        # ASCII-only JSON: its size is its length, and no text can fail to encode.
        data = json.dumps(exc.bounded_details(max_errors=max_errors, max_detail=max_detail))
        if len(data) <= MAX_ERROR_PAYLOAD_BYTES:
            return data.encode()
        # Fewer field errors first; then (12 bytes a character at worst) a
        # shorter detail, which always fits in the end.
        if max_errors:
            max_errors //= 2
        else:
            max_detail //= 2


def status_message(message: str) -> str:
    """The gRPC status message: short, since it travels percent-encoded in a
    header (the full detail travels in the payload)."""
    text = errors.clip(message, MAX_STATUS_MESSAGE_BYTES)
    while len(text.encode()) > MAX_STATUS_MESSAGE_BYTES:
        text = text[: len(text) * 3 // 4] + "…"
    return text


#: How long a client's connection to a server lasts before the client is
#: asked to reconnect (and re-resolve its target), and the time calls then in
#: flight get to finish: above the default deadline (LITHO_RPC_DEADLINE, 60 s).
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 2 * 60 * 1000


async def start_server(
    stack: AsyncExitStack,
    *,
    address: str,
    services: Iterable[tuple[Register, Any, str]],
    grace: float,
    max_receive_message_bytes: int | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start a server on ``address`` (``host:port``; port 0 picks a free one).

    ``services`` are ``(add_XServicer_to_server, servicer, full service name)``.
    ``max_receive_message_bytes`` raises (or lowers) gRPC's 4 MiB limit on a
    request message, for a service that takes uploads; None keeps gRPC's.
    Returns the server and the bound port; the stack stops it gracefully.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.so_reuseport", 0),
        # Clients keep a connection until it breaks and resolve their target's
        # DNS name only then: without an end to connections, replicas added
        # later (a Kubernetes autoscaler's) would never get a call. After
        # MAX_CONNECTION_AGE a client reconnects, re-resolves and spreads its
        # calls again; calls in flight get the grace to finish.
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
    ]
    if max_receive_message_bytes is not None:
        options.append(("grpc.max_receive_message_length", max_receive_message_bytes))
    # The tracing interceptor is outermost: its span covers the whole call and
    # records the status the error interceptor chose.
    server = grpc.aio.server(
        interceptors=[*telemetry.grpc_server_interceptors(), ErrorInterceptor()],
        # gRPC binds with SO_REUSEPORT by default: a second instance on a busy
        # port would start and silently take half the calls. Refuse instead.
        options=options)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = []
    for register, servicer, name in services:
        register(servicer, server)
        names.append(name)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc: "Failed to bind to address …"
        port = 0
        reason = str(exc)
    else:
        reason = "is it in use?"
    if port == 0:
        raise errors.ConfigError(f"cannot bind gRPC address {address!r}: {reason}")
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop() -> None:
        log.info("stopping grpc server", grace=grace)
        await health.enter_graceful_shutdown()
        await server.stop(grace)

    stack.push_async_callback(stop)
    log.info("grpc server started", address=address, port=port)
    return server, port


# ---------------------------------------------------------------- client side


class _Deadline:
    def __init__(self, default_deadline: float) -> None:
        self._deadline = default_deadline

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if details.timeout is not None:
            return details
        return grpc.aio.ClientCallDetails(
            details.method, self._deadline, details.metadata, details.credentials,
            details.wait_for_ready,
        )


#: Calls that may run twice without harm: reads, and renders (content
#: addressed: a second run finds or makes the same output).
_SAFE_TO_REPEAT = re.compile(r"/(Get|List|Render|Expand|Validate|Test|Check)[A-Za-z]*$")
#: Tries of a safe call whose peer went away before answering.
_TRIES = 3


def _peer_went_away(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE from the transport (a replica that died, a reset
    connection), not a service's own Unavailable (which carries our trailer)."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and not any(
        key == ERROR_METADATA_KEY for key, _ in exc.trailing_metadata() or ())


class _UnaryUnary(_Deadline, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        details = self._details(client_call_details)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        tries = _TRIES if _SAFE_TO_REPEAT.search(method) else 1
        for attempt in range(1, tries + 1):
            call = await continuation(details, request)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                # Round robin gives the next try another replica, if any.
                if attempt < tries and _peer_went_away(exc):
                    log.info("peer went away; calling again", method=method, attempt=attempt)
                    await asyncio.sleep(0.05 * attempt)
                    continue
                raise error_from_rpc(exc) from exc
            return call
        raise AssertionError("unreachable")


class _StreamUnary(_Deadline, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        call = await continuation(self._details(client_call_details), request_iterator)
        return await _translated_unary(call)


class _UnaryStream(_Deadline, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(self._details(client_call_details), request)
        return _translated_stream(call)


class _StreamStream(_Deadline, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        call = await continuation(self._details(client_call_details), request_iterator)
        return _translated_stream(call)


async def _translated_unary(call: Any) -> Any:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from exc
    return call


async def _translated_stream(responses: AsyncIterable[Any]) -> AsyncIterator[Any]:
    # A streaming call fails while it is read, so the translation wraps the reading.
    try:
        async for response in responses:
            yield response
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from exc


def error_from_rpc(exc: grpc.aio.AioRpcError) -> errors.LithoError:
    """Rebuild the domain error a peer raised (or the nearest one for a transport failure)."""
    cls = _ERROR_BY_STATUS.get(exc.code(), errors.LithoError)
    payload: dict[str, Any] = {}
    sent_by_peer = False
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_METADATA_KEY:
            sent_by_peer = True
            try:
                loaded = json.loads(value)
            except (ValueError, RecursionError):
                loaded = {}
            payload = loaded if isinstance(loaded, dict) else {}
    if cls is errors.ResourceExhausted and not sent_by_peer:
        # gRPC itself ran out of room (a message or metadata over its size
        # limits): a retry would fail the same way, so it must not read as 429.
        log.error("grpc transport limit exceeded", details=exc.details())
        return errors.LithoError("a gRPC size limit was exceeded")
    message = str(payload.get("detail") or exc.details() or exc.code().name)
    field_errors = [
        errors.FieldError(str(e.get("field", "")), str(e.get("message", "")))
        for e in list(payload.get("errors") or [])[: errors.MAX_FIELD_ERRORS]
        if isinstance(e, dict)
    ]
    if cls is errors.ResourceExhausted:
        return errors.ResourceExhausted(message, retry_after=float(payload.get("retryAfter", 1)))
    return cls(message, errors=field_errors)


async def open_channel(
    stack: AsyncExitStack, target: str, *, default_deadline: float
) -> grpc.aio.Channel:
    """An insecure, traced channel to ``target`` closed by ``stack``; calls of
    every shape default to a deadline and raise :class:`LithoError`."""
    # Ours come first (outermost): the tracing interceptors inside them see the
    # deadline, and the raw gRPC status rather than our translation of it.
    ours: list[grpc.aio.ClientInterceptor] = [
        cls(default_deadline) for cls in (_UnaryUnary, _StreamUnary, _UnaryStream, _StreamStream)
    ]
    channel = grpc.aio.insecure_channel(
        target, interceptors=[*ours, *telemetry.grpc_client_interceptors()],
        # Spread calls over every address the target names (the dev stack's
        # "ipv4:host:a,host:b" of several replicas, or a headless service's
        # DNS name); one address behaves as before.
        # A read or render whose peer went away is tried again (_UnaryUnary).
        options=[("grpc.lb_policy_name", "round_robin"),
                 # Answers may be larger than gRPC's 4 MiB default (a page of
                 # batch results with warnings); what is sent is bounded by
                 # each server's own receive limit.
                 ("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    stack.push_async_callback(channel.close)
    return channel


async def wait_healthy(
    channel: grpc.aio.Channel, *, service: str = "", timeout: float  # noqa: ASYNC109
) -> None:
    """Block until ``service`` on ``channel`` reports SERVING or ``timeout`` passes."""
    stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types are sync-only
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise errors.Unavailable(f"{service or 'server'} is not serving")
