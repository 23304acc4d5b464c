"""Health (DESIGN §4, docs/operations.md §4): the health loop, stall checks, readiness.

Every `health_interval_s` the loop asks the broker for its metadata (connected? topics
present?), checks that every consumer makes progress on partitions behind their end, and
logs what positions wait for. `is_ready` turns all of it, and the publisher's and the
fetch guards' troubles, into the reasons `GET /readyz` gives.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.errors import KafkaError

from stream_risk import alerting
from stream_risk.kafka.base import ShellState
from stream_risk.metrics import EngineView

log = logging.getLogger("stream_risk.engine")

#: A partition behind its high watermark with no progress for this long is stalled.
STALL_AFTER_S = 10.0


class HealthMixin(ShellState):
    """The processor's health checks and readiness (`SidecarState.is_ready`)."""

    _progress: dict[tuple[str, int], tuple[int, float]]
    _stalled: list[str]
    #: Assets whose positions wait, and for what (as last logged and exported).
    _waiting: dict[str, tuple[str, ...]]

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval_s)
            producer = self.publisher.producer
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

    def check_alerts(self, now_ms: int | None = None) -> list[alerting.Alert]:
        """Exposure limits, stale markets and the DLQ rate: the transitions since the last
        check (published). Cheap when no limit is set: no exposure is computed then."""
        return self.publisher.alerts.check_alerts(self.engine, now_ms)

    async def _alert_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.alert_interval_s)
            try:
                self.check_alerts()
            except Exception:  # a bug here must not stop the engine
                log.exception("alert check failed")

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
            exposure=self.exposure_view(),
            exposure_assets=self.cfg.exposure_metrics_assets,
            stats=self.engine.stats.as_dict(),
            config_rejected=self.publisher.config_rejected,
        )

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
        if self._metadata_wait:
            reasons.append(self._metadata_wait)
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
        if self.book is not None:
            reasons.extend(self.book.reasons())
        txns = self.publisher.txns
        if txns is not None and txns.waiting is not None:
            reasons.append(txns.waiting)
        reasons.extend(self.unreadable.reasons())
        if self.publisher.failing:
            reasons.append(self.publisher.failing)
        if self._commit_failing:
            reasons.append(self._commit_failing)
        reasons.extend(self._fetch_failing.values())
        return (not reasons, reasons)
