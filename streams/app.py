"""The Faust app: input topics, the batching agent, and the HTTP endpoints.

One agent reads all four input topics as raw bytes, takes batches without acking, runs
them through :class:`streams.pipeline.BatchPipeline` (state, outputs delivered and
confirmed), and only then acks the batch's events so that Faust may commit them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.web import Request, Response, View
from faust.web import drivers as web_drivers
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential_jitter

from models.registry import ModelRegistry
from portrait import metrics
from portrait.config import Settings
from portrait.metrics import WithCompanion
from processors.layout import REDIS_SETTINGS
from state.answers import StaleOffsets
from state.store import RedisProfileStore
from state.stores import store_for
from streams.kafka import ConfirmedProducer
from streams.lanes import LANES, Urgency, consumer_group, lanes_for
from streams.offsets import Ledger
from streams.pipeline import BatchPipeline
from streams.reading import GatedRunner, ModelRunner, ReadAhead, model_runner
from streams.records import InputRecord, OutputRecord
from streams.trends import emit_closed_windows

log = logging.getLogger("portrait.worker")


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer thread with a configurable fetch wait.

    Faust hard-codes ``fetch_max_wait_ms=1500``. A broker that holds every fetch for the
    full wait (the local broker does) then delays each record by up to that long: the
    prompt latency was ≈ 0.5 s at the median. ``PORTRAIT_FETCH_MAX_WAIT_MS`` bounds it.
    """

    fetch_max_wait_ms = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read when the fetcher starts
        return consumer


def _transport_class(fetch_max_wait_ms: int) -> type:
    thread = type("ConsumerThread", (_ConsumerThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})

    class Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
        def _new_consumer_thread(self) -> Any:
            return thread(self, loop=self.loop, beacon=self.beacon)

        async def perform_seek(self) -> None:
            """Faust seeks the assigned partitions to their committed offsets; then
            the app's ``after_seek`` may seek some back (``streams/offsets.py``)."""
            await super().perform_seek()
            after = getattr(self.app, "after_seek", None)
            if after is not None:
                await after(self)

    return type("Transport", (faust_aiokafka.Transport,), {"Consumer": Consumer})


class _App(faust.App):  # type: ignore[misc]
    """The Faust app, with the consumer transport above, and a web server that serves
    only Portrait's own routes: Faust's built-in views (its index, router, table,
    statistics and graph pages) tell anyone who asks about the consumer and its
    partitions, and none of them is needed."""

    fetch_max_wait_ms = 1500
    after_seek: Callable[[Any], Awaitable[None]] | None = None

    def _new_transport(self) -> Any:
        transport = _transport_class(self.fetch_max_wait_ms)
        return transport(self.conf.broker_consumer, self)

    def _new_web(self) -> Any:
        driver = web_drivers.by_url(self.conf.web)
        quiet = type(
            "PortraitWeb",
            (driver,),
            {
                "default_blueprints": (),
                "production_blueprints": (),
                "debug_blueprints": (),
                "optional_blueprints": (),
            },
        )
        return quiet(self)


def _observe_lag(app: faust.App, partitions: set[Any]) -> None:
    """``portrait_consumer_lag_messages``: high-water mark minus committed offset, per
    assigned partition, every 5 s — also while no batch flows, when lag matters most
    (Faust commits acked offsets every few seconds: up to one interval of processed
    events is included)."""
    consumer = app.consumer
    for tp in partitions:
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # no fetch position yet: nothing to report
            continue
        committed = getattr(consumer, "_committed_offset", {}).get(tp)
        if highwater is not None and committed is not None:
            lag = max(highwater - committed, 0)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)


def _rejoin(app: faust.App) -> None:
    """Ask the lane's consumer to rejoin its group (a rebalance: the partitions are
    claimed again, from the positions Redis holds)."""
    thread = cast(Any, app.consumer)._thread
    coordinator = thread._ensure_consumer()._coordinator
    thread.thread_loop.call_soon_threadsafe(coordinator.request_rejoin)


def _seek_to_state(settings: Settings, ledger: Ledger) -> Callable[[Any], Awaitable[None]]:
    """The ``after_seek`` of a lane: claim its assigned partitions in Redis and start
    those Redis is behind on from Redis's position."""
    store: list[RedisProfileStore] = []

    async def after_seek(consumer: Any) -> None:
        committed = {
            (tp.topic, tp.partition): consumer._read_offset.get(tp)  # committed, just sought
            for tp in consumer.assignment()
        }
        if not store:
            store.append(store_for(settings))
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(60), wait=wait_exponential_jitter(0.2, 5.0), reraise=True
        ):
            with attempt:
                generation = consumer.app.consumer_generation_id
                behind = await ledger.claim(store[0], committed, generation)
        for (topic, partition), offset in behind.items():
            await consumer.seek(TP(topic, partition), offset)

    return after_seek


def _record(message: Any) -> InputRecord:
    """A Faust message as the pipeline's input record (timestamp in ms)."""
    return InputRecord(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        message.timestamp * 1000 if message.timestamp else None,
    )


