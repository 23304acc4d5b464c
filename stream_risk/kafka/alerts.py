"""Alerts, the shell's side (DESIGN §10, docs/design.md D9): what the pure rules of
`stream_risk.alerting` return is published to `risk-alerts` (acks=all, from a task, never
awaited by the loop) and handed to the webhook (`stream_risk.webhook`), counted and logged.

Logged in aggregate (`AlertLog`, docs/design.md D20): the first alert of each kind at once,
then at most one line per interval with the counts per kind and state: under load
(`make bench`, a market crash) thousands of positions alert at once, and one WARNING each
drowned the log. Every alert is on `risk-alerts` (and the webhook) in full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
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

#: Seconds between two summary lines of the alerts logged in aggregate.
ALERT_LOG_INTERVAL_S = 10.0


class AlertLog:
    """Alerts in the log, in aggregate: the first alert of each kind is logged at once
    with its detail; the later ones are counted per (kind, state) and logged as one line at
    most every `interval_s` seconds, when `add` or `flush` is called after the interval.
    `clock`: seconds, monotonic (a fake one in tests)."""

    def __init__(
        self,
        logger: logging.Logger = log,
        interval_s: float = ALERT_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self.counts: Counter[tuple[str, str]] = Counter()
        self.kinds_seen: set[str] = set()
        #: When the last summary was logged, and when its window's first alert came.
        self.last_summary = clock()
        self.window_start: float | None = None

    def add(self, alert: alerting.Alert) -> None:
        kind, state = str(alert["kind"]), str(alert["state"])
        if kind not in self.kinds_seen:
            self.kinds_seen.add(kind)
            self.logger.warning(
                "alert %s %s: %s (further %s alerts: counted here every %g s, each in "
                "full on risk-alerts)",
                alert["key"],
                state,
                alert["details"],
                kind,
                self.interval_s,
            )
            return
        if self.window_start is None:
            self.window_start = self.clock()
        self.counts[(kind, state)] += 1
        self.flush()

    def flush(self, force: bool = False) -> str | None:
        """Log the counts if there are any and the interval has passed (or `force`).
        Returns the line logged, if any."""
        now = self.clock()
        if not self.counts or (not force and now - self.last_summary < self.interval_s):
            return None
        start = self.window_start if self.window_start is not None else now
        parts = [
            f"{n} {kind} {state}"
            for (kind, state), n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        # The format starts with the words, so that a filter on the message (the demo's,
        # which shows every alert itself) recognises the line.
        fmt = "alerts in the last %.0f s: %s; each in full on risk-alerts"
        args = (max(now - start, 0.0), ", ".join(parts))
        self.logger.warning(fmt, *args)
        line = fmt % args
        self.counts.clear()
        self.last_summary, self.window_start = now, None
        return line


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
        self.log = AlertLog()

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
        self.log.flush(force=True)  # the counts of the last, partial interval
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
            self.log.add(a)
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
        self.log.flush()  # counts waiting for their interval to pass, when no alert comes
        return out


async def _send_alert(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes) -> None:
    """Publish one alert (acks=all); off the engine's path: failures are logged."""
    try:
        fut = await producer.send(topic, value=value, key=key)
        await fut
    except KafkaError as exc:
        log.warning("publishing alert %s failed: %s", key.decode(errors="replace"), exc)
