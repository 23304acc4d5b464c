"""Shared pieces of the fault tests.

- `Topics`: per-test topic names (`Topics.new()`), created with the project's specs;
  `BookTopics` adds risk-config, risk-alerts and the book stage's two (D17).
- `EngineProcess`: `python -m stream_risk run` as a child process (output to a log file,
  never a pipe: a chatty engine must not block on a full pipe), with `/readyz`, `/metrics`,
  `/positions`, `/exposure` helpers, the partitions it says it was assigned, `kill -9`,
  SIGTERM and its resident memory.
- `contract_assess`: the action a position's inputs call for, written from DESIGN §1
  (score, band, hedge-cost rule, instrument), independent of `stream_risk.assessor`.
- `Book`: what was produced, and so what each position's latest action must be.
- `read_all` / `latest_by_key`: read a whole topic back (never via `end_offsets`, §9).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_helpers import create_topics, mock_host
from prometheus_client.parser import text_string_to_metric_families

from stream_risk.kafka.embedded import free_port
from stream_risk.kafka.topics import TopicNames, TopicSpec, topic_specs, wait_for_partitions

PARTITIONS = 6


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------- topics
@dataclass(frozen=True)
class Topics:
    positions: str
    ticks: str
    actions: str
    dlq: str
    group: str

    @classmethod
    def new(cls) -> Topics:
        tag = uuid.uuid4().hex[:8]
        return cls(
            f"f-positions-{tag}",
            f"f-ticks-{tag}",
            f"f-actions-{tag}",
            f"f-dlq-{tag}",
            f"f-group-{tag}",
        )

    def env(self) -> dict[str, str]:
        return {
            "STREAM_RISK_TOPIC_POSITIONS": self.positions,
            "STREAM_RISK_TOPIC_MARKET_TICKS": self.ticks,
            "STREAM_RISK_TOPIC_ACTIONS": self.actions,
            "STREAM_RISK_TOPIC_DLQ": self.dlq,
        }

    def names(self) -> TopicNames:
        return TopicNames(
            positions=self.positions,
            market_ticks=self.ticks,
            risk_actions=self.actions,
            risk_dlq=self.dlq,
        )

    def specs(self, partitions: int = PARTITIONS) -> list[TopicSpec]:
        return topic_specs(self.names(), partitions=partitions, include_controls=False)

    async def create(self, bootstrap: str, partitions: int = PARTITIONS) -> None:
        await create_topics(bootstrap, self.specs(partitions))


@dataclass(frozen=True)
class BookTopics(Topics):
    """`Topics` plus risk-config, risk-alerts and the book stage's internal topic and
    `risk-book` (DESIGN §13, D17): the stage runs when both of the latter exist."""

    config: str = ""
    alerts: str = ""
    partials: str = ""
    book: str = ""

    @classmethod
    def new(cls) -> BookTopics:
        t = Topics.new()
        tag = t.group.rsplit("-", 1)[1]
        return cls(
            t.positions,
            t.ticks,
            t.actions,
            t.dlq,
            t.group,
            f"f-config-{tag}",
            f"f-alerts-{tag}",
            f"f-book-partials-{tag}",
            f"f-book-{tag}",
        )

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "STREAM_RISK_TOPIC_CONFIG": self.config,
            "STREAM_RISK_TOPIC_ALERTS": self.alerts,
            "STREAM_RISK_TOPIC_BOOK_PARTIALS": self.partials,
            "STREAM_RISK_TOPIC_BOOK": self.book,
        }

    def specs(self, partitions: int = PARTITIONS) -> list[TopicSpec]:
        """The four core topics, the controls and the book's two, with the specs of
        `topic_specs` (risk-book-partials: the positions' partition count; risk-book: 1)."""
        compact = {"cleanup.policy": "compact"}
        return [
            *topic_specs(self.names(), partitions=partitions, include_controls=False),
            TopicSpec(self.config, 1, compact),
            TopicSpec(self.alerts, 1, {"cleanup.policy": "delete"}),
            TopicSpec(self.partials, partitions, compact),
            TopicSpec(self.book, 1, compact),
        ]

    async def create(self, bootstrap: str, partitions: int = PARTITIONS) -> None:
        await create_topics(bootstrap, self.specs(partitions))


# ---------------------------------------------------------------------- the engine process
ASSIGNED = re.compile(r"assigned positions partitions \[([\d, ]*)\]")


def last_assignment(log: str, pattern: re.Pattern[str] = ASSIGNED) -> set[int]:
    """The partitions an engine's log says it was last assigned (`pattern`'s group 1)."""
    found = pattern.findall(log)
    if not found:
        return set()
    return {int(p) for p in found[-1].split(",") if p.strip()}


@dataclass
class Readiness:
    status: int | None  # None: the sidecar did not answer
    reasons: list[str] = field(default_factory=list)


class EngineProcess:
    """One `stream-risk run` child process."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        log_dir: Path,
        *extra: str,
        name: str = "engine",
        env: dict[str, str] | None = None,
        http_port: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.name = name
        self.port = http_port or free_port("127.0.0.1")
        self.log_path = log_dir / f"{name}.log"
        self.extra = extra
        self.env = {**os.environ, **topics.env(), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> EngineProcess:
        host = mock_host(self.bootstrap)
        if host is not None and "--create-topics" in self.extra:
            # The mock cluster takes no CreateTopics: its host makes what the engine would
            # (the engine's own fallback, auto-creation, gives 4 partitions; D18).
            host.create_topics([(s.name, s.partitions) for s in self.topics.specs()])
        cmd = [
            sys.executable,
            "-m",
            "stream_risk",
            "run",
            "--bootstrap-servers",
            self.bootstrap,
            "--http-port",
            str(self.port),
            "--group-id",
            self.topics.group,
            *self.extra,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.started_at = time.monotonic()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait; returns the exit code (fails the test if it hangs)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"{self.name} did not exit {timeout:g}s after SIGTERM:\n{self.tail()}"
            ) from None

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def rss_bytes(self) -> int:
        """Resident memory of the process now (Linux /proc)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    # -------------------------------------------------------------- HTTP
    async def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
            s.get(self.url + path) as r,
        ):
            return r.status, await r.read()

    async def readiness(self) -> Readiness:
        try:
            status, body = await self.get("/readyz")
        except (aiohttp.ClientError, TimeoutError, OSError):
            return Readiness(None)
        return Readiness(status, list(orjson.loads(body).get("reasons", [])))

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait for /readyz 200; returns the seconds since the process started."""
        deadline = time.monotonic() + timeout
        last = Readiness(None)
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.tail()}")
            last = await self.readiness()
            if last.status == 200:
                return time.monotonic() - self.started_at
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout:g}s: {last}\n{self.tail()}")

    async def metrics(self) -> Metrics:
        status, body = await self.get("/metrics")
        assert status == 200
        return Metrics.parse(body.decode())

    async def exposure(self) -> dict[str, Any]:
        """`GET /exposure`."""
        status, body = await self.get("/exposure", timeout=10)
        assert status == 200, body[:300]
        out: dict[str, Any] = orjson.loads(body)
        return out

    def assigned(self) -> set[int]:
        """The positions partitions it says it was last assigned (its log)."""
        return last_assignment(self.log())

    async def positions(self) -> list[dict[str, Any]]:
        """Every row of the table: `GET /positions` page after page (1000 a page)."""
        rows: list[dict[str, Any]] = []
        path = "/positions?limit=1000"
        while True:
            status, body = await self.get(path, timeout=20)
            assert status == 200, body[:300]
            page = orjson.loads(body)
            rows.extend(page["positions"])
            if page["next_cursor"] is None:
                return rows
            path = "/positions?limit=1000&cursor=" + page["next_cursor"]

    async def wait_caught_up(self, timeout: float = 120.0, quiet_s: float = 1.5) -> float:
        """Wait until every consumer-lag gauge is 0 and records consumed stopped moving for
        `quiet_s`. Returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_consumed = -1.0
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.tail()}")
            m = await self.metrics()
            consumed = m.total("stream_risk_records_consumed_total")
            lag = m.total("stream_risk_consumer_lag")
            if consumed != last_consumed:
                last_consumed = consumed
                still_since = time.monotonic()
            elif lag == 0 and time.monotonic() - still_since >= quiet_s:
                return time.monotonic() - t0
            await asyncio.sleep(0.25)
        raise AssertionError(f"{self.name} did not catch up in {timeout:g}s:\n{self.tail()}")