def _faust_app(settings: Settings, lane: str, web: bool, ledger: Ledger) -> faust.App:
    _App.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app = _App(
        consumer_group(settings.consumer_group, lane),
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.effective_session_timeout,
        broker_heartbeat_interval=min(3.0, settings.effective_session_timeout / 3),
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=web,
        datadir=str(settings.data_dir / lane),
        web_port=settings.http_port,
        web_bind=settings.bind_host,
        web_in_thread=False,
        stream_buffer_maxsize=max(4 * settings.batch_max_events, 4096),
        broker_max_poll_records=settings.batch_max_events,
        producer_acks=-1,
        broker_credentials=settings.faust_credentials(),
    )
    app.after_seek = _seek_to_state(settings, ledger)
    return app


@dataclass
class Lane:
    """One lane's pipeline and producer (``streams/lanes.py``)."""

    pipeline: BatchPipeline
    producer: ConfirmedProducer
    store: RedisProfileStore

    async def deliver(self, outputs: Sequence[OutputRecord]) -> None:
        """Deliver a batch's outputs once its state is as durable as configured."""
        await self.store.make_durable()
        await self.producer.deliver(outputs)


@dataclass
class Clients:
    """What the agents, timers and views share: opened by a start-up task."""

    store: RedisProfileStore | None = None
    producer: ConfirmedProducer | None = None
    lanes: dict[str, Lane] = field(default_factory=dict)
    urgency: Urgency = field(default_factory=Urgency)

    @property
    def ready(self) -> bool:
        """Every lane's pipeline is built and its models are loaded."""
        return bool(self.lanes)


@dataclass(frozen=True)
class Companion:
    """The process that runs a worker's other lane: its readiness URL, and this
    process's metrics merged with its own (``portrait.metrics.WithCompanion``)."""

    readyz: str
    metrics: WithCompanion


