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
- :class:`Security` (from ``LITHO_GRPC_*``) puts both ends under TLS, mutual
  TLS and a shared bearer token; ``Health/Check`` stays open to probes (and,
  with TLS, is also served in plaintext at ``LITHO_GRPC_HEALTH_ADDRESS``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from pydantic import ValidationError

from litho import errors, telemetry
from litho.config import GrpcSettings
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

#: The call a probe makes: never asked for the token.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
#: The metadata that carries the token.
TOKEN_METADATA_KEY = "authorization"


# ----------------------------------------------------------------- security


@dataclass(frozen=True)
class Security:
    """What protects a service's gRPC port and its channels: TLS (server and
    channel credentials), the name servers' certificates carry, and the
    shared token (sent by channels; ``accepted`` by servers)."""

    server_credentials: grpc.ServerCredentials | None = None
    channel_credentials: grpc.ChannelCredentials | None = None
    #: TLS is on but this service has no certificate to serve with.
    tls_without_certificate: bool = False
    server_name: str = ""
    #: When the certificate this service presents expires (Unix time).
    certificate_expires: float | None = None
    token: str | None = field(default=None, repr=False)
    accepted: tuple[bytes, ...] = field(default=(), repr=False)
    health_address: str = ""

    @classmethod
    def from_settings(cls, settings: GrpcSettings) -> Security:
        """Read the PEM files ``settings`` names (a missing or unreadable file
        is a :class:`ConfigError` naming its variable)."""
        token = settings.token.get_secret_value() if settings.token else None
        accepted = tuple(t.get_secret_value().encode()
                         for t in (settings.token, settings.previous_token) if t is not None)
        if not settings.tls:
            return cls(token=token, accepted=accepted, health_address=settings.health_address)
        ca = _pem(settings.tls_ca, "LITHO_GRPC_TLS_CA")
        cert = _pem(settings.tls_cert, "LITHO_GRPC_TLS_CERT")
        key = _pem(settings.tls_key, "LITHO_GRPC_TLS_KEY")
        server = None
        if cert is not None and key is not None:
            server = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=ca if settings.tls_client_auth else None,
                require_client_auth=settings.tls_client_auth)
        # Under mutual TLS a client presents its certificate; otherwise none.
        mutual = settings.tls_client_auth
        channel = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key if mutual else None,
            certificate_chain=cert if mutual else None)
        return cls(server_credentials=server, channel_credentials=channel,
                   tls_without_certificate=server is None, server_name=settings.tls_server_name,
                   certificate_expires=_expiry(cert, "LITHO_GRPC_TLS_CERT"),
                   token=token, accepted=accepted, health_address=settings.health_address)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Security:
        """:meth:`from_settings` of the ``LITHO_GRPC_*`` variables in ``environ``
        (for a launcher that gives its children their own environment)."""
        prefix = "LITHO_GRPC_"
        values = {name: environ[prefix + name.upper()] for name in GrpcSettings.model_fields
                  if prefix + name.upper() in environ}
        try:
            settings = GrpcSettings.model_validate(values)
        except ValidationError as exc:
            # Locations and messages only: the input may be a token.
            problems = "; ".join(
                ("LITHO_GRPC_" + "_".join(str(p) for p in e["loc"]).upper() + ": " if e["loc"]
                 else "") + str(e["msg"])
                for e in exc.errors(include_input=False, include_url=False))
            raise errors.ConfigError(f"invalid settings; set {problems}") from exc
        return cls.from_settings(settings)


#: Neither TLS nor a token: the embedded stack on loopback.
PLAINTEXT = Security()
#: Seconds between checks of whether the loaded certificate has expired.
CERTIFICATE_CHECK_SECONDS = 60.0


def _expiry(cert: bytes | None, variable: str) -> float | None:
    if cert is None:
        return None
    try:
        return x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    except ValueError as exc:
        raise errors.ConfigError(f"{variable} holds no PEM certificate: {exc}") from exc


