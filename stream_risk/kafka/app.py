"""The Kafka shell around the pure core (DESIGN §4): `StreamProcessor`, its lifecycle and loop.

The parts: kafka/recovery.py, kafka/publisher.py, kafka/health.py (see kafka/config.py).

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
import dataclasses
import logging
import math
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from stream_risk.engine import Engine, EngineConfig, PositionEvent
from stream_risk.engine.events import Event
from stream_risk.kafka import topics as topic_admin
from stream_risk.kafka.base import timed
from stream_risk.kafka.book import BookStage, Extra
from stream_risk.kafka.clients import Clients
from stream_risk.kafka.codec import DeadLetter
from stream_risk.kafka.config import ProcessorConfig, tune_gc, wall_ms
from stream_risk.kafka.fetch import GuardedFetch, UnreadableTracker, missing_codecs
from stream_risk.kafka.health import HealthMixin
from stream_risk.kafka.publisher import Publisher, rejected_letters
from stream_risk.kafka.recovery import Rebalance, RecoveryMixin
from stream_risk.kafka.transactions import Transactions
from stream_risk.metrics import Metrics
from stream_risk.settings import COMPRESSION_CODECS, ConfigError
from stream_risk.state import EngineReads

log = logging.getLogger("stream_risk.engine")


#: How long `stop` waits for the last checkpoint's acks.
STOP_CHECKPOINT_S = 10.0


class StreamProcessor(RecoveryMixin, HealthMixin, EngineReads):
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
        self.publisher = Publisher(config, self.metrics)
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
        self._config_caught_up = False
        #: The alert state (the publisher's; `exposure_view` shows it).
        self.alerts = self.publisher.alerts.tracker
        self.recent_alerts = self.publisher.alerts.recent
        #: Assets whose positions wait, and for what (as last logged and exported).
        self._waiting: dict[str, tuple[str, ...]] = {}
        self._joined = False
        self._ticks_caught_up = False
        self._connected = False
        self._missing_topics: list[str] = []
        self._idempotent = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}
        self._stalled: list[str] = []
        #: Partitions held at a record batch that cannot be read (all consumers).
        self.unreadable = UnreadableTracker(self.metrics)
        self._guards: dict[str, GuardedFetch] = {}
        self._fetch_errors_logged: dict[str, float] = {}
        self._fetch_failing: dict[str, str] = {}
        self._uncommitted: dict[TopicPartition, int] = {}
        self._commit_failing: str | None = None
        #: The book stage (D17) when its topics exist, else None (this instance's book).
        self.book: BookStage | None = None
        #: Transactions in force (D19), decided at start.
        self.exactly_once = False

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
            names = topic_names(cfg)
            specs = [s for s in topic_admin.topic_specs(names) if s.name in missing]
            await topic_admin.create_topics(cfg.bootstrap_servers, specs, **kw)
            missing = []
        book_topics = (cfg.book_partials_topic, cfg.book_topic)
        if cfg.book_partials_topic and cfg.book_topic:
            if cfg.book_partials_topic in missing or cfg.book_topic in missing:
                log.warning(
                    "topics %s / %s are missing: each instance's /exposure, limits and alerts "
                    "cover only its own positions; create them (`stream-risk topics create`) "
                    "to see one book across instances",
                    *book_topics,
                )
            else:
                self.book = BookStage(self, cfg.book_partials_topic, cfg.book_topic)
        self.engine.set_book_partials(self.book is not None)
        self.publisher.alerts.book_owned = self.book is not None
        for t in missing:
            if t in book_topics:
                continue
            log.warning(
                "topic %s is missing: running without it (%s); create it with "
                "`stream-risk topics create` to use it",
                t,
                "static limits, no live risk-config" if t == cfg.config_topic else "no alerts",
            )
        self._config_topic = cfg.config_topic if cfg.config_topic not in missing else None
        self.publisher.alerts.topic = cfg.alerts_topic if cfg.alerts_topic not in missing else None
        self.publisher.config_topic = self._config_topic
        await self._choose_guarantee()
        if self.exactly_once:
            self._idempotent = True  # a transactional producer is idempotent
        elif cfg.idempotence == "auto":
            self._idempotent = await topic_admin.probe_idempotence(cfg.bootstrap_servers, **kw)
            if not self._idempotent:
                log.warning(
                    "the broker refused an idempotent producer: publishing with plain "
                    "acks=all (duplicates possible on retries; consumers dedupe by key)"
                )
        else:
            self._idempotent = cfg.idempotence == "on"
        self.metrics.idempotence_enabled.set(1 if self._idempotent else 0)
        producer = self.publisher.producer = self.clients.producer(
            idempotent=self._idempotent,
            compression=cfg.compression,
            linger_ms=cfg.linger_ms,
            max_request_size=cfg.max_request_size,
        )
        await producer.start()
        self._connected = True
        parts = await producer.partitions_for(cfg.actions_topic)
        pos_parts = await producer.partitions_for(cfg.positions_topic)
        self.publisher.co_partitioned = len(parts) >= len(pos_parts)
        if not self.publisher.co_partitioned:
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
        if self.book is not None:
            await self.book.start()
        self._positions = self.clients.group_consumer(
            cfg.group_id,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        )
        await self._positions.start()
        self._guard("positions", self._positions)
        self._positions.subscribe([cfg.positions_topic], listener=Rebalance(self))
        self._tasks.append(asyncio.create_task(self._health_loop(), name="health"))

        self.publisher.alerts.start_webhook()
        self._tasks.append(asyncio.create_task(self._alert_loop(), name="alerts"))

    async def _choose_guarantee(self) -> None:
        """Exactly-once where asked and the broker has transactions (D19)."""
        cfg = self.cfg
        wanted = cfg.processing_guarantee
        if wanted not in ("exactly-once", "at-least-once", "auto"):
            raise ConfigError(
                f"processing guarantee {wanted!r}: use exactly-once, at-least-once or auto"
            )
        ok = False
        if wanted != "at-least-once":
            prefix = cfg.transactional_id_prefix or cfg.group_id
            probe = uuid.uuid4().hex
            found = await topic_admin.probe_transactions(
                cfg.bootstrap_servers,
                f"{prefix}-probe-{probe}",
                cfg.positions_topic,
                f"{prefix}-probe-{probe}",
                **cfg.client_kwargs,
            )
            if found == topic_admin.TXN_NONE and wanted == "exactly-once":
                raise ConfigError(
                    f"--processing-guarantee exactly-once needs Kafka transactions, and the "
                    f"broker at {cfg.bootstrap_servers} refused a transactional producer: "
                    "run on a broker with transactions (Apache Kafka, Redpanda, MSK) or use "
                    "--processing-guarantee at-least-once (or auto)"
                )
            if found == topic_admin.TXN_UNFENCED and wanted == "exactly-once":
                log.warning(
                    "the broker at %s runs transactions but does not fence an older "
                    "producer of a transactional id (librdkafka's mock cluster does this): "
                    "exactly-once as asked, but a zombie instance is not stopped by this "
                    "broker; use it to test, not to trade",
                    cfg.bootstrap_servers,
                )
            ok = found == topic_admin.TXN_OK or (
                found == topic_admin.TXN_UNFENCED and wanted == "exactly-once"
            )
            if not ok:
                why = (
                    "has no transactions"
                    if found == topic_admin.TXN_NONE
                    else "does not fence an older producer of a transactional id"
                )
                log.warning(
                    "the broker %s: processing at-least-once (a crash can re-publish "
                    "actions; consumers drop duplicates by (key, event_ts)); "
                    "stream_risk_processing_guarantee says so",
                    why,
                )
        self.exactly_once = ok
        m = self.metrics.processing_guarantee
        m.labels(guarantee="exactly-once").set(1 if ok else 0)
        m.labels(guarantee="at-least-once").set(0 if ok else 1)
        if ok:
            # No consumer reads an aborted transaction (the rebuild, the book stage).
            self.clients = dataclasses.replace(self.clients, isolation_level="read_committed")
            self.publisher.txns = Transactions(cfg, self.clients, self.metrics)
            log.info("processing exactly-once: Kafka transactions per positions partition")

    async def run(self) -> None:
        """Process until `stop()`. Call `start()` first."""
        assert self._ticks is not None and self._positions is not None
        # Every read goes through a guard: a batch that cannot be read holds its partition,
        # loudly, instead of raising here (stream_risk.kafka.fetch).
        ticks = self._guards["ticks"]
        positions = self._guards["positions"]
        configs = self._guards.get("config") if self._config is not None else None
        max_records = self.cfg.fetch_max_records
        publisher = self.publisher
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
                        timed(ticks.getmany(timeout_ms=500, max_records=max_records))
                    )
                if t_pos is None:
                    t_pos = asyncio.create_task(
                        timed(positions.getmany(timeout_ms=500, max_records=max_records))
                    )
                if t_cfg is None and configs is not None:
                    t_cfg = asyncio.create_task(timed(configs.getmany(timeout_ms=500)))
                due = self.engine.next_due()
                timeout = 1.0
                if due is not None:
                    timeout = min(timeout, max(0.0, (due - wall_ms()) / 1000))
                checkpoint_in = publisher.seconds_to_due()
                if checkpoint_in is not None:
                    timeout = min(timeout, checkpoint_in)
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
                #: When the step's first records were fetched (engine latency).
                fetched = math.inf
                if t_cfg is not None and t_cfg in done:
                    # Config first: a change applies to the positions and ticks after it.
                    at, batch = self._task_result("config", t_cfg)
                    fetched = min(fetched, at)
                    t_cfg = None
                    for records in batch.values():
                        if records:
                            events.extend(self._decode_config(records, dead))
                            raw_pos.append(records)
                if t_pos in done:
                    at, batch = self._task_result("positions", t_pos)
                    fetched = min(fetched, at)
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
                    at, batch = self._task_result("ticks", t_ticks)
                    fetched = min(fetched, at)
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
                        dead.extend(rejected_letters(res.rejected, [*raw, *raw_pos], -1))
                        res.rejected.clear()
                    # Produced freely: the acks and the commit of `commits` wait for the
                    # next checkpoint (docs/design.md D15).
                    await publisher.produce(
                        res,
                        dead,
                        commits,
                        fetched if events and fetched < math.inf else -1.0,
                        self.book_partials(),
                    )
                    for tp, off in commits.items():
                        self._live[tp.partition] = off
                    if publisher.due():
                        await self._checkpoint()
        finally:
            for t in (t_ticks, t_pos, t_cfg, stop_wait):
                if t is not None:
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t

    async def checkpoint(self) -> bool:
        """Checkpoint now (between steps): every pending record acknowledged, then the
        offsets they came from committed."""
        async with self._lock:
            return await self._checkpoint()

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
        await self.publisher.alerts.stop_webhook()
        if self.book is not None:
            await self.book.stop()
        producer = self.publisher.producer
        if producer is not None and not self.publisher.idle:
            # The last checkpoint: what was processed is committed once acknowledged; if
            # the broker does not ack in time, nothing is, and the records are re-read.
            async with self._lock:
                try:
                    if not await self._checkpoint(give_up_s=STOP_CHECKPOINT_S):
                        log.warning(
                            "stopping with %d records not acknowledged: their offsets are "
                            "not committed (re-read at the next start)",
                            self.publisher.pending,
                        )
                except KafkaError as exc:
                    log.warning("the last checkpoint failed: %s", exc)
        if self.publisher.txns is not None:
            await self.publisher.txns.stop()
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.flush()
        for c in (self._positions, self._ticks, self._config):
            if c is not None:
                with contextlib.suppress(KafkaError):
                    await c.stop()
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()
        self._positions = self._ticks = self._config = None
        self.publisher.producer = None

    # ------------------------------------------------------------------ sidecar state
    # Reads are the engine's own (`EngineReads`); these two add what the shell knows.
    def risk_config(self) -> dict[str, Any]:
        """`GET /config`: the config in force per scope and the history of changes."""
        view = self.engine.config_view()
        view["topic"] = self._config_topic
        return view

    def book_partials(self) -> list[Extra]:
        """The contribution records of what changed since the last call (D17)."""
        if self.book is None:
            return []
        return self.book.partial_records(self.engine.drain_partials())

    def book_records(self) -> dict[str, dict[str, Any]] | None:
        """`GET /book`: the latest risk-book record per asset (None: no book stage)."""
        return None if self.book is None else dict(self.book.view.records)

    def exposure_view(self) -> dict[str, Any]:
        """`GET /exposure`: per asset and book, limits, breaches and the active alerts: the
        whole book (`scope: book`) with the book stage, else this instance's positions."""
        if self.book is not None:
            view = self.book.exposure_view()
            owned = self.book.agg.tracker.active
        else:
            view = self.engine.book_exposure()
            view["scope"] = "instance"
            owned = {}
        view["alerts_active"] = [
            {"key": k, "kind": kind, "details": d}
            for k, (kind, d) in [*self.alerts.active.items(), *owned.items()]
        ]
        view["alerts_recent"] = list(self.recent_alerts)[-20:]
        return view

    def exposure(self) -> dict[str, dict[str, float]]:
        """Net and gross notional per asset at the latest tick."""
        return self.engine.exposure()


def topic_names(cfg: ProcessorConfig) -> topic_admin.TopicNames:
    """The names of every topic `cfg` uses (the defaults for the optional ones it leaves
    unset): what `--create-topics` makes."""
    return topic_admin.TopicNames(
        positions=cfg.positions_topic,
        market_ticks=cfg.ticks_topic,
        risk_actions=cfg.actions_topic,
        risk_dlq=cfg.dlq_topic,
        risk_config=cfg.config_topic or topic_admin.RISK_CONFIG,
        risk_alerts=cfg.alerts_topic or topic_admin.RISK_ALERTS,
        risk_book_partials=cfg.book_partials_topic or topic_admin.RISK_BOOK_PARTIALS,
        risk_book=cfg.book_topic or topic_admin.RISK_BOOK,
    )


__all__ = ["ProcessorConfig", "StreamProcessor", "topic_names"]
