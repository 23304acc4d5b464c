"""The Kafka shell around the pure core (DESIGN §4).

- `positions`: a consumer group. On assignment a partition is paused and rebuilt from its
  beginning (the compacted topic is the changelog; every version is read, the latest wins),
  together with the same partition of `risk-actions` (the last action published per
  position, so timers resume and unchanged positions are not re-published); then the group
  consumer continues from where the rebuild ended. Revocation drops the partition's state.
- `market-ticks`: read in full by every instance (a broadcast table), from a look-back
  window, caught up before the group is joined.
- Output: actions are produced to the positions partition of their position
  (co-partitioned), acks=all, idempotent where the broker supports it. Offsets of a batch are
  committed only after every record it caused is acknowledged (at-least-once).
- Bad records go to `risk-dlq` with headers; nothing stops the loop.
- A record batch that cannot be read at all (a codec not installed, a bad CRC, a corrupt
  payload) holds its partition at that batch, never skipped, and says so: `/readyz`, the
  `stream_risk_unreadable_batches_total` counter, one log line per partition a minute
  (`stream_risk.kafka.fetch`); the other partitions go on.
- Output is compressed with `compression` (zstd by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from prometheus_client import CollectorRegistry

from stream_risk import alerting
from stream_risk.engine import Engine, EngineConfig, PositionEvent, StepResult, TickEvent
from stream_risk.engine.events import Event, Lineage, Output, Rejected
from stream_risk.kafka import topics as topic_admin
from stream_risk.kafka.clients import Clients
from stream_risk.kafka.codec import (
    DeadLetter,
    decode_action,
    decode_config,
    decode_position,
    decode_tick,
)
from stream_risk.kafka.fetch import GuardedFetch, UnreadableTracker, missing_codecs
from stream_risk.kafka.reader import read_to_end
from stream_risk.metrics import EngineView, Metrics
from stream_risk.settings import COMPRESSION_CODECS, DEFAULT_COMPRESSION, ConfigError
from stream_risk.state import SidecarState
from stream_risk.webhook import WebhookSender

log = logging.getLogger("stream_risk.engine")


#: A partition behind its high watermark with no progress for this long is stalled.
STALL_AFTER_S = 10.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


#: `getmany` timeout of a read to the end. A read ends when a fetch has told each
#: partition's high watermark and the position reached it; a getmany with nothing to
#: return waits out its whole timeout, so a long one only delays the end (by 200 ms per
#: read of an empty topic at the reader's default).
_READ_POLL_MS = 20

#: Collector thresholds while a processor runs (CPython's default: 700, 10, 10).
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Collect garbage the way a stream processor allocates it (docs/design.md D8).

    Every batch allocates tens of thousands of short-lived objects (records, events, action
    dicts) that reference counting frees when the batch is done. With CPython's default
    thresholds the collector runs every 700 allocations, promotes the live batch to the old
    generations and then re-scans the whole table there: a third of the CPU at 40k ticks/s,
    and full-heap pauses that grow with the table. A young threshold above a batch's
    allocations lets them die first; the table itself is frozen after each rebuild
    (`gc.freeze`), so full collections never walk it. Process-wide: it is the engine's
    process (`ProcessorConfig.tune_gc=False` leaves the collector alone).
    """
    gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def _gc_paused(active: bool) -> Iterator[None]:
    """No collections while a rebuild loads the table: it only adds long-lived objects."""
    if not active or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class ProcessorConfig:
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "stream-risk"
    client_id: str = "stream-risk"
    positions_topic: str = "positions"
    ticks_topic: str = "market-ticks"
    actions_topic: str = "risk-actions"
    dlq_topic: str = "risk-dlq"
    #: Live limits (docs/design.md D9): read in full by every instance. None: not used.
    config_topic: str | None = "risk-config"
    #: Alerts (fired / cleared). None: not published.
    alerts_topic: str | None = "risk-alerts"
    create_topics: bool = False
    #: "auto": idempotent producer if the broker supports it; "on" / "off" force it.
    idempotence: str = "auto"
    tick_lookback_ms: int = 300_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    fetch_max_records: int = 10_000
    #: How long the broker may hold a fetch when there is nothing new. Tansu does not wake a
    #: waiting fetch when records arrive (measured: p50 tick -> action 90 ms at the 500 ms
    #: default, 15 ms at 10 ms), so keep it short; it costs one small request per wait.
    fetch_max_wait_ms: int = 10
    linger_ms: int = 2
    #: Compression of every batch the engine produces (actions, dead letters, alerts):
    #: none, gzip, snappy, lz4 or zstd (docs/operations.md "Compression").
    compression: str = DEFAULT_COMPRESSION
    #: The producer's max_request_size (aiokafka's default). A dead letter that would not
    #: fit one request goes out with its value cut to `DLQ_VALUE_KEEP` bytes.
    max_request_size: int = 1 << 20
    health_interval_s: float = 2.0
    #: Tune the garbage collector for a stream processor (`tune_gc`): on by default.
    tune_gc: bool = True
    #: POST every alert to this URL (None: risk-alerts only).
    alert_webhook: str | None = None
    alert_webhook_timeout_s: float = 2.0
    alert_webhook_attempts: int = 3
    #: DLQ records in the last minute above which a `dlq_rate` alert fires.
    alert_dlq_per_minute: float = 10.0
    #: How often exposure limits, stale markets and the DLQ rate are checked.
    alert_interval_s: float = 0.25
    #: Per-asset exposure gauges in /metrics for at most this many assets (largest gross).
    exposure_metrics_assets: int = 50
    #: Extra aiokafka client settings (security: TLS, SASL).
    client_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def topics(self) -> list[str]:
        return [self.positions_topic, self.ticks_topic, self.actions_topic, self.dlq_topic]

    @property
    def control_topics(self) -> list[str]:
        """risk-config and risk-alerts: used when present (created under create_topics)."""
        return [t for t in (self.config_topic, self.alerts_topic) if t]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, proc: StreamProcessor) -> None:
        self.proc = proc

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.proc._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.proc._on_assigned(assigned)