async def _serve_until_the_certificate_expires(health: HealthServicer, expires: float) -> None:
    """Report NOT_SERVING once the certificate read at start-up has expired:
    every call to or from this process then fails its handshake, and a
    liveness probe restarts it, to read the renewed files (cert-manager
    renews them in place; a running process keeps what it read)."""
    # Checked every minute, not one long sleep: the wall clock may jump.
    while (left := expires - time.time()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(min(CERTIFICATE_CHECK_SECONDS, left))
    log.error("the gRPC certificate has expired: reporting NOT_SERVING so that the "
              "process is restarted and reads the renewed files (LITHO_GRPC_TLS_CERT)")
    await health.enter_graceful_shutdown()


def _pem(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read {variable} ({path}): {exc.strerror}") from exc


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


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse, with UNAUTHENTICATED, every call but a health ``Check`` that
    does not carry one of the ``accepted`` tokens as ``authorization: Bearer
    …``, without reading its request. ``Watch`` needs the token: a stream
    held open, its service name kept by the servicer, is not a probe's."""

    #: Seconds between two warnings about refused calls (the rest are counted).
    LOG_EVERY = 10.0

    def __init__(self, accepted: tuple[bytes, ...]) -> None:
        self._accepted = accepted
        self._logged_at = float("-inf")
        self._unlogged = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method == HEALTH_CHECK or self._carries_token(
                handler_call_details.invocation_metadata):
            return handler
        self._note_refusal(method)
        return _REFUSING

    def _carries_token(self, metadata: Any) -> bool:
        sent = b""
        for key, value in metadata or ():
            if key == TOKEN_METADATA_KEY and isinstance(value, str):
                sent = value.encode("utf-8", "replace")
        if not sent.startswith(b"Bearer "):
            return False
        offered = sent[len(b"Bearer "):]
        # Every accepted token is compared, in constant time.
        found = False
        for token in self._accepted:
            found |= hmac.compare_digest(offered, token)
        return found

    def _note_refusal(self, method: str) -> None:
        """A warning at most every :attr:`LOG_EVERY` seconds, with how many
        refusals went unlogged since: a caller cannot flood the logs."""
        now = time.monotonic()
        if now - self._logged_at < self.LOG_EVERY:
            self._unlogged += 1
            return
        log.warning("grpc calls without the internal token refused", method=method[:200],
                    also_refused_since_last_warning=self._unlogged)
        self._logged_at, self._unlogged = now, 0


async def _refuse(_requests: Any, context: Context) -> AsyncIterator[Any]:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                        "this call needs the internal token (LITHO_GRPC_TOKEN)")
    yield  # pragma: no cover - abort raises


#: Every refused call, whatever its shape: a request stream never read (no
#: deserializer), so an unauthenticated caller's message is neither parsed
#: nor held, and an answer of nothing but the status.
_REFUSING: Handler = grpc.stream_stream_rpc_method_handler(_refuse)


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


@dataclass(frozen=True)
class Serving:
    """A started server: its bound port, and the plaintext health server's
    (None without ``LITHO_GRPC_HEALTH_ADDRESS``)."""

    server: grpc.aio.Server
    port: int
    health_port: int | None = None


async def start_server(
    stack: AsyncExitStack,
    *,
    address: str,
    services: Iterable[tuple[Register, Any, str]],
    grace: float,
    max_receive_message_bytes: int | None = None,
    security: Security = PLAINTEXT,
    address_variable: str = "the listen address",
) -> Serving:
    """Start a server on ``address`` (``host:port``; port 0 picks a free one).

    ``services`` are ``(add_XServicer_to_server, servicer, full service name)``.
    ``max_receive_message_bytes`` raises (or lowers) gRPC's 4 MiB limit on a
    request message, for a service that takes uploads; None keeps gRPC's.
    ``security``: TLS (a secure port), the token every call but a health
    check must carry, and a plaintext health-only server. The stack stops it
    all gracefully.
    """
    if security.tls_without_certificate:
        raise errors.ConfigError("serving gRPC with LITHO_GRPC_TLS needs "
                                 "LITHO_GRPC_TLS_CERT and LITHO_GRPC_TLS_KEY")
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
    # Tracing comes before the error interceptor: its span covers the whole
    # call and records the status the error interceptor chose.
    guard: list[grpc.aio.ServerInterceptor] = (
        [TokenInterceptor(security.accepted)] if security.accepted else [])
    server = grpc.aio.server(
        # The token guard is outermost: a refused call starts no span (and
        # joins no trace its caller names).
        interceptors=[*guard, *telemetry.grpc_server_interceptors(), ErrorInterceptor()],
        # gRPC binds with SO_REUSEPORT by default: a second instance on a busy
        # port would start and silently take half the calls. Refuse instead.
        options=options)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = []
    for register, servicer, name in services:
        register(servicer, server)
        names.append(name)
    port = _bind(server, address, security.server_credentials, address_variable)
    probes: grpc.aio.Server | None = None
    health_port = None
    if security.health_address:
        # Probes that cannot speak TLS (Kubernetes' native gRPC probes) ask
        # here: the same health service, nothing else, in plaintext.
        probes = grpc.aio.server(options=_PROBE_SERVER_OPTIONS)
        probes.add_generic_rpc_handlers((_check_only(health),))
        health_port = _bind(probes, security.health_address, None, "LITHO_GRPC_HEALTH_ADDRESS")
    await server.start()
    if probes is not None:
        await probes.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    watchdog = None
    if security.certificate_expires is not None:
        watchdog = asyncio.create_task(_serve_until_the_certificate_expires(
            health, security.certificate_expires), name="grpc certificate expiry")

    async def stop() -> None:
        log.info("stopping grpc server", grace=grace)
        if watchdog is not None:
            watchdog.cancel()
        await health.enter_graceful_shutdown()
        await server.stop(grace)
        if probes is not None:
            await probes.stop(None)

    stack.push_async_callback(stop)
    log.info("grpc server started", address=address, port=port,
             tls=security.server_credentials is not None, token=bool(security.accepted),
             health_port=health_port)
    return Serving(server, port, health_port)


#: The plaintext probe server is open to anyone who reaches the port: tiny
#: requests, few streams at once, short connections.
_PROBE_SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 1024),
    ("grpc.max_concurrent_streams", 16),
    ("grpc.max_connection_age_ms", 60_000),
    ("grpc.max_connection_age_grace_ms", 5_000),
]


