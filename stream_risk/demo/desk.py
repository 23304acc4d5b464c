"""The desk's controls in the demo: a notional limit its simulated book breaches now and then
(`choose_limit`, published to `risk-config` by `publish_limit`), and what `risk-alerts`
says, as readable lines (`AlertWatcher`, `alert_line`).

The limit is computed from the book the simulator *will* hold: a copy of the market and the
book (their random generators included) is stepped ahead over the run's horizon, and the
limit is the 75th percentile of the |net notional| of the asset with the largest typical
one. So the book is over it about a quarter of the time, in a few spells (the spread of
seeds is in docs/design.md D23), whatever the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_risk.demo.book import BookSimulator
from stream_risk.demo.market import MarketSimulator

log = logging.getLogger("stream_risk.demo")

#: The share of the look-ahead the book spends over the limit (1 − the percentile).
LIMIT_QUANTILE: Final = 0.75
#: The look-ahead when the demo runs until Ctrl-C, and its bounds otherwise (seconds).
DEFAULT_HORIZON_S: Final = 120.0
MIN_HORIZON_S: Final = 10.0
MAX_HORIZON_S: Final = 300.0
#: Book events the look-ahead simulates at most (about a second of CPU at 5,000 positions).
MAX_EVENTS: Final = 2_000
#: Samples of the look-ahead at most (the net of a 5,000-position book costs ~1 ms each).
MAX_SAMPLES: Final = 200
#: Who the demo's risk-config record says changed it (the `changed-by` header).
CHANGED_BY: Final = "stream-risk demo"


@dataclass(frozen=True, slots=True)
class DeskLimit:
    """A `max_net_notional_usd` limit on one asset (`risk-config` scope `asset:<ASSET>`)."""

    asset: str
    limit_usd: float
    typical_usd: float  # the median |net notional| of the look-ahead

    @property
    def scope(self) -> str:
        return "asset:" + self.asset

    @property
    def record(self) -> dict[str, float]:
        return {"max_net_notional_usd": self.limit_usd}

    def describe(self) -> str:
        return (
            f"limit {self.asset} net notional ≤ {fmt_usd(self.limit_usd)} (typical "
            f"{fmt_usd(self.typical_usd)}): risk-config {self.scope}"
        )


def round_2sig(x: float) -> float:
    """`x` to two significant digits (a limit a desk would write: 4.7M, not 4,712,345)."""
    if x <= 0:
        return x
    digits = 1 - math.floor(math.log10(x))
    return round(x, digits)


def net_notional(book: BookSimulator, price: Callable[[str], float]) -> dict[str, float]:
    """Σ size × price per asset of the book's open positions."""
    out: dict[str, float] = {}
    for p in book.positions.values():
        out[p.asset] = out.get(p.asset, 0.0) + p.size * price(p.asset)
    return out