class StreamProcessor(SidecarState):
    """positions ⋈ market-ticks -> risk-actions, around one `Engine`."""

    def __init__(
        self,
        config: ProcessorConfig,
        engine_config: EngineConfig | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = config
        self.engine = Engine(engine_config)
        self.metrics = metrics or Metrics.for_registry(CollectorRegistry())
        self.metrics.state.bind(self.metrics_view)  # read when /metrics is scraped
        self.clients = Clients(
            config.bootstrap_servers,
            config.client_id,
            config.client_kwargs,
            config.fetch_max_records,
            config.fetch_max_wait_ms,
        )
        self._producer: AIOKafkaProducer | None = None
        self._ticks: AIOKafkaConsumer | None = None
        self._positions: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._pending: set[int] = set()  # assigned positions partitions awaiting rebuild
        self._live: dict[int, int] = {}  # rebuilt partition -> next offset to process
        self._held: dict[int, int] = {}  # revoked, state kept until the next assignment
        self._tick_next: dict[int, int] = {}  # ticks partition -> next offset to process
        self._config: AIOKafkaConsumer | None = None
        self._config_topic: str | None = None  # set when the topic exists
        self._alerts_topic: str | None = None
        self._config_caught_up = False
        self.alerts = alerting.AlertTracker()
        self.recent_alerts: deque[alerting.Alert] = deque(maxlen=100)
        self._webhook: WebhookSender | None = None
        self._dlq_times: deque[float] = deque()
        #: risk-config records dead-lettered (stream_risk_config_changes_total{rejected}).
        self._config_rejected = 0
        #: Assets whose positions wait, and for what (as last logged and exported).
        self._waiting: dict[str, tuple[str, ...]] = {}
        self._alert_sends: set[asyncio.Future[None]] = set()
        self._joined = False
        self._ticks_caught_up = False
        self._connected = False
        self._missing_topics: list[str] = []
        self._send_failing = False
        self._co_partitioned = True
        self._idempotent = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}
        self._stalled: list[str] = []
        self._published_children: dict[str, Any] = {}
        #: Partitions held at a record batch that cannot be read (all consumers).
        self.unreadable = UnreadableTracker(self.metrics)
        self._guards: dict[str, GuardedFetch] = {}
        self._fetch_errors_logged: dict[str, float] = {}

    def _guard(self, name: str, consumer: AIOKafkaConsumer) -> GuardedFetch:
        guard = self._guards[name] = GuardedFetch(consumer, self.unreadable)
        return guard

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        cfg = self.cfg
        self._stopping.clear()
        if cfg.compression not in COMPRESSION_CODECS:
            raise ConfigError(
                f"compression {cfg.compression!r}: use one of {', '.join(COMPRESSION_CODECS)}"
            )
        missing_read = missing_codecs()
        if missing_read:
            log.warning(
                "cannot read record batches compressed with %s: their partitions will be "
                "held (see /readyz); install aiokafka's codec extras (cramjam)",
                ", ".join(missing_read),
            )
        if cfg.compression in missing_read:
            raise ConfigError(
                f"compression {cfg.compression}: its library is not installed "
                "(aiokafka's codec extras: cramjam); choose another or install it"
            )
        if cfg.tune_gc:
            tune_gc()
        kw = cfg.client_kwargs
        wanted = [*cfg.topics, *cfg.control_topics]
        missing = await topic_admin.missing_topics(cfg.bootstrap_servers, wanted, **kw)
        missing_core = [t for t in missing if t in cfg.topics]
        if missing_core and not cfg.create_topics:
            raise topic_admin.MissingTopicsError(missing_core)
        if missing and cfg.create_topics:
            names = topic_admin.TopicNames(
                positions=cfg.positions_topic,
                market_ticks=cfg.ticks_topic,
                risk_actions=cfg.actions_topic,
                risk_dlq=cfg.dlq_topic,
                risk_config=cfg.config_topic or topic_admin.RISK_CONFIG,
                risk_alerts=cfg.alerts_topic or topic_admin.RISK_ALERTS,
            )
            specs = [s for s in topic_admin.topic_specs(names) if s.name in missing]
            await topic_admin.create_topics(cfg.bootstrap_servers, specs, **kw)
            missing = []
        for t in missing:
            log.warning(
                "topic %s is missing: running without it (%s); create it with "
                "`stream-risk topics create` to use it",
                t,
                "static limits, no live risk-config" if t == cfg.config_topic else "no alerts",
            )
        self._config_topic = cfg.config_topic if cfg.config_topic not in missing else None
        self._alerts_topic = cfg.alerts_topic if cfg.alerts_topic not in missing else None
        if cfg.idempotence == "auto":
            self._idempotent = await topic_admin.probe_idempotence(cfg.bootstrap_servers, **kw)
            if not self._idempotent:
                log.warning(
                    "the broker refused an idempotent producer: publishing with plain "
                    "acks=all (duplicates possible on retries; consumers dedupe by key)"
                )
        else:
            self._idempotent = cfg.idempotence == "on"
        self.metrics.idempotence_enabled.set(1 if self._idempotent else 0)
        self._producer = self.clients.producer(
            idempotent=self._idempotent,
            compression=cfg.compression,
            linger_ms=cfg.linger_ms,
            max_request_size=cfg.max_request_size,
        )
        await self._producer.start()
        self._connected = True
        parts = await self._producer.partitions_for(cfg.actions_topic)
        pos_parts = await self._producer.partitions_for(cfg.positions_topic)
        self._co_partitioned = len(parts) >= len(pos_parts)
        if not self._co_partitioned:
            log.warning(
                "%s has fewer partitions (%d) than %s (%d): actions are keyed by hash and "
                "not read back on rebuild, so every position is re-published after a restart",
                cfg.actions_topic,
                len(parts),
                cfg.positions_topic,
                len(pos_parts),
            )
        await self._start_config()
        await self._start_ticks()
        self._positions = self.clients.group_consumer(
            cfg.group_id,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        )
        await self._positions.start()
        self._guard("positions", self._positions)
        self._positions.subscribe([cfg.positions_topic], listener=_Rebalance(self))
        self._tasks.append(asyncio.create_task(self._health_loop(), name="health"))
        if cfg.alert_webhook:
            m = self.metrics
            self._webhook = WebhookSender(
                cfg.alert_webhook,
                timeout_s=cfg.alert_webhook_timeout_s,
                attempts=cfg.alert_webhook_attempts,
                on_result=lambda r: m.alert_webhook.labels(result=r).inc(),
            )
            self._webhook.start()
        self._tasks.append(asyncio.create_task(self._alert_loop(), name="alerts"))

    async def _start_config(self) -> None:
        """Assign risk-config from its beginning and read it to the end (before ready)."""
        topic = self._config_topic
        if topic is None:
            self._config_caught_up = True
            return
        consumer = self.clients.reader()
        await consumer.start()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._config = consumer
        dead: list[DeadLetter] = []
        res = StepResult()

        def collect(tp: TopicPartition, records: Sequence[Any]) -> None:
            step = self.engine.step(self._decode_config(records, dead), wall_ms())
            # Rejected at start: a record that was already bad when first read is DLQ'd
            # again by each instance start; the DLQ says so with the same offset.
            dead.extend(_rejected_letters(step.rejected, [records], -1))
            res.outputs.extend(step.outputs)

        guard = self._guard("config", consumer)
        await read_to_end(consumer, tps, collect, poll_ms=_READ_POLL_MS, guard=guard)
        async with self._lock:
            await self._publish(res, dead)
        self._config_caught_up = True
        log.info("risk-config caught up: %d scopes in force", len(self.engine.scopes))

    def _decode_config(self, records: Sequence[Any], dead: list[DeadLetter]) -> list[Event]:
        out: list[Event] = []
        if self._config_topic is not None:
            self.metrics.records_consumed.labels(topic=self._config_topic).inc(len(records))
        for rec in records:
            ev = decode_config(rec, rec.headers)
            if isinstance(ev, DeadLetter):
                dead.append(ev)
            else:
                out.append(ev)
        return out

    async def _start_ticks(self) -> None:
        """Assign every ticks partition from the look-back window and catch up to the end."""
        cfg = self.cfg
        consumer = self.clients.reader()
        await consumer.start()
        parts = consumer.partitions_for_topic(cfg.ticks_topic) or set()
        tps = [TopicPartition(cfg.ticks_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        since = wall_ms() - cfg.tick_lookback_ms
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since))
        for tp in tps:
            hit = found.get(tp)
            if hit is None:
                await consumer.seek_to_end(tp)
            else:
                # Some brokers answer 0 whatever the time (DESIGN §9): reading a little more
                # history only refines the latest-market table, it never publishes.
                consumer.seek(tp, hit.offset)
        self._ticks = consumer
        dead: list[DeadLetter] = []
        res = StepResult()

        def collect(tp: TopicPartition, records: Sequence[Any]) -> None:
            # No positions are loaded yet: this only builds the latest-market table.
            step = self.engine.step(self._decode(records, is_tick=True, dead=dead), wall_ms())
            dead.extend(_rejected_letters(step.rejected, [records], -1))
            res.outputs.extend(step.outputs)
            self._tick_next[tp.partition] = records[-1].offset + 1

        guard = self._guard("ticks", consumer)
        await read_to_end(consumer, tps, collect, poll_ms=_READ_POLL_MS, guard=guard)
        async with self._lock:
            await self._publish(res, dead)
        self._ticks_caught_up = True
        log.info("market ticks caught up: %d assets known", len(self.engine.table.markets))

    async def run(self) -> None:
        """Process until `stop()`. Call `start()` first."""
        assert self._ticks is not None and self._positions is not None
        # Every read goes through a guard: a batch that cannot be read holds its partition,
        # loudly, instead of raising here (stream_risk.kafka.fetch).
        ticks = self._guards["ticks"]
        positions = self._guards["positions"]
        configs = self._guards.get("config") if self._config is not None else None
        max_records = self.cfg.fetch_max_records
        t_ticks: asyncio.Task[Any] | None = None
        t_pos: asyncio.Task[Any] | None = None
        t_cfg: asyncio.Task[Any] | None = None
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                if self._pending:
                    # A rebuild can be held at a batch it cannot read (for as long as it
                    # stays unreadable): a stop must not wait for it. Nothing of a cancelled
                    # rebuild is committed; the partitions are rebuilt on the next start.
                    rebuild = asyncio.create_task(self._rebuild(), name="rebuild")
                    await asyncio.wait({rebuild, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    if not rebuild.done():
                        rebuild.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await rebuild
                        break
                    rebuild.result()
                    continue
                if t_ticks is None:
                    t_ticks = asyncio.create_task(
                        ticks.getmany(timeout_ms=500, max_records=max_records)
                    )
                if t_pos is None:
                    t_pos = asyncio.create_task(
                        positions.getmany(timeout_ms=500, max_records=max_records)
                    )
                if t_cfg is None and configs is not None:
                    t_cfg = asyncio.create_task(configs.getmany(timeout_ms=500))
                due = self.engine.next_due()
                timeout = 1.0
                if due is not None:
                    timeout = min(timeout, max(0.0, (due - wall_ms()) / 1000))
                waiting = {t_ticks, t_pos, stop_wait}
                if t_cfg is not None:
                    waiting.add(t_cfg)
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                events: list[Event] = []
                dead: list[DeadLetter] = []
                commits: dict[TopicPartition, int] = {}
                raw_pos: list[Sequence[Any]] = []
                if t_cfg is not None and t_cfg in done:
                    # Config first: a change applies to the positions and ticks after it.
                    batch = self._task_result(t_cfg)
                    t_cfg = None
                    for records in batch.values():
                        if records:
                            events.extend(self._decode_config(records, dead))
                            raw_pos.append(records)
                if t_pos in done:
                    batch = self._task_result(t_pos)
                    t_pos = None
                    for tp, records in batch.items():
                        nxt = self._live.get(tp.partition)
                        if nxt is None:
                            continue  # not ours (revoked) or still rebuilding
                        fresh = [r for r in records if r.offset >= nxt]
                        if fresh:
                            events.extend(self._decode(fresh, is_tick=False, dead=dead))
                            commits[tp] = fresh[-1].offset + 1
                            raw_pos.append(fresh)
                raw: list[Sequence[Any]] = []
                if t_ticks in done:
                    batch = self._task_result(t_ticks)
                    t_ticks = None
                    for tp, records in batch.items():
                        if records:
                            events.extend(self._decode(records, is_tick=True, dead=dead))
                            self._tick_next[tp.partition] = records[-1].offset + 1
                            raw.append(records)
                if self._stopping.is_set() and not events:
                    break
                async with self._lock:
                    # Partitions revoked while we waited: drop their records.
                    if commits:
                        keep = {p for p in self._live}
                        events = [
                            e
                            for e in events
                            if not isinstance(e, PositionEvent) or e.lineage.partition in keep
                        ]
                        commits = {tp: o for tp, o in commits.items() if tp.partition in keep}
                    res = self.engine.step(events, wall_ms())
                    if res.rejected:
                        dead.extend(_rejected_letters(res.rejected, [*raw, *raw_pos], -1))
                        res.rejected.clear()
                    await self._publish(res, dead)
                    if commits:
                        for tp, off in commits.items():
                            self._live[tp.partition] = off
                        await self._commit(commits)
        finally:
            for t in (t_ticks, t_pos, t_cfg, stop_wait):
                if t is not None:
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t

    def _task_result(self, task: asyncio.Task[Any]) -> dict[TopicPartition, list[Any]]:
        try:
            result: dict[TopicPartition, list[Any]] = task.result()
            return result
        except KafkaError as exc:
            # Once a minute per kind of error: a lasting one is retried by every fetch.
            now = time.monotonic()
            kind = type(exc).__name__
            if now - self._fetch_errors_logged.get(kind, -1e9) >= 60.0:
                self._fetch_errors_logged[kind] = now
                log.warning("fetch failed (the consumer reconnects by itself): %s", exc)
            return {}

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        """Flush, commit and leave the group. Safe to call more than once."""
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        for guard in self._guards.values():
            guard.close()
        self._guards.clear()
        if self._webhook is not None:
            await self._webhook.stop()
            self._webhook = None
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.flush()
        for c in (self._positions, self._ticks, self._config):
            if c is not None:
                with contextlib.suppress(KafkaError):
                    await c.stop()
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.stop()
        self._positions = self._ticks = self._config = None
        self._producer = None

    # ------------------------------------------------------------------ rebalancing
    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Keep what we held before the rebalance and still own; rebuild the rest.

        Kafka's eager rebalancing revokes every partition before each assignment. A
        partition revoked and handed straight back was owned by nobody else in between, so
        its table, timers and next offset are still exact: it resumes without a rebuild.
        """
        self._joined = True
        owned = {tp.partition for tp in assigned}
        kept = {p: off for p, off in self._held.items() if p in owned}
        for p in set(self._held) - owned:
            dropped = self.engine.drop_partition(p)
            log.info("partition %d moved away: dropped %d positions", p, dropped)
        self._held.clear()
        consumer = self._positions
        for tp in assigned:
            off = kept.get(tp.partition)
            if off is not None:
                self._live[tp.partition] = off
                if consumer is not None:
                    consumer.seek(tp, off)
        new = [tp for tp in assigned if tp.partition not in self._live]
        if new and consumer is not None:
            consumer.pause(*new)
        self._pending.update(tp.partition for tp in new)
        log.info(
            "assigned positions partitions %s (kept %s, to rebuild %s)",
            sorted(owned),
            sorted(kept),
            sorted(tp.partition for tp in new),
        )

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Stop processing the revoked partitions; their state waits for the assignment."""
        async with self._lock:
            for tp in revoked:
                self._pending.discard(tp.partition)
                off = self._live.pop(tp.partition, None)
                if off is not None:
                    self._held[tp.partition] = off

    async def _rebuild(self) -> None:
        """Rebuild every pending partition from its changelog, then resume it."""
        cfg = self.cfg
        assert self._positions is not None
        parts = sorted(self._pending)
        t0 = time.perf_counter()
        reader = self.clients.reader("-rebuild")
        await reader.start()
        guard = GuardedFetch(reader, self.unreadable)
        # No collections while the table loads: it only adds long-lived objects.
        with _gc_paused(cfg.tune_gc):
            try:
                pos_tps = [TopicPartition(cfg.positions_topic, p) for p in parts]
                committed: dict[int, int] = {}
                for tp in pos_tps:
                    c = await self._positions.committed(tp)
                    committed[tp.partition] = -1 if c is None else c
                dead: list[DeadLetter] = []
                loaded = 0

                def load(tp: TopicPartition, records: Sequence[Any]) -> None:
                    nonlocal loaded
                    # Records before the committed offset were DLQ'd when first consumed.
                    bad: list[DeadLetter] = []
                    events = self._decode(records, is_tick=False, dead=bad)
                    first_new = committed[tp.partition]
                    dead.extend(d for d in bad if d.lineage.offset >= first_new)
                    rejected = self.engine.load(
                        (e for e in events if isinstance(e, PositionEvent)), wall_ms()
                    )
                    dead.extend(_rejected_letters(rejected, [records], first_new))
                    loaded += len(records)

                reader.assign(pos_tps)
                await reader.seek_to_beginning(*pos_tps)
                ends = await read_to_end(reader, pos_tps, load, poll_ms=_READ_POLL_MS, guard=guard)
                if self._co_partitioned:
                    act_tps = [TopicPartition(cfg.actions_topic, p) for p in parts]

                    def restore(tp: TopicPartition, records: Sequence[Any]) -> None:
                        for r in records:
                            if r.key is not None:
                                self.engine.restore(
                                    tp.partition,
                                    r.key.decode(errors="replace"),
                                    decode_action(r.value),
                                )

                    reader.assign(act_tps)
                    await reader.seek_to_beginning(*act_tps)
                    await read_to_end(reader, act_tps, restore, poll_ms=_READ_POLL_MS, guard=guard)
            finally:
                guard.close()
                await reader.stop()
        async with self._lock:
            now = wall_ms()
            res = StepResult()
            commits: dict[TopicPartition, int] = {}
            for tp in pos_tps:
                p = tp.partition
                if p not in self._pending:  # revoked meanwhile
                    self.engine.drop_partition(p)
                    continue
                settled = self.engine.settle(p, now)
                res.outputs.extend(settled.outputs)
                res.assessments += settled.assessments
                self._positions.seek(tp, ends[tp])
                commits[tp] = ends[tp]
            await self._publish(res, dead)
            await self._commit(commits)
            for tp in commits:
                self._pending.discard(tp.partition)
                self._live[tp.partition] = ends[tp]
            self._positions.resume(*commits)
        if cfg.tune_gc:
            # The table is long-lived from here: keep the collector's full passes off it.
            gc.freeze()
        took = time.perf_counter() - t0
        self.metrics.rebuild_seconds.observe(took)
        log.info(
            "rebuilt partitions %s: %d records, %d positions, %d actions in %.3fs",
            parts,
            loaded,
            len(self.engine.table.positions),
            len(res.outputs),
            took,
        )

    # ------------------------------------------------------------------ I/O helpers
    def _decode(
        self, records: Sequence[ConsumerRecord[Any, Any]], is_tick: bool, dead: list[DeadLetter]
    ) -> list[Event]:
        out: list[Event] = []
        topic = self.cfg.ticks_topic if is_tick else self.cfg.positions_topic
        self.metrics.records_consumed.labels(topic=topic).inc(len(records))
        decode = decode_tick if is_tick else decode_position
        for rec in records:
            ev = decode(rec)
            if isinstance(ev, DeadLetter):
                dead.append(ev)
            else:
                out.append(ev)
        return out

    async def _publish(self, res: StepResult, dead: list[DeadLetter]) -> None:
        """Produce a step's actions and dead letters; return once all are acknowledged."""
        if not res.outputs and not dead:
            return
        cfg = self.cfg
        # A letter too big for one produce request fails the same way on every retry: it
        # would stall the engine (and re-send the batch's actions each second). It goes out
        # with its value cut, and its `error` header says so.
        dead = [_fit_dead_letter(d, cfg.max_request_size) for d in dead]
        while True:
            producer = self._producer
            assert producer is not None
            try:
                futures = await self._send_actions(producer, res.outputs)
                for d in dead:
                    futures.append(
                        await producer.send(
                            cfg.dlq_topic, value=d.value, key=d.key, headers=d.headers()
                        )
                    )
                await asyncio.gather(*futures)
                break
            except KafkaError as exc:
                self._send_failing = True
                log.warning("publishing failed, retrying the batch in 1s: %s", exc)
                await asyncio.sleep(1.0)
        self._send_failing = False
        now = wall_ms()
        m = self.metrics
        by_action: Counter[str] = Counter()
        observe = m.tick_to_action_seconds.observe
        for out in res.outputs:
            action = out.action
            if action is None:
                by_action["TOMBSTONE"] += 1
                continue
            by_action[action] += 1
            ts = out.tick_lineage.timestamp_ms
            if ts > 0 and out.trigger == "tick":
                observe(max(0.0, (now - ts) / 1000))
        fired = alerting.liquidate_transitions(self.alerts, res.outputs, now)
        children = self._published_children
        for action, n in by_action.items():
            child = children.get(action)
            if child is None:
                child = children[action] = m.actions_published.labels(action=action)
            child.inc(n)
        if fired:
            self._emit_alerts(fired)
        if dead:
            t = time.monotonic()
            self._dlq_times.extend([t] * len(dead))
        for d in dead:
            if d.lineage.topic == self._config_topic:
                self._config_rejected += 1
            m.dlq_records.labels(topic=d.lineage.topic, reason=d.kind).inc()
            log.warning(
                "DLQ %s[%d]@%d: %s",
                d.lineage.topic,
                d.lineage.partition,
                d.lineage.offset,
                d.reason,
            )
        if res.assessments:
            m.engine_assessments.inc(res.assessments)

    async def _send_actions(
        self, producer: AIOKafkaProducer, outputs: list[Output]
    ) -> list[asyncio.Future[Any]]:
        """Queue `outputs` for `risk-actions`; the futures resolve once acknowledged.

        Co-partitioned actions go out as one record batch per partition, built here
        (`create_batch` / `send_batch`: a tenth of the cost of a `send` per record), in the
        order the core made them; the rest are keyed `send`s placed by the partitioner.
        """
        topic = self.cfg.actions_topic
        futures: list[asyncio.Future[Any]] = []
        builders: dict[int, Any] = {}
        co = self._co_partitioned
        for out in outputs:
            part = out.partition
            key = out.position_id.encode()
            if not co or part < 0:
                futures.append(await producer.send(topic, value=out.data, key=key))
                continue
            b = builders.get(part)
            if b is None:
                b = builders[part] = producer.create_batch()
            if b.append(timestamp=None, key=key, value=out.data) is None:
                # Full (max_batch_size): send it and start the next one.
                futures.append(await producer.send_batch(b, topic, partition=part))
                b = builders[part] = producer.create_batch()
                if b.append(timestamp=None, key=key, value=out.data) is None:
                    raise ValueError(f"action of {out.position_id!r} exceeds max_batch_size")
        for part, b in builders.items():
            b.close()  # complete: no linger, the sender takes it now
            futures.append(await producer.send_batch(b, topic, partition=part))
        return futures

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets or self._positions is None:
            return
        try:
            await self._positions.commit(offsets)
        except KafkaError as exc:
            # A rebalance is under way: the new owner re-reads from the last commit.
            log.warning("commit failed (records will be re-read by their owner): %s", exc)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval_s)
            producer = self._producer
            if producer is None:
                continue
            try:
                md = await asyncio.wait_for(producer.client.fetch_all_metadata(), 5.0)
                self._connected = True
                present = md.topics()
                self._missing_topics = [t for t in self.cfg.topics if t not in present]
            except (KafkaError, TimeoutError, OSError) as exc:
                if self._connected:
                    log.warning("broker unreachable: %s", exc)
                self._connected = False
            self._check_progress()
            self._log_waiting()

    def _check_progress(self) -> None:
        """Catch a consumer that stopped making progress while its partition has records.

        Seen on Tansu after a restart with S3 storage: the broker takes longer than our
        short fetch wait to load a batch back, so every fetch answers empty and the offset
        never moves. A partition behind its high watermark with no progress for
        `STALL_AFTER_S` makes `/readyz` say so, and the consumer's fetch wait is raised to
        the Kafka default (500 ms), which lets such a broker answer.
        """
        now = time.monotonic()
        stalled: list[str] = []
        for consumer, nexts in ((self._ticks, self._tick_next), (self._positions, self._live)):
            if consumer is None:
                continue
            for tp in consumer.assignment():
                hw = consumer.highwater(tp)
                nxt = nexts.get(tp.partition)
                key = (tp.topic, tp.partition)
                if self.unreadable.held(tp.topic, tp.partition):
                    # Its own, more precise, reason is in /readyz; a longer fetch wait
                    # would only slow the consumer's other partitions.
                    self._progress.pop(key, None)
                    continue
                if hw is None or nxt is None or nxt >= hw:
                    self._progress.pop(key, None)
                    continue
                seen = self._progress.get(key)
                if seen is None or seen[0] != nxt:
                    self._progress[key] = (nxt, now)
                    continue
                if now - seen[1] >= STALL_AFTER_S:
                    stalled.append(f"{tp.topic}[{tp.partition}] at offset {nxt} of {hw}")
                    fetcher = getattr(consumer, "_fetcher", None)
                    if fetcher is not None and fetcher._fetch_max_wait_ms < 500:
                        log.warning(
                            "%s[%d] makes no progress at offset %d (high watermark %d): "
                            "raising the fetch wait to 500 ms",
                            tp.topic,
                            tp.partition,
                            nxt,
                            hw,
                        )
                        fetcher._fetch_max_wait_ms = 500
        self._stalled = stalled

    def metrics_view(self) -> EngineView:
        """The engine's state for /metrics, read when scraped (`StateCollector`)."""
        t = self.engine.table
        lag: dict[tuple[str, int], int] = {}
        for consumer, nexts in ((self._positions, self._live), (self._ticks, self._tick_next)):
            if consumer is None:
                continue
            for tp in consumer.assignment():
                hw = consumer.highwater(tp)
                nxt = nexts.get(tp.partition)
                if hw is not None and nxt is not None:
                    lag[(tp.topic, tp.partition)] = max(0, hw - nxt)
        return EngineView(
            table_positions=len(t.positions),
            table_assets=len(t.markets),
            timers_pending=len(self.engine.timers),
            broker_connected=self._connected,
            ready=self.is_ready()[0],
            consumer_lag=lag,
            waiting=self.engine.waiting(),
            exposure=self.engine.book_exposure(),
            exposure_assets=self.cfg.exposure_metrics_assets,
            stats=self.engine.stats.as_dict(),
            config_rejected=self._config_rejected,
        )

    # ------------------------------------------------------------------ alerts
    def _emit_alerts(self, alerts: list[alerting.Alert]) -> None:
        """Publish alerts to risk-alerts and hand them to the webhook; never waits."""
        m = self.metrics
        producer = self._producer
        for a in alerts:
            m.alerts.labels(kind=a["kind"], state=a["state"]).inc()
            self.recent_alerts.append(a)
            log.warning("alert %s %s: %s", a["key"], a["state"], a["details"])
            if self._webhook is not None:
                self._webhook.submit(a)
            if producer is not None and self._alerts_topic is not None:
                task = asyncio.ensure_future(
                    _send_alert(producer, self._alerts_topic, a["key"].encode(), orjson.dumps(a))
                )
                self._alert_sends.add(task)
                task.add_done_callback(self._alert_sends.discard)
        m.alerts_active.set(len(self.alerts.active))

    def check_alerts(self, now_ms: int | None = None) -> list[alerting.Alert]:
        """Exposure limits, stale markets and the DLQ rate: the transitions since the last
        check (published). Cheap when no limit is set: no exposure is computed then."""
        now = wall_ms() if now_ms is None else now_ms
        tracker = self.alerts
        engine = self.engine
        breaches = None
        if engine.limits() or tracker.has_kind(alerting.EXPOSURE_LIMIT):
            breaches = engine.book_exposure()["breaches"]
        markets = engine.table.markets
        market_ts = [
            (asset, market.ts)
            for asset in engine.table.by_asset
            if (market := markets.get(asset)) is not None
        ]
        cutoff = time.monotonic() - 60.0
        times = self._dlq_times
        while times and times[0] < cutoff:
            times.popleft()
        out = alerting.limit_transitions(
            tracker,
            breaches=breaches,
            stale=alerting.stale_markets(market_ts, now, engine.config.max_tick_age_ms),
            dlq_last_minute=len(times),
            dlq_per_minute=self.cfg.alert_dlq_per_minute,
            now_ms=now,
        )
        if out:
            self._emit_alerts(out)
        return out

    async def _alert_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.alert_interval_s)
            try:
                self.check_alerts()
            except Exception:  # a bug here must not stop the engine
                log.exception("alert check failed")

    def _log_waiting(self) -> None:
        """Positions that cannot be assessed yet (DESIGN §12, D12): one log line when an
        asset starts waiting or what it waits for changes, one when it stops; never one per
        tick (the gauge `stream_risk_positions_waiting` is read when scraped)."""
        waiting = self.engine.waiting()
        seen: dict[str, tuple[str, ...]] = {}
        for asset, w in waiting.items():
            missing = tuple(w["missing"])
            seen[asset] = missing
            if self._waiting.get(asset) != missing:
                why = "; ".join(f"{f}: {w[f]}" for f in missing if f in w)
                log.warning(
                    "%d position(s) on %s cannot be assessed yet, missing %s (%s)",
                    w["positions"],
                    asset,
                    ", ".join(missing),
                    why,
                )
        for asset, missing in self._waiting.items():
            if asset not in seen and asset in self.engine.table.by_asset:
                log.info(
                    "positions on %s are assessed again (%s now known)", asset, ", ".join(missing)
                )
        self._waiting = seen

    # ------------------------------------------------------------------ sidecar state
    def is_ready(self) -> tuple[bool, list[str]]:
        reasons = []
        if not self._config_caught_up:
            reasons.append("risk-config not read to its end yet")
        if not self._ticks_caught_up:
            reasons.append("market ticks not caught up yet")
        if not self._joined:
            reasons.append(f"not yet assigned by consumer group {self.cfg.group_id!r}")
        if self._pending:
            reasons.append(f"rebuilding positions partitions {sorted(self._pending)}")
        if not self._connected:
            reasons.append(f"broker {self.cfg.bootstrap_servers} unreachable")
        if self._missing_topics:
            reasons.append(
                f"topics missing on the broker: {', '.join(self._missing_topics)} "
                "(was the broker restarted without persistent storage?)"
            )
        if self._stalled:
            reasons.append(
                "no progress for "
                f"{STALL_AFTER_S:g}s on partitions behind their end: {', '.join(self._stalled)}"
            )
        reasons.extend(self.unreadable.reasons())
        if self._send_failing:
            reasons.append("publishing to the broker is failing (retrying)")
        return (not reasons, reasons)

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        return self.engine.snapshot(asset)

    def risk_config(self) -> dict[str, Any]:
        """`GET /config`: the config in force per scope and the history of changes."""
        view = self.engine.config_view()
        view["topic"] = self._config_topic
        return view

    def exposure_view(self) -> dict[str, Any]:
        """`GET /exposure`: per asset and book, limits, breaches and the active alerts."""
        view = self.engine.book_exposure()
        view["alerts_active"] = [
            {"key": k, "kind": kind, "details": d} for k, (kind, d) in self.alerts.active.items()
        ]
        view["alerts_recent"] = list(self.recent_alerts)[-20:]
        return view

    def exposure(self) -> dict[str, dict[str, float]]:
        """Net and gross notional per asset at the latest tick (for `GET /positions`)."""
        return self.engine.exposure()


