"""Every JetStream stream Litho uses, declared once with its retention.

| stream         | subjects            | retention  | a message is kept                      |
| -------------- | ------------------- | ---------- | -------------------------------------- |
| LITHO_EVENTS   | litho.events.v1.>   | limits     | 7 days; every consumer can read it     |
| LITHO_JOBS     | litho.jobs.v1.>     | work queue | until one worker acks (or terms) it    |
| LITHO_COUNTS   | litho.counts.v1.>   | work queue | until the counter acks it              |

Both are file-backed and de-duplicate by ``Nats-Msg-Id`` inside their
duplicate window. The jobs stream is bounded and discards *new* messages when
full, so a full queue refuses work at publish time instead of silently
dropping the oldest job.

:func:`ensure_streams` creates what is missing and updates what drifted; it is
safe to call from every service at start-up. Changing a stream's retention is
refused by the server; that error is raised as a :class:`~litho.errors.ConfigError`
naming the stream.

Replicas (``LITHO_NATS_STREAM_REPLICAS``, passed as ``replicas``) are not part
of a :class:`StreamSpec`: every stream gets the same number, that of the
deployment's NATS. Raising them on an existing stream is an update NATS makes
in a cluster; more replicas than the cluster (or a single server) has is a
:class:`~litho.errors.ConfigError` naming that variable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from litho import errors
from litho.logs import get_logger

log = get_logger(__name__)

DAY = 24 * 3600.0

EVENTS_STREAM = "LITHO_EVENTS"
EVENTS_SUBJECTS = ("litho.events.v1.>",)
JOBS_STREAM = "LITHO_JOBS"
JOBS_SUBJECTS = ("litho.jobs.v1.>",)
COUNTS_STREAM = "LITHO_COUNTS"
COUNTS_SUBJECTS = ("litho.counts.v1.>",)
#: One experiment event to count (``litho.events.v1.ExperimentCount``).
EXPERIMENT_COUNT_SUBJECT = "litho.counts.v1.experiment"
#: Not a stream (core NATS, nothing kept, no stream may capture it): the id
#: of a binding whose document changed, so that every renderer replica drops
#: what it memoised of it. A replica that was disconnected forgets everything.
BINDING_CHANGED_SUBJECT = "litho.binding.v1.changed"
#: Not a stream either: ``"{tenantHandle}/{slug}"`` of an experiment whose
#: document changed in a way ``ResolveExperiment`` would answer differently
#: (the gateway's memo keys), so every gateway replica drops what it kept.
EXPERIMENT_CHANGED_SUBJECT = "litho.experiment.v1.changed"
#: Not a stream either: the public id (``kid_…``) of an API key just deleted,
#: so that every gateway replica stops accepting it at once (the key cache's
#: time to live bounds what a lost note leaves behind).
KEY_REVOKED_SUBJECT = "litho.key.v1.revoked"


@dataclass(frozen=True)
class StreamSpec:
    """One stream's declaration; ``-1`` means unlimited, as in NATS."""

    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy
    max_age: float = 7 * DAY
    #: Seconds in which a second publish with the same ``Nats-Msg-Id`` is dropped.
    duplicate_window: float = 120.0
    max_msgs: int = -1
    max_bytes: int = -1
    discard: DiscardPolicy = DiscardPolicy.OLD
    storage: StorageType = StorageType.FILE
    description: str = field(default="", compare=False)

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description or None,
            subjects=list(self.subjects),
            retention=self.retention,
            max_age=self.max_age,
            duplicate_window=self.duplicate_window,
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            discard=self.discard,
            storage=self.storage,
        )


def events_stream(
    *, max_age: float = 7 * DAY, duplicate_window: float = 120.0, max_bytes: int = -1
) -> StreamSpec:
    """Domain events (``render.completed``, …): every consumer reads every event."""
    return StreamSpec(
        name=EVENTS_STREAM,
        subjects=EVENTS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        max_age=max_age,
        duplicate_window=duplicate_window,
        max_bytes=max_bytes,
        description="Litho domain events; proto payloads from litho.events.v1",
    )


