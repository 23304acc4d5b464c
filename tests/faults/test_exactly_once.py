"""Exactly-once against a zombie (issue 15, docs/design.md D19), on librdkafka's mock
cluster (the broker here with transactions; Tansu has none, DESIGN §9).

A zombie: instance A owns the positions partition, is paused (SIGSTOP: a GC pause, a
network partition), loses the partition to B when its session expires, and is resumed
after B has moved the positions on. A still holds the old state; the tick waiting for it
makes it assess its old positions and publish.

- at-least-once: nothing stops A's records: a position's latest record on `risk-actions`
  goes back to the size it had before B's update (the test counts those records);
- exactly-once: B's transactional producer for the partition fenced A's when B took the
  partition (same transactional id, newer epoch): A's sends fail with `ProducerFenced`,
  nothing A makes is committed, and a `read_committed` reader sees only B's records.

Both run with `--emit all` (every assessment published), so that A does publish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_risk.kafka.mock_cluster import MockCluster

from .support import EngineProcess, Producer, Topics, last_assignment, now_ms, poll_until, report

N = 40
SESSION_MS = 3000
MKT = {"volatility_1d": 0.03, "spot_spread_bps": 2}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockCluster]:
    """A mock cluster of its own (whatever the session's broker is): the one with
    transactions."""
    with MockCluster() as cluster:
        yield cluster


async def committed(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of `topic` (one partition), in offset order."""
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        out: list[Any] = []
        idle = 0
        while idle < 4:
            batch = await c.getmany(tp, timeout_ms=250)
            got = batch.get(tp, [])
            out.extend(got)
            idle = 0 if got else idle + 1
        return out
    finally:
        await c.stop()


def pos(i: int, size: float, ts: int) -> tuple[bytes, bytes]:
    pid = f"p{i:03d}"
    body = {"position_id": pid, "asset": "BTC", "size": size, "entry_price": 40_000, "ts": ts}
    return pid.encode(), orjson.dumps(body)


def tick(price: float, ts: int) -> tuple[bytes, bytes]:
    return b"BTC", orjson.dumps({"asset": "BTC", "ts": ts, "current_price": price, **MKT})


def stale_after_update(records: list[Any], new_size: dict[str, float]) -> int:
    """Records that put a position back to a size older than its update: after the first
    record of a key with its new size, any record of that key with another size."""
    seen_new: set[str] = set()
    stale = 0
    for r in records:
        if r.value is None:
            continue
        key = r.key.decode()
        if key not in new_size:
            continue
        if abs(_size(orjson.loads(r.value)) - new_size[key]) < 1e-9:
            seen_new.add(key)
        elif key in seen_new:
            stale += 1
    return stale


def _size(action: dict[str, Any]) -> float:
    """The |size| an action was made for: its notional over the price it used."""
    m = action["inputs"]["market"]["current_price"]
    return float(action["position_notional_usd"]) / float(m)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_a_zombie_cannot_publish_under_exactly_once(
    mock: MockCluster, tmp_path: Path, guarantee: str
) -> None:
    boot = mock.bootstrap_servers
    topics = Topics.new()
    mock.create_topics([(t, 1) for t in (topics.positions, topics.ticks, topics.actions)])
    mock.create_topics([(topics.dlq, 1)])
    args = ("--emit", "all", "--processing-guarantee", guarantee)
    env = {"STREAM_RISK_SESSION_TIMEOUT_MS": str(SESSION_MS)}
    a = EngineProcess(boot, topics, tmp_path, *args, name="engine-a", env=env).start()
    b = EngineProcess(boot, topics, tmp_path, *args, name="engine-b", env=env)
    try:
        await a.wait_ready()
        t0 = now_ms()
        async with Producer(boot) as producer:
            await producer.send_many(topics.positions, [pos(i, 1.0, t0) for i in range(N)])
            await producer.send_many(topics.ticks, [tick(40_000, t0)])
            await poll_until(
                lambda: _count(boot, topics.actions, N), "A's first actions", timeout=60
            )
            b.start()
            await b.wait_ready()
            assert last_assignment(a.log()) == {0} and last_assignment(b.log()) == set()
            a.pause()  # the zombie-to-be: silent past its session
            await poll_until(lambda: last_assignment(b.log()) == {0}, "B takes over", 60)
            # B moves every position on: size 1 -> 2.
            t1 = now_ms()
            await producer.send_many(topics.positions, [pos(i, 2.0, t1) for i in range(N)])
            await poll_until(
                lambda: _all_sized(boot, topics.actions, N, 2.0), "B's updates", timeout=60
            )
            # A tick for A to wake up to, then A resumes with its old state (size 1).
            await producer.send_many(topics.ticks, [tick(40_100, t1 + 1)])
            await asyncio.sleep(1.0)  # B handles the tick (its records are the last)
            a.resume()
            await asyncio.sleep(4.0)  # A's loop runs until its group tells it to go
        records = await committed(boot, topics.actions)
        stale = stale_after_update(records, {f"p{i:03d}": 2.0 for i in range(N)})
        latest: dict[str, dict[str, Any]] = {}
        for r in records:
            if r.value is not None:
                latest[r.key.decode()] = orjson.loads(r.value)
        backwards = sum(1 for a_ in latest.values() if abs(_size(a_) - 2.0) > 1e-9)
        fenced = "was fenced" in a.log()
        report(
            f"zombie ({guarantee})",
            committed_records=len(records),
            stale_records_after_update=stale,
            positions_whose_latest_went_back=backwards,
            zombie_fenced=fenced,
        )
        if guarantee == "exactly-once":
            assert stale == 0 and backwards == 0, a.tail()
            assert fenced, a.tail()
        else:
            # Nothing fences A: it published from its old state after B's records.
            assert stale > 0, (
                "the zombie published nothing after resuming: see its log\n" + a.tail()
            )
    finally:
        for e in (a, b):
            if e.alive():
                e.resume()
                e.kill9()


def _count(boot: str, topic: str, n: int) -> Any:
    async def check() -> bool:
        return len({r.key for r in await committed(boot, topic)}) >= n

    return check()


def _all_sized(boot: str, topic: str, n: int, size: float) -> Any:
    async def check() -> bool:
        latest: dict[bytes, Any] = {}
        for r in await committed(boot, topic):
            latest[r.key] = r.value
        sized = [
            v for v in latest.values() if v is not None and abs(_size(orjson.loads(v)) - size) < 1e-9
        ]
        return len(sized) >= n

    return check()