def create_apps(
    settings: Settings, runner: ModelRunner | None = None, companion: Companion | None = None
) -> list[faust.App]:
    """The Faust apps of a worker, one per lane, each with its own consumer (nothing
    connects until they start); the first serves HTTP and runs the timers. ``runner``:
    where the models read (default: a new one); ``companion``: the other lane's process."""
    lanes = lanes_for(settings.lane)
    ledgers = {
        name: Ledger(settings.redis_key_prefix, consumer_group(settings.consumer_group, name))
        for name in lanes
    }
    apps = {
        name: _faust_app(settings, name, index == 0, ledgers[name])
        for index, name in enumerate(lanes)
    }
    app = next(iter(apps.values()))
    clients = Clients()
    given = runner

    @app.task  # type: ignore[untyped-decorator]
    async def open_clients() -> None:
        clients.store = store_for(settings)
        untuned = await clients.store.untuned_settings()
        if untuned:
            log.warning(
                "Redis runs without the settings the state layout is sized for: "
                "per-event cost is higher (README, Speed)",
                extra={"settings": untuned, "wanted": REDIS_SETTINGS},
            )
        clients.producer = ConfirmedProducer(settings)
        runner = given or model_runner(settings)  # one model process, shared by the lanes
        opened: dict[str, Lane] = {}
        for name in lanes:
            bulk = name == "bulk"
            store = clients.store if not opened else store_for(settings)
            registry = ModelRegistry(store.redis, settings.redis_key_prefix)
            pipeline = BatchPipeline.for_settings(
                settings,
                store,
                registry,
                runner=GatedRunner(runner) if bulk and len(lanes) > 1 else runner,
                pause=clients.urgency.wait_quiet if bulk else None,
            )
            pipeline.ledger = ledgers[name]
            producer = clients.producer if not opened else ConfirmedProducer(settings)
            opened[name] = Lane(pipeline, producer, store)
        await asyncio.wrap_future(runner.start())  # before the first batch waits on it
        clients.lanes = opened

    @app.on_before_shutdown.connect  # type: ignore[untyped-decorator]
    def close_models(_app: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        for lane in clients.lanes.values():
            lane.pipeline.close()

    for name, lane_app in apps.items():
        _add_agent(lane_app, settings, clients, name)
    _add_timers(list(apps.values()), settings, clients)
    _add_watch(apps, clients)
    _add_views(list(apps.values()), clients, settings.metrics_port is None, companion)
    return list(apps.values())


def _add_agent(app: faust.App, settings: Settings, clients: Clients, lane: str) -> None:
    realtime = lane == "realtime"
    inputs = app.topic(
        *(settings.topic(name) for name in LANES[lane]),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        internal=False,
    )
    batch_max = settings.realtime_batch_max_events if realtime else settings.batch_max_events

    @app.agent(inputs, name=f"portrait-{lane}")  # type: ignore[untyped-decorator]
    async def process(stream: Any) -> None:
        # Two stages: this loop takes a batch and hands it to the models at once; the
        # applier applies batches in arrival order and acknowledges them. So the models
        # read the next batch while the one before it is applied and delivered. A
        # realtime batch is urgent from the moment it is taken until it is acknowledged.
        batches: asyncio.Queue[tuple[list[Any], ReadAhead]] = asyncio.Queue(maxsize=1)

        async def apply_in_order() -> None:
            while True:
                events, ahead = await batches.get()
                chosen = clients.lanes[lane]
                ledger = chosen.pipeline.ledger
                try:
                    if ledger is not None and ledger.rewinding:  # until the next claim
                        ahead.cancel()
                        _rejoin(app)
                    else:
                        await _run(app, chosen, ahead)
                    for event in events:
                        await stream.ack(event)
                finally:
                    if realtime:
                        clients.urgency.end()
                metrics.READY.set(1)

        applier = asyncio.ensure_future(apply_in_order())
        try:
            async for events in stream.noack_take(
                batch_max, within=settings.batch_max_wait_seconds
            ):
                while not clients.ready:  # the clients open in a task at start-up
                    await app.sleep(0.05)
                if realtime:
                    clients.urgency.begin()
                ahead = clients.lanes[lane].pipeline.read_ahead(
                    [_record(e.message) for e in events]
                )
                put = asyncio.ensure_future(batches.put((events, ahead)))
                await asyncio.wait([put, applier], return_when=asyncio.FIRST_COMPLETED)
                if applier.done():  # it ends only by failing: the agent fails with it
                    put.cancel()
                    ahead.cancel()
                    applier.result()
        finally:
            applier.cancel()


async def _run(app: faust.App, lane: Lane, ahead: ReadAhead) -> None:
    """Run a batch; when Redis does not hold the positions it should, rewind and rejoin
    (its events are acknowledged all the same: the claim after the rejoin starts their
    partitions from Redis's positions)."""
    try:
        await lane.pipeline.run(ahead.records, lane.deliver, ahead)
    except StaleOffsets as stale:
        if lane.pipeline.ledger is None:
            raise
        await lane.pipeline.ledger.rewind(lane.store, ahead.records, stale)
        _rejoin(app)


def _add_timers(apps: list[faust.App], settings: Settings, clients: Clients) -> None:
    app = apps[0]

    @app.timer(settings.trends_check_seconds)  # type: ignore[untyped-decorator]
    async def emit_trends() -> None:
        if clients.ready and clients.store and clients.producer:
            try:
                await emit_closed_windows(clients.store.redis, settings, clients.producer.deliver)
            except Exception:  # the next tick retries; a timer must not die
                log.exception("trends window emission failed")

    @app.timer(5.0)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        for lane_app in apps:  # each lane has its own consumer
            if lane_app._consumer is not None:
                _observe_lag(lane_app, set(lane_app.consumer.assignment()))


def _add_watch(apps: dict[str, faust.App], clients: Clients) -> None:
    """Every second, each lane checks that Redis still holds the positions it
    acknowledged; if not, it rewinds and rejoins (``streams/offsets.py``)."""

    @next(iter(apps.values())).timer(1.0)  # type: ignore[untyped-decorator]
    async def watch_positions() -> None:
        for name, lane in list(clients.lanes.items()):
            ledger = lane.pipeline.ledger
            try:
                if ledger is not None and await ledger.watch(lane.store):
                    _rejoin(apps[name])
            except Exception:  # Redis away: the batches retry; the next tick checks
                log.debug("positions check failed", exc_info=True)


def _add_views(
    apps: list[faust.App], clients: Clients, metrics_here: bool, companion: Companion | None
) -> None:
    app = apps[0]

    if metrics_here:  # else on PORTRAIT_METRICS_PORT alone (streams/worker.py)

        @app.page("/metrics")  # type: ignore[untyped-decorator]
        async def metrics_view(view: View, _request: Request) -> Response:
            if companion is None:
                body = generate_latest()
            else:  # its companion's scrape must not hold this lane's event loop
                body = await asyncio.to_thread(generate_latest, companion.metrics)  # type: ignore[arg-type]
            return view.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/livez")  # type: ignore[untyped-decorator]
    async def livez(view: View, _request: Request) -> Response:
        return view.json({"status": "ok"})

    @app.page("/readyz")  # type: ignore[untyped-decorator]
    async def readyz(view: View, _request: Request) -> Response:
        checks = {"redis": False, "durability": False, "kafka": False, "partitions": False}
        if clients.store is not None:
            try:
                checks["redis"] = await clients.store.ping()
                checks["durability"] = await clients.store.durable()
            except Exception:  # a probe reports, it does not raise
                checks["redis"] = False
        consumers = [a.consumer for a in apps if a._consumer is not None]
        if len(consumers) == len(apps):  # every lane's consumer, with its partitions
            checks["kafka"] = True
            checks["partitions"] = all(bool(c.assignment()) for c in consumers)
        if companion is not None:
            checks["bulk_lane"] = await _answers(companion.readyz)
        ready = all(checks.values())
        metrics.READY.set(1 if ready else 0)
        return view.json(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status=200 if ready else 503,
        )


async def _answers(url: str) -> bool:
    """Whether ``url`` (a readiness probe on this host) answers 200 within a second."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session,
            session.get(url) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