def jobs_stream(
    *,
    max_age: float = 7 * DAY,
    duplicate_window: float = 120.0,
    max_msgs: int = 100_000,
    max_bytes: int = 256 * 1024**2,
) -> StreamSpec:
    """Work to be done once (batch renders, deliveries): each job goes to one worker."""
    return StreamSpec(
        name=JOBS_STREAM,
        subjects=JOBS_SUBJECTS,
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=max_age,
        duplicate_window=duplicate_window,
        max_msgs=max_msgs,
        max_bytes=max_bytes,
        discard=DiscardPolicy.NEW,
        description="Litho jobs; each is removed once a worker acks it",
    )


def counts_stream(
    *,
    max_age: float = 7 * DAY,
    max_msgs: int = 10_000_000,
    max_bytes: int = 1024**3,
) -> StreamSpec:
    """Experiment events to count (views, clicks, conversions): many small
    messages at the rate of an image's views, kept until the counter has
    them. Apart from the jobs so that a counter that falls behind never
    fills the batch queue; when this one is full a view is served and not
    counted (logged by the publisher), never refused."""
    return StreamSpec(
        name=COUNTS_STREAM,
        subjects=COUNTS_SUBJECTS,
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=max_age,
        duplicate_window=120.0,
        max_msgs=max_msgs,
        max_bytes=max_bytes,
        discard=DiscardPolicy.NEW,
        description="Litho experiment events to count; each is removed once counted",
    )


def default_streams() -> tuple[StreamSpec, ...]:
    return (events_stream(), jobs_stream(), counts_stream())


def _drifted(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    names = ("subjects", "retention", "max_age", "duplicate_window", "max_msgs",
             "max_bytes", "discard", "storage", "description", "num_replicas")
    return [n for n in names if getattr(current, n) != getattr(wanted, n)]


#: The setting ``replicas`` comes from, named when NATS refuses it.
REPLICAS_SETTING = "LITHO_NATS_STREAM_REPLICAS"
#: NATS' codes for "replicas > 1 not supported in non-clustered mode" and
#: "insufficient resources" / "no suitable peers for placement".
_REPLICA_ERROR_CODES = frozenset({10074, 10023, 10005})


def _replicas_refused(spec: StreamSpec, replicas: int | None, exc: APIError
                      ) -> errors.ConfigError | None:
    """The error that names the setting, when ``exc`` is NATS refusing ``replicas``."""
    if replicas is None or replicas <= 1:
        return None
    if exc.err_code not in _REPLICA_ERROR_CODES and "replica" not in (exc.description or ""):
        return None
    return errors.ConfigError(
        f"NATS cannot keep stream {spec.name} on {replicas} servers ({exc.description}): "
        f"set {REPLICAS_SETTING} to at most the number of servers in the NATS cluster "
        f"(1 for a single server)")


async def ensure_streams(
    js: JetStreamContext, specs: Iterable[StreamSpec] | None = None, *,
    replicas: int | None = None,
) -> None:
    """Create each stream, or update it if its config drifted from ``specs``
    (by default :func:`default_streams`).

    ``replicas`` (``LITHO_NATS_STREAM_REPLICAS``): how many servers keep each
    stream; None leaves an existing stream's replicas as they are (and
    creates a new one with the server's default, 1)."""
    for spec in default_streams() if specs is None else specs:
        wanted = spec.config()
        wanted.num_replicas = replicas
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            try:
                await js.add_stream(wanted)
            except APIError as exc:
                refused = _replicas_refused(spec, replicas, exc)
                if refused is not None:
                    raise refused from exc
                raise
            log.info("stream created", stream=spec.name, retention=spec.retention.value,
                     replicas=replicas or 1)
            continue
        if replicas is None:
            # Not ours to change: an update without it would reset it to 1.
            wanted.num_replicas = info.config.num_replicas
        changed = _drifted(info.config, wanted)
        if not changed:
            continue
        try:
            await js.update_stream(wanted)
        except APIError as exc:
            refused = (_replicas_refused(spec, replicas, exc)
                       if "num_replicas" in changed else None)
            if refused is not None:
                raise refused from exc
            raise errors.ConfigError(
                f"stream {spec.name} exists with a different {', '.join(changed)} "
                f"that NATS cannot change in place ({exc.description}); "
                f"migrate or delete the stream"
            ) from exc
        log.info("stream updated", stream=spec.name, changed=changed)