async def _send_alert(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes) -> None:
    """Publish one alert (acks=all); off the engine's path: failures are logged."""
    try:
        fut = await producer.send(topic, value=value, key=key)
        await fut
    except KafkaError as exc:
        log.warning("publishing alert %s failed: %s", key.decode(errors="replace"), exc)


#: Bytes of a value kept in a dead letter that would not fit one produce request whole.
DLQ_VALUE_KEEP = 64 * 1024


def _fit_dead_letter(d: DeadLetter, max_request_size: int) -> DeadLetter:
    """`d`, or `d` with its value cut to `DLQ_VALUE_KEEP` bytes if its record (with the
    DLQ headers, which the original did not carry) would exceed `max_request_size`."""
    if d.value is None:
        return d
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(d.key, d.value, d.headers())
    if size <= max_request_size:
        return d
    kept = d.value[:DLQ_VALUE_KEEP]
    return DeadLetter(
        f"{d.reason} [value cut from {len(d.value)} to {len(kept)} bytes to fit the DLQ]",
        d.kind,
        d.lineage,
        d.key,
        kept,
    )


def _rejected_letters(
    rejected: list[Rejected], batches: Sequence[Sequence[Any]], first_new: int
) -> list[DeadLetter]:
    """Dead letters for records the core refused, with their original key and bytes."""
    if not rejected:
        return []
    by_lineage = {(r.topic, r.partition, r.offset): r for recs in batches for r in recs}
    out = []
    for rj in rejected:
        lin = rj.lineage
        if lin.offset < first_new:
            continue
        rec = by_lineage.get((lin.topic, lin.partition, lin.offset))
        out.append(
            DeadLetter(
                rj.reason,
                "rejected",
                rj.lineage,
                None if rec is None else rec.key,
                None if rec is None else rec.value,
            )
        )
    return out


__all__ = ["Lineage", "ProcessorConfig", "StreamProcessor", "TickEvent"]