def _check_only(health: HealthServicer) -> grpc.GenericRpcHandler:
    """``grpc.health.v1.Health/Check`` of ``health`` and nothing else (no
    ``Watch``: a stream held open by anyone is not what a probe needs)."""
    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            health.Check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
    })


def _bind(server: grpc.aio.Server, address: str,
          credentials: grpc.ServerCredentials | None, variable: str) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc: "Failed to bind to address …"
        port = 0
        reason = str(exc)
    else:
        reason = "is it in use?"
    if port == 0:
        raise errors.ConfigError(f"cannot bind gRPC address {address!r} ({variable}): {reason}")
    return port


# ---------------------------------------------------------------- client side


class _Deadline:
    """Every call's defaults: a deadline, and the internal token."""

    def __init__(self, default_deadline: float, token: str | None = None) -> None:
        self._deadline = default_deadline
        self._token = None if token is None else f"Bearer {token}"

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if details.timeout is not None and self._token is None:
            return details
        metadata = details.metadata
        if self._token is not None:
            metadata = grpc.aio.Metadata(*(metadata or ()))
            metadata[TOKEN_METADATA_KEY] = self._token
        return grpc.aio.ClientCallDetails(
            details.method, self._deadline if details.timeout is None else details.timeout,
            metadata, details.credentials, details.wait_for_ready,
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
    stack: AsyncExitStack, target: str, *, default_deadline: float,
    security: Security = PLAINTEXT,
) -> grpc.aio.Channel:
    """A traced channel to ``target`` closed by ``stack``; calls of every
    shape default to a deadline, carry the token ``security`` has, and raise
    :class:`LithoError`. With TLS, the channel checks the server's
    certificate (and presents its own under mutual TLS)."""
    # Ours come first (outermost): the tracing interceptors inside them see the
    # deadline, and the raw gRPC status rather than our translation of it.
    ours: list[grpc.aio.ClientInterceptor] = [
        cls(default_deadline, security.token)
        for cls in (_UnaryUnary, _StreamUnary, _UnaryStream, _StreamStream)
    ]
    options: list[tuple[str, Any]] = [
        # Spread calls over every address the target names (the dev stack's
        # "ipv4:host:a,host:b" of several replicas, or a headless service's
        # DNS name); one address behaves as before.
        # A read or render whose peer went away is tried again (_UnaryUnary).
        ("grpc.lb_policy_name", "round_robin"),
        # Answers may be larger than gRPC's 4 MiB default (a page of batch
        # results with warnings); what is sent is bounded by each server's
        # own receive limit.
        ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    interceptors = [*ours, *telemetry.grpc_client_interceptors()]
    channel = raw_channel(target, security, options=options, interceptors=interceptors)
    stack.push_async_callback(channel.close)
    return channel


def raw_channel(target: str, security: Security = PLAINTEXT, *,
                options: list[tuple[str, Any]] | None = None,
                interceptors: list[grpc.aio.ClientInterceptor] | None = None,
                ) -> grpc.aio.Channel:
    """A plain ``grpc.aio`` channel under ``security``'s TLS (no token, no
    deadline): for health checks, and for callers that close it themselves."""
    options = list(options or [])
    if security.channel_credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if security.server_name:
        options.append(("grpc.ssl_target_name_override", security.server_name))
    return grpc.aio.secure_channel(target, security.channel_credentials, options=options,
                                   interceptors=interceptors)


async def wait_healthy(
    channel: grpc.aio.Channel, *, service: str = "", timeout: float  # noqa: ASYNC109
) -> None:
    """Block until ``service`` on ``channel`` reports SERVING or ``timeout`` passes."""
    stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types are sync-only
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise errors.Unavailable(f"{service or 'server'} is not serving")
