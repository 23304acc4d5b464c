"""Promise 3 (issue 8), broker outage: stop the broker under load and start it again. The
engine process stays up, `/readyz` goes 503 (saying why) and back to 200, it reconnects by
itself and goes on, and nothing it had consumed is lost.

The embedded broker keeps its data across a restart only with `s3://` storage (DESIGN §9):
these tests run it on a local S3 emulator, moto's server (`moto[server]`, a dev
dependency), started by the test. A broker with memory storage loses every topic when it
restarts: `test_memory_broker_restart_is_reported` proves the engine says so rather than
producing into nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_risk.kafka.embedded import EmbeddedBroker, free_port

from .stream import StreamShape, SyntheticStream
from .support import (
    EngineProcess,
    Producer,
    Topics,
    latest_by_key,
    poll_until,
    read_all,
    report,
)

pytestmark = pytest.mark.broker

BUCKET = "tansu"
HEALTH_INTERVAL_S = 2.0  # the engine's broker health check (ProcessorConfig.health_interval_s)


# ---------------------------------------------------------------------- fixtures
@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A local S3 emulator (moto's server) with the broker's bucket. Fails, never skips,
    when moto is missing: it is a dev dependency."""
    try:
        import boto3
        import moto  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"moto[server] is needed for the broker-outage test (dev extras): {exc}")
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def s3_broker(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmbeddedBroker]:
    """A Tansu broker on a fixed port keeping its data in the emulator: stop and start it
    again (the same object keeps its port and cluster id) and its topics are still there."""
    # object_store's S3 settings, read from the environment by the broker.
    monkeypatch.setenv("AWS_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    broker = EmbeddedBroker(
        port=free_port(), storage_engine=f"s3://{BUCKET}/", log_path=tmp_path / "tansu.log"
    )
    # The test's own clients log every failed reconnect while the broker is down.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        quiet.setLevel(level)


# ---------------------------------------------------------------------- load and watching
@dataclass
class Load:
    """Ticks (price only) on every asset, continuously, through the outage. A send that
    fails is counted and the load goes on; its outcome is unknown (it may be stored), so
    the test ends with full ticks, acknowledged, that decide every market.

    ~1,000 ticks/s in few, large batches: Tansu's s3 storage keeps one object per record
    batch and lists a partition's objects on every fetch, so on the emulator its fetches
    slow down as the batch count grows (thousands of one-record batches make a consumer
    crawl, with or without a restart); this is a property of the test broker, not of the
    engine."""

    stream: SyntheticStream
    bootstrap: str
    sent: int = 0
    failed: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        p = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=50, request_timeout_ms=3000
        )
        started = False
        while not self.stop.is_set():
            try:
                if not started:
                    await p.start()
                    started = True
                batch = []
                for _ in range(300):
                    a = self.stream.rng.choice(self.stream.assets)
                    m = self.stream.book.markets[a]
                    price = round(m.price * (1 + self.stream.rng.uniform(-0.01, 0.01)), 6)
                    batch.append(
                        (a, {"asset": a, "ts": self.stream._ts(a), "current_price": price})
                    )
                futs = [
                    await p.send(self.stream.topics.ticks, key=a.encode(), value=orjson.dumps(t))
                    for a, t in batch
                ]
                await asyncio.wait_for(asyncio.gather(*futs), 10)
                for a, t in batch:
                    self.stream.book.markets[a].apply(t)
                self.sent += len(batch)
            except (KafkaError, TimeoutError, OSError):
                self.failed += 300
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.3)
        with contextlib.suppress(Exception):
            await p.stop()