class Metrics:
    """Samples of one /metrics scrape."""

    def __init__(self, samples: list[tuple[str, dict[str, str], float]]) -> None:
        self.samples = samples

    @classmethod
    def parse(cls, text: str) -> Metrics:
        out = []
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out.append((s.name, dict(s.labels), float(s.value)))
        return cls(out)

    def total(self, name: str, **labels: str) -> float:
        return sum(
            v
            for n, lab, v in self.samples
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, lab, v in self.samples:
            if n == name:
                out[lab.get(label, "")] = out.get(lab.get(label, ""), 0.0) + v
        return out


# ---------------------------------------------------------------------- the contract (§1)
THRESHOLDS = (75.0, 60.0, 45.0, 35.0)


@dataclass
class MarketView:
    price: float = 0.0
    ts: int = -1
    vol: float | None = None
    spread: float | None = None
    funding: float = 0.0
    bid: float = 1_000_000.0
    ask: float = 1_000_000.0

    def apply(self, tick: dict[str, Any]) -> None:
        """DESIGN §2: a field missing from a tick keeps its last value."""
        self.price = tick["current_price"]
        self.ts = tick["ts"]
        self.vol = tick.get("volatility_1d", self.vol)
        self.spread = tick.get("spot_spread_bps", self.spread)
        self.funding = tick.get("perp_funding_rate", self.funding)
        self.bid = tick.get("bid_depth_usd", self.bid)
        self.ask = tick.get("ask_depth_usd", self.ask)


@dataclass(frozen=True)
class Expected:
    action: str
    hedge_pct: float
    instrument: str | None
    score: float

    def near_edge(self, tol: float = 1e-6) -> bool:
        return any(abs(self.score - t) < tol for t in THRESHOLDS)


def contract_assess(size: float, age_min: float, m: MarketView) -> Expected:
    """DESIGN §1 with the default config, for action, hedge fraction, instrument, score."""
    assert m.vol is not None and m.spread is not None
    price = m.price
    notional = abs(size * price)
    if size == 0:
        return Expected("HOLD", 0.0, None, 0.0)
    worst = abs(min(size * price * -0.05, size * price * 0.05))
    vol_adj = min(1.0, m.vol / 0.05) if m.vol > 0 else 0.5
    loss = min(30.0, worst / notional / 0.05 * 30 * vol_adj)
    age = min(20.0, age_min / 480 * 20)
    if m.vol >= 0.08:
        volp = 25.0
    elif m.vol >= 0.04:
        volp = 15.0
    else:
        volp = m.vol / 0.04 * 10
    depth = m.bid if size > 0 else m.ask
    liq = min(15.0, notional / depth * 15)
    score = min(100.0, max(0.0, loss + age + volp + liq))
    if size > 0:
        instrument = "perp_short" if m.funding > 0.02 else "spot_sell"
        funding_1d = -(notional * m.funding / 365)
    else:
        instrument = "perp_long" if m.funding < -0.02 else "spot_buy"
        funding_1d = notional * m.funding / 365
    full_bps = (notional * m.spread / 10_000 + max(0.0, funding_1d)) / notional * 10_000
    if full_bps > 50:
        return Expected("HOLD", 0.0, None, score)
    for threshold, (action, h) in zip(
        THRESHOLDS,
        (("LIQUIDATE", 1.0), ("HEDGE_FULL", 1.0), ("HEDGE_PARTIAL", 0.5), ("REDUCE", 0.25)),
        strict=True,
    ):
        if score >= threshold:
            return Expected(action, h, instrument, score)
    return Expected("HOLD", 0.0, None, score)


@dataclass
class PositionView:
    asset: str
    size: float
    entry: float
    ts: int
    age_minutes: float

    def body(self, pid: str) -> dict[str, Any]:
        return {
            "position_id": pid,
            "asset": self.asset,
            "size": self.size,
            "entry_price": self.entry,
            "ts": self.ts,
            "age_minutes": self.age_minutes,
        }


class Book:
    """The final position of every id and the final market of every asset, as produced."""

    def __init__(self) -> None:
        self.positions: dict[str, PositionView | None] = {}  # None: closed
        self.markets: dict[str, MarketView] = {}
        self.partition_of: dict[str, int] = {}

    def expected(self, pid: str, timer_ts: int | None = None) -> Expected | None:
        """The assessment of the position's final inputs, as of the later of the position's
        and the tick's ts (D3), or as of `timer_ts` for a timer re-assessment."""
        pos = self.positions[pid]
        if pos is None:
            return None
        m = self.markets[pos.asset]
        event_ts = max(pos.ts, m.ts)
        if timer_ts is not None and timer_ts > event_ts:
            event_ts = timer_ts  # (a timer before the last input was superseded by it)
        return contract_assess(pos.size, pos.age_minutes + (event_ts - pos.ts) / 60_000, m)

    def check_latest(self, latest: dict[str, dict[str, Any] | None]) -> dict[str, int]:
        """Every position's latest action is what its final inputs call for. It describes
        the final position exactly (DESIGN §3: every update of a position publishes): its
        `position_ts`, size and entry, the notional at the price it used and a hedge of
        |size| × hedge_pct. Under `changed` emission a later *tick* may have been
        suppressed, so the advice is checked against the final market as: the same action,
        hedge fraction and instrument, and a score less than one point away. Closed
        positions end with a tombstone. Returns counts."""
        problems: list[str] = []
        n_open = n_closed = edge = 0
        for pid in self.positions:
            if pid not in latest:
                problems.append(f"{pid}: no action at all")
                continue
            got = latest[pid]
            # A timer re-assessment is as of its due time (the age has grown since).
            timer_ts = got["event_ts"] if got is not None and got["trigger"] == "timer" else None
            exp = self.expected(pid, timer_ts)
            if exp is None:
                n_closed += 1
                if got is not None:
                    problems.append(f"{pid}: closed but its latest action is {got['action']}")
                continue
            n_open += 1
            if got is None:
                problems.append(f"{pid}: open but its latest record is a tombstone")
                continue
            pos = self.positions[pid]
            assert pos is not None
            used = got["inputs"]
            hedge = got.get("suggested_hedge")
            exact = (
                got["position_ts"] == pos.ts
                and used["position"]["size"] == pos.size
                and used["position"]["entry_price"] == pos.entry
                and got["position_notional_usd"] == abs(pos.size * used["market"]["current_price"])
                and (hedge is None) == (got["hedge_pct"] == 0)
                and (hedge is None or hedge["size"] == abs(pos.size) * got["hedge_pct"])
            )
            if not exact:
                problems.append(
                    f"{pid}: the latest record is not of the final position {pos}: "
                    f"position_ts {got['position_ts']}, inputs {used['position']}, "
                    f"notional {got['position_notional_usd']}, hedge {hedge}"
                )
                continue
            if exp.near_edge():
                edge += 1
                continue
            instrument = (got.get("suggested_hedge") or {}).get("instrument")
            if (
                got["action"] != exp.action
                or got["hedge_pct"] != exp.hedge_pct
                or instrument != exp.instrument
                or not abs(got["risk_score"] - exp.score) < 1.0
            ):
                problems.append(
                    f"{pid}: got {got['action']} {got['hedge_pct']} {instrument} "
                    f"score {got['risk_score']:.4f} (position_ts {got['position_ts']}, tick_ts "
                    f"{got['tick_ts']}); the final inputs call for {exp}"
                )
        assert not problems, f"{len(problems)} positions wrong, e.g.:\n" + "\n".join(problems[:15])
        return {"open": n_open, "closed": n_closed, "at_a_band_edge": edge}


# ---------------------------------------------------------------------- producing, reading
class Producer:
    """A test-side producer that remembers where each record went."""

    def __init__(self, bootstrap: str, **kw: Any) -> None:
        opts: dict[str, Any] = {"acks": "all", "linger_ms": 5, "max_batch_size": 1 << 20, **kw}
        self._p = AIOKafkaProducer(bootstrap_servers=bootstrap, **opts)

    async def __aenter__(self) -> Producer:
        await self._p.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._p.stop()

    async def send_many(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None]],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> list[Any]:
        """Send without waiting for each; returns the RecordMetadata of each, in order."""
        futs = [await self._p.send(topic, value=v, key=k, headers=headers) for k, v in records]
        return list(await asyncio.gather(*futs))