def choose_limit(
    market: MarketSimulator,
    book: BookSimulator,
    horizon_s: float,
    step_s: float,
    quantile: float = LIMIT_QUANTILE,
) -> DeskLimit | None:
    """The limit for the asset with the largest median |net notional| over the next
    `horizon_s` seconds stepped every `step_s` (on copies: `market` and `book` do not
    move): the `quantile` of its |net notional|, to two significant digits. None when the
    book holds nothing over the whole look-ahead."""
    m, b = copy.deepcopy((market, book))
    samples: dict[str, list[float]] = {a: [] for a in m.symbols}
    now = 0
    # A big book's flow is many events a second, each O(positions) in the simulator: the
    # look-ahead is cut to MAX_EVENTS of them (20 positions: 2,000 s; 5,000: 8 s).
    per_s = book.rate * max(1, len(book.positions)) / 60.0
    horizon_s = min(horizon_s, MAX_EVENTS / per_s)
    steps = max(1, int(horizon_s / step_s))
    every = max(1, steps // MAX_SAMPLES)  # a big book: O(positions) per sample
    for i in range(steps):
        now += int(step_s * 1000)
        m.step(now, step_s)
        b.step(now, step_s)
        if i % every:
            continue
        nets = net_notional(b, m.price)
        for a, xs in samples.items():
            xs.append(abs(nets.get(a, 0.0)))
    typical = {a: statistics.median(xs) for a, xs in samples.items()}
    asset = max(typical, key=lambda a: typical[a])
    if typical[asset] <= 0:
        return None
    xs = sorted(samples[asset])
    limit = round_2sig(xs[min(len(xs) - 1, int(quantile * len(xs)))])
    return DeskLimit(asset, limit, typical[asset])


def horizon_of(duration: float | None) -> float:
    if duration is None:
        return DEFAULT_HORIZON_S
    return min(MAX_HORIZON_S, max(MIN_HORIZON_S, duration))


async def publish_limit(producer: AIOKafkaProducer, topic: str, limit: DeskLimit) -> None:
    """The limit onto `risk-config` (acknowledged), as a desk would set it."""
    await producer.send_and_wait(
        topic,
        key=limit.scope.encode(),
        value=orjson.dumps(limit.record),
        headers=[("changed-by", CHANGED_BY.encode())],
    )


# ---------------------------------------------------------------------- alerts
def fmt_usd(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    a = abs(x)
    sign = "-" if x < 0 else ""
    if a >= 1e9:
        return f"{sign}${a / 1e9:.2f}B"
    if a >= 1e6:
        return f"{sign}${a / 1e6:.2f}M"
    if a >= 1e3:
        return f"{sign}${a / 1e3:.0f}k"
    return f"{sign}${a:,.0f}"


_LIMIT_NAMES: Final = {
    "max_net_notional_usd": "net notional limit",
    "max_gross_notional_usd": "gross notional limit",
}


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def alert_text(alert: Mapping[str, Any]) -> str:
    """What an alert is about, for a person: `net notional limit BTC: $6.1M > $5.0M`."""
    kind = alert.get("kind")
    d = alert.get("details")
    d = d if isinstance(d, Mapping) else {}
    fired = alert.get("state") == "fired"
    if kind == "exposure_limit":
        scope = str(d.get("scope") or "")
        who = scope.removeprefix("asset:") if scope.startswith("asset:") else scope or "?"
        name = _LIMIT_NAMES.get(str(d.get("limit")), str(d.get("limit") or "limit"))
        value, limit = _num(d.get("value_usd")), _num(d.get("limit_usd"))
        if fired and value is not None:
            return f"{name} {who}: {fmt_usd(value)} > {fmt_usd(limit)}"
        return f"{name} {who}: back under {fmt_usd(limit)}"
    if kind == "stale_market_data":
        asset = d.get("asset", "?")
        age = _num(d.get("max_tick_age_ms"))
        bound = f" for over {age / 1000:g} s" if age is not None else ""
        return f"stale market data {asset}: no tick{bound}" if fired else f"market data {asset}"
    if kind == "liquidate":
        score = _num(d.get("risk_score"))
        sc = f" (score {score:.1f})" if score is not None else ""
        return f"LIQUIDATE {d.get('position_id', '?')} {d.get('asset', '')}{sc}".rstrip()
    if kind == "dlq_rate":
        n, t = d.get("dlq_last_minute"), d.get("threshold_per_minute")
        return f"dead letters: {n} in the last minute (threshold {t})"
    return f"{kind} {alert.get('key', '')}".strip()


def alert_line(alert: Mapping[str, Any], at: float | None = None) -> str:
    """`21:03:04 FIRED    net notional limit BTC: $6.1M > $5.0M` (local time of `at`, epoch
    seconds; default the alert's `ts`)."""
    if at is None:
        ts = _num(alert.get("ts"))
        at = ts / 1000 if ts is not None else time.time()
    state = "FIRED" if alert.get("state") == "fired" else "CLEARED"
    return f"{time.strftime('%H:%M:%S', time.localtime(at))} {state:<7} {alert_text(alert)}"


@dataclass
class AlertWatcher:
    """A consumer of `risk-alerts`: the active alerts (key -> alert) and the recent ones."""

    bootstrap: str
    topic: str
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    fired: int = 0
    on_alert: Callable[[dict[str, Any]], None] | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            client_id="stream-risk-demo-alerts",
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **self.client_kwargs,
        )
        await self._consumer.start()

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not stop.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
            except KafkaError as exc:
                log.warning("view: fetching alerts failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for rec in sorted(
                (r for recs in batch.values() for r in recs), key=lambda r: r.timestamp
            ):
                self.apply(rec.value)

    def apply(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            alert = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(alert, dict) or not isinstance(alert.get("key"), str):
            return
        if alert.get("state") == "fired":
            self.active[alert["key"]] = alert
            self.fired += 1
        else:
            self.active.pop(alert["key"], None)
        self.recent.append(alert)
        if self.on_alert is not None:
            self.on_alert(alert)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError):
                await consumer.stop()


__all__ = [
    "AlertWatcher",
    "DeskLimit",
    "alert_line",
    "alert_text",
    "choose_limit",
    "horizon_of",
    "publish_limit",
    "round_2sig",
]