@dataclass
class Watch:
    """Samples the engine's /readyz and /healthz every 100 ms."""

    engine: EngineProcess
    samples: list[tuple[float, int | None, list[str], int | None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            r = await self.engine.readiness()
            try:
                health, _ = await self.engine.get("/healthz", timeout=2)
            except Exception:
                health = None
            self.samples.append((time.monotonic(), r.status, r.reasons, health))
            await asyncio.sleep(0.1)

    def first(self, after: float, status: int) -> float | None:
        for t, s, _, _ in self.samples:
            if t >= after and s == status:
                return t
        return None

    def reasons_between(self, t0: float, t1: float) -> set[str]:
        return {r for t, _, rs, _ in self.samples if t0 <= t <= t1 for r in rs}

    def health_between(self, t0: float, t1: float) -> set[int | None]:
        return {h for t, _, _, h in self.samples if t0 <= t <= t1}


@contextlib.asynccontextmanager
async def background(*runners: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        yield
    finally:
        for r in runners:
            r.stop.set()
        await asyncio.gather(*tasks)


def final_ticks(stream: SyntheticStream) -> list[tuple[bytes, bytes]]:
    """A full tick per asset (every market field), deciding each market whatever became of
    the ticks whose sends failed during the outage."""
    out = []
    for a in stream.assets:
        m = stream.book.markets[a]
        tick = {
            "asset": a,
            "ts": stream._ts(a),
            "current_price": round(m.price * 1.02, 6),
            "volatility_1d": 0.03,
            "spot_spread_bps": 2.0,
            "perp_funding_rate": 0.01,
            "bid_depth_usd": 1e6,
            "ask_depth_usd": 1e6,
        }
        m.apply(tick)
        out.append((a.encode(), orjson.dumps(tick)))
    return out


def table_of(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {r["position_id"]: r["position_ts"] for r in rows}


# ---------------------------------------------------------------------- the s3 test
async def outages(
    broker: EmbeddedBroker, tmp_path: Path, shape: StreamShape, downs: list[float]
) -> dict[str, Any]:
    bootstrap = broker.bootstrap_servers
    topics = Topics.new()
    await topics.create(bootstrap)
    stream = SyntheticStream(shape, topics)
    engine = EngineProcess(bootstrap, topics, tmp_path, name="engine").start()
    figures: dict[str, Any] = {"positions": shape.positions, "outages": len(downs)}
    try:
        await engine.wait_ready()
        async with Producer(bootstrap) as producer:
            await stream.open_book(producer)
        await poll_until(
            lambda: _holds(engine, shape.positions), "the engine to hold the book", 60, 0.25
        )
        load = Load(stream, bootstrap)
        watch = Watch(engine)
        to_503: list[float] = []
        to_200: list[float] = []
        stop_took: list[float] = []
        async with background(load, watch):
            for i, down_s in enumerate(downs):
                await asyncio.sleep(3)  # under load
                before_rows = table_of(await engine.positions())
                before_actions = await read_all(bootstrap, topics.actions)
                consumed_before = (await engine.metrics()).total(
                    "stream_risk_records_consumed_total"
                )
                t_stop = time.monotonic()
                await broker.astop()
                stop_took.append(round(time.monotonic() - t_stop, 2))
                t_stop = time.monotonic()  # down from here
                await asyncio.sleep(down_s)
                t_start = time.monotonic()
                await broker.astart()
                await poll_until(
                    lambda t=t_start: watch.first(t, 200) is not None,
                    "/readyz 200 after the broker came back",
                    90,
                )
                t_ready = watch.first(t_start, 200)
                t_503 = watch.first(t_stop, 503)
                assert t_ready is not None
                if down_s >= 3 * HEALTH_INTERVAL_S:
                    # (A bounce shorter than the health check's period may go unseen.)
                    assert t_503 is not None and t_503 < t_start, "never 503 while down"
                if t_503 is not None:
                    to_503.append(round(t_503 - t_stop, 2))
                to_200.append(round(t_ready - t_start, 2))
                assert engine.alive(), engine.tail()
                assert watch.health_between(t_stop, t_ready) == {200}, "liveness must hold"
                reasons = watch.reasons_between(t_stop, t_ready)
                if t_503 is not None:
                    assert any("unreachable" in r or "publishing" in r for r in reasons), reasons
                figures[f"outage{i + 1}_reasons"] = sorted(reasons)
                # Nothing already consumed is lost: the table still holds every version it
                # held, and every action published before is still on the topic.
                after_rows = table_of(await engine.positions())
                assert after_rows == before_rows
                after_actions = await read_all(bootstrap, topics.actions)
                kept = {(r.partition, r.offset, r.value) for r in after_actions}
                assert {(r.partition, r.offset, r.value) for r in before_actions} <= kept
                consumed_after = (await engine.metrics()).total(
                    "stream_risk_records_consumed_total"
                )
                assert consumed_after >= consumed_before
            await asyncio.sleep(2)  # and it goes on under load
        # The final word on each market, and some positions moved, after the last outage.
        async with Producer(bootstrap) as producer:
            await producer.send_many(topics.ticks, final_ticks(stream))
            moved = [stream._position(pid) for pid in stream.pids[:50]]
            await producer.send_many(topics.positions, moved)
        try:
            await engine.wait_caught_up(timeout=120)
        except AssertionError:
            await _fail_if_ticks_starve(engine, topics)
            raise
        latest = latest_by_key(await read_all(bootstrap, topics.actions))
        figures.update(stream.book.check_latest(latest))
        m = await engine.metrics()
        figures.update(
            load_ticks_acked=load.sent,
            load_ticks_failed=load.failed,
            seconds_down=downs,
            seconds_broker_took_to_stop=stop_took,
            seconds_to_503=to_503,
            seconds_to_200_after_restart=to_200,
            broker_connected_now=m.total("stream_risk_broker_connected"),
        )
        assert engine.terminate() == 0, engine.tail()
        report("broker outage (s3 storage)", **figures)
        return figures
    finally:
        engine.cleanup()


async def _fail_if_ticks_starve(engine: EngineProcess, topics: Topics) -> None:
    """The known stall: after a broker restart the engine's market-ticks consumer gets
    empty fetches for ever (its fetch_max_wait_ms is 10 ms, less than the restarted
    broker takes to load a batch back from S3; a consumer with the 500 ms default reads the
    same offsets at once), and /readyz still says 200."""
    m1 = await engine.metrics()
    await asyncio.sleep(5)
    m2 = await engine.metrics()
    kw = {"topic": topics.ticks}
    frozen = m1.total("stream_risk_records_consumed_total", **kw) == m2.total(
        "stream_risk_records_consumed_total", **kw
    )
    lag = m2.total("stream_risk_consumer_lag", **kw)
    if frozen and lag > 0:
        raise AssertionError(
            f"the market-ticks consumer stalled after a broker restart ({lag:.0f} records "
            f"behind, nothing consumed for 5 s); /readyz: {(await engine.readiness()).status}"
        )


async def _holds(engine: EngineProcess, n: int) -> bool:
    rows = await engine.positions()
    return len(rows) == n and all(r["latest_action"] is not None for r in rows)


async def test_broker_outage_under_load(s3_broker: EmbeddedBroker, tmp_path: Path) -> None:
    shape = StreamShape(positions=300, assets=10, ticks=0)
    await outages(s3_broker, tmp_path, shape, downs=[6.0])


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_repeated_broker_outages_soak(s3_broker: EmbeddedBroker, tmp_path: Path) -> None:
    # Short, one longer than the consumer session (10 s: the group forgets the member),
    # and a quick bounce. (The book stays small: on the S3 emulator the broker's fetches
    # slow down with every record batch it stores, see `Load`.)
    shape = StreamShape(positions=500, assets=10, ticks=0)
    await outages(s3_broker, tmp_path, shape, downs=[5.0, 25.0, 1.0])


# ---------------------------------------------------------------------- memory storage
@pytest.mark.soak
async def test_memory_broker_restart_is_reported_soak(tmp_path: Path) -> None:
    """A memory broker restarted has lost every topic (§9): the engine must say so."""
    broker = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log")
    await broker.astart()
    engine: EngineProcess | None = None
    try:
        bootstrap = broker.bootstrap_servers
        topics = Topics.new()
        await topics.create(bootstrap)
        stream = SyntheticStream(StreamShape(positions=50, assets=5, ticks=0), topics)
        engine = EngineProcess(bootstrap, topics, tmp_path, name="engine").start()
        await engine.wait_ready()
        async with Producer(bootstrap) as producer:
            await stream.open_book(producer)
        await poll_until(lambda: _holds(engine, 50), "the engine to hold the book", 60, 0.25)
        await broker.astop()
        await broker.astart()  # same port, empty
        reasons: list[str] = []

        async def says_topics_missing() -> bool:
            r = await engine.readiness()
            reasons[:] = r.reasons
            return r.status == 503 and any("missing" in x for x in r.reasons)

        took = await poll_until(says_topics_missing, "/readyz to name the lost topics", 60)
        m = await engine.metrics()
        assert m.total("stream_risk_ready") == 0
        # ...and it keeps saying so: it does not recreate them behind the operator's back.
        await asyncio.sleep(5)
        r = await engine.readiness()
        assert r.status == 503 and any("missing" in x for x in r.reasons), r
        assert engine.alive()
        report(
            "memory broker restarted",
            seconds_to_report=round(took, 2),
            reasons=reasons,
        )
    finally:
        if engine is not None:
            engine.cleanup()
        await broker.astop()
