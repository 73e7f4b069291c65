"""Composition root of the experiment service: builds everything and serves;
``litho.service`` unwinds it in reverse order (the gRPC server first, then
the bandit, the counter consumer, its aggregator and winner checks, NATS and
the document store)."""

from __future__ import annotations

from functools import partial

from litho import lifecycle, messaging
from litho.experiment.v1 import experiment_pb2, experiment_pb2_grpc
from litho.logs import get_logger
from litho.service import Host
from services.experiment import _consumer
from services.experiment._adapters import GrpcTemplateCatalog
from services.experiment._bandit import Bandit
from services.experiment._counter import Aggregator, Counter
from services.experiment._events import NatsExperimentEvents
from services.experiment._experiments import Experiments
from services.experiment._model import Limits
from services.experiment._servicer import ExperimentServicer
from services.experiment._serving import Serving
from services.experiment._settings import ExperimentSettings
from services.experiment._store import ExperimentStore
from services.experiment._summaries import Summaries
from services.experiment._winner import WinnerWatch

log = get_logger(__name__)
SERVICE_NAME = experiment_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name
SETTINGS = ExperimentSettings


def limits(settings: ExperimentSettings) -> Limits:
    return Limits(
        max_per_tenant=settings.experiment_max_per_tenant,
        max_variants=settings.experiment_max_variants,
        max_variables_bytes=settings.experiment_max_variables_bytes,
        max_total_variables_bytes=settings.experiment_max_total_variables_bytes,
        stats_draws=settings.experiment_stats_draws,
        max_epochs=settings.experiment_max_epochs,
        json_limits=settings.json_limits())


async def build(host: Host[ExperimentSettings]) -> None:
    settings, stack = host.settings, host.stack
    docstore = await host.document_store()
    store = ExperimentStore(docstore)
    await store.prepare()

    nc = await host.nats()
    js = nc.jetstream()
    publisher = messaging.Publisher(js)
    events = NatsExperimentEvents(publisher, nc)
    templates = GrpcTemplateCatalog(await host.channel("template"))
    summaries = Summaries()
    handle_key = settings.experiment_handle_key.encode()
    if not handle_key:
        log.warning("LITHO_EXPERIMENT_HANDLE_KEY is not set: tenants' public handles are "
                    "plain hashes of their ids, which anyone can compute from a tenant's name")
    experiments = Experiments(store, templates, limits=limits(settings), events=events,
                              summaries=summaries, handle_key=handle_key)

    winners = WinnerWatch(store, events, every=settings.experiment_winner_check_seconds,
                          draws=settings.experiment_stats_draws, summaries=summaries)
    stack.push_async_callback(winners.close)
    counter = Counter(docstore, store, _consumer.NatsAckFloor(nc),
                      floor_seconds=settings.experiment_counter_floor_seconds,
                      on_counted=winners.touched)
    aggregator = await stack.enter_async_context(Aggregator(
        counter.apply, interval=settings.experiment_count_flush_seconds,
        max_events=settings.experiment_count_flush_events).running())
    await stack.enter_async_context(_consumer.consumer(
        nc, _consumer.count_handler(aggregator), _consumer.options(settings),
        publisher).running())

    bandit = Bandit(store, events, interval=settings.experiment_bandit_interval,
                    min_weight=settings.experiment_bandit_min_weight,
                    draws=settings.experiment_stats_draws,
                    max_epochs=settings.experiment_max_epochs,
                    epoch_delay=settings.experiment_epoch_delay)
    await stack.enter_async_context(lifecycle.periodic(
        partial(_bandit_round, bandit), settings.experiment_bandit_interval,
        name="experiment bandit"))

    await host.serve_grpc([(experiment_pb2_grpc.add_ExperimentServiceServicer_to_server,
                            ExperimentServicer(experiments, Serving(store, events)),
                            SERVICE_NAME)])


async def _bandit_round(bandit: Bandit) -> None:
    reweighted = await bandit.round()
    if reweighted:
        log.info("bandit round", reweighted=reweighted)