async def read_all(
    bootstrap: str,
    topic: str,
    *,
    timeout: float = 60.0,
    idle_ms: int = 500,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Every record of `topic`, per partition in offset order: read until each partition's
    position has reached the high watermark its fetches report and nothing new came for
    `idle_ms`. `read_committed`: what a bot reading committed data sees (exactly-once)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            raise AssertionError(f"topic {topic} does not exist")
        parts = await asyncio.wait_for(wait_for_partitions(consumer, topic), timeout)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=200, max_records=20_000)
            if any(batch.values()):
                last_new = time.monotonic()
                for tp in tps:
                    out.extend(batch.get(tp, ()))
            caught_up = True
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is None or await consumer.position(tp) < hw:
                    caught_up = False
            if caught_up and (time.monotonic() - last_new) * 1000 >= idle_ms:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not read to its end in {timeout:g}s")
    finally:
        await consumer.stop()


def latest_by_key(records: Iterable[Any]) -> dict[str, dict[str, Any] | None]:
    """The last value per key (records of one key are in one partition, in order)."""
    out: dict[str, dict[str, Any] | None] = {}
    for r in records:
        out[r.key.decode()] = None if r.value is None else orjson.loads(r.value)
    return out


def headers_of(record: Any) -> dict[str, str]:
    return {k: bytes(v).decode(errors="replace") for k, v in (record.headers or ())}


async def poll_until(cond: Any, what: str, timeout: float = 60.0, every: float = 0.1) -> float:
    """Await `cond()` (sync or async) until true; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        ok = cond()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


def report(title: str, **figures: Any) -> None:
    """Print the figures a test saw (shown with `pytest -s`, and kept in the CI log via
    `-rA`); one line, `key=value`."""
    body = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[figures] {title}: {body}", flush=True)
