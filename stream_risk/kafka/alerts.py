"""Alerts, the shell's side (DESIGN §10, docs/design.md D9): what the pure rules of
`stream_risk.alerting` return is published to `risk-alerts` (acks=all, from a task, never
awaited by the loop) and handed to the webhook (`stream_risk.webhook`), counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_risk import alerting
from stream_risk.engine import Engine
from stream_risk.kafka.config import ProcessorConfig, wall_ms
from stream_risk.metrics import Metrics
from stream_risk.webhook import WebhookSender

log = logging.getLogger("stream_risk.engine")


class AlertSender:
    """The alert rules' state and where their alerts go."""

    def __init__(
        self,
        cfg: ProcessorConfig,
        metrics: Metrics,
        producer: Callable[[], AIOKafkaProducer | None],
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self._producer = producer
        #: risk-alerts when it exists (set at start), else None: not published.
        self.topic: str | None = None
        self.tracker = alerting.AlertTracker()
        self.recent: deque[alerting.Alert] = deque(maxlen=100)
        self.webhook: WebhookSender | None = None
        #: When each recent dead letter was acknowledged (the DLQ-rate rule).
        self.dlq_times: deque[float] = deque()
        self._sends: set[asyncio.Future[None]] = set()
        #: The book stage owns the limit and stale-market alerts (D17): the owner of each
        #: asset (and of the book) fires them once across the instances, not this check.
        self.book_owned = False

    def dead_lettered(self, n: int) -> None:
        t = time.monotonic()
        self.dlq_times.extend([t] * n)

    def start_webhook(self) -> None:
        cfg = self.cfg
        if cfg.alert_webhook:
            m = self.metrics
            self.webhook = WebhookSender(
                cfg.alert_webhook,
                timeout_s=cfg.alert_webhook_timeout_s,
                attempts=cfg.alert_webhook_attempts,
                on_result=lambda r: m.alert_webhook.labels(result=r).inc(),
            )
            self.webhook.start()

    async def stop_webhook(self) -> None:
        if self.webhook is not None:
            await self.webhook.stop()
            self.webhook = None

    def emit(self, alerts: list[alerting.Alert], publish: bool = True) -> None:
        """Publish alerts to risk-alerts and hand them to the webhook; never waits.
        `publish=False`: the caller produces them (in a transaction, D19)."""
        m = self.metrics
        producer = self._producer()
        for a in alerts:
            m.alerts.labels(kind=a["kind"], state=a["state"]).inc()
            self.recent.append(a)
            log.warning("alert %s %s: %s", a["key"], a["state"], a["details"])
            if self.webhook is not None:
                self.webhook.submit(a)
            if publish and producer is not None and self.topic is not None:
                task = asyncio.ensure_future(
                    _send_alert(producer, self.topic, a["key"].encode(), orjson.dumps(a))
                )
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
        m.alerts_active.set(len(self.tracker.active))

    def check_alerts(self, engine: Engine, now_ms: int | None = None) -> list[alerting.Alert]:
        """Exposure limits, stale markets and the DLQ rate: the transitions since the last
        check (published). Cheap when no limit is set: no exposure is computed then."""
        now = wall_ms() if now_ms is None else now_ms
        tracker = self.tracker
        breaches = None
        owned = self.book_owned
        if not owned and (engine.limits() or tracker.has_kind(alerting.EXPOSURE_LIMIT)):
            breaches = engine.book_exposure()["breaches"]
        markets = engine.table.markets
        market_ts = [
            (asset, market.ts)
            for asset in engine.table.by_asset
            if (market := markets.get(asset)) is not None
        ]
        cutoff = time.monotonic() - 60.0
        times = self.dlq_times
        while times and times[0] < cutoff:
            times.popleft()
        out = alerting.limit_transitions(
            tracker,
            breaches=breaches,
            stale={}
            if owned
            else alerting.stale_markets(market_ts, now, engine.config.max_tick_age_ms),
            dlq_last_minute=len(times),
            dlq_per_minute=self.cfg.alert_dlq_per_minute,
            now_ms=now,
        )
        if out:
            self.emit(out)
        return out


async def _send_alert(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes) -> None:
    """Publish one alert (acks=all); off the engine's path: failures are logged."""
    try:
        fut = await producer.send(topic, value=value, key=key)
        await fut
    except KafkaError as exc:
        log.warning("publishing alert %s failed: %s", key.decode(errors="replace"), exc)
