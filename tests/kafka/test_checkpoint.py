"""Checkpoints (docs/design.md D14) on a real broker: every step produces freely; the
positions offsets it consumed are committed only at a checkpoint, after every record
produced before it is acknowledged. A processor killed between produce and checkpoint
re-reads those records; the latest record per position stays right."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from stream_risk.kafka.app import StreamProcessor

from .engine_harness import (
    BTC_MARKET,
    TopicReader,
    config,
    now_ms,
    pos,
    produce,
    running,
    tick,
    wait_for,
)

pytestmark = pytest.mark.broker

#: No checkpoint by time or size during a test: only the ones the test asks for.
NEVER = {"commit_interval_ms": 3_600_000, "checkpoint_max_records": 1_000_000}


async def committed(proc: StreamProcessor) -> dict[int, int]:
    c = proc._positions
    assert c is not None
    out = {}
    for tp in sorted(c.assignment()):
        got = await c.committed(tp)
        out[tp.partition] = -1 if got is None else got
    return out


async def ends(proc: StreamProcessor) -> dict[int, int]:
    c = proc._positions
    assert c is not None
    return {tp.partition: proc._live[tp.partition] for tp in c.assignment()}


async def crash(proc: StreamProcessor, task: asyncio.Task[Any]) -> None:
    """Kill the processor between produce and checkpoint: no checkpoint, nothing committed
    (what a SIGKILL leaves; the clients are closed only so the test does not leak them)."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    for t in proc._tasks:
        t.cancel()
        with contextlib.suppress(BaseException):
            await t
    for g in proc._guards.values():
        g.close()
    for c in (proc._positions, proc._ticks, proc._config):
        if c is not None:
            await c.stop()
    assert proc.publisher.producer is not None
    await proc.publisher.producer.stop()


async def test_offsets_are_committed_at_a_checkpoint_after_every_ack(kafka_bootstrap: str) -> None:
    cfg = config(kafka_bootstrap, **NEVER)
    t0 = now_ms()
    async with running(cfg) as proc:
        # Every commit must find every record sent before it acknowledged.
        sent: list[asyncio.Future[Any]] = []
        commits: list[tuple[dict[TopicPartition, int], bool]] = []
        send, positions = proc.publisher._send, proc._positions
        assert positions is not None
        commit = positions.commit

        async def spy_send(step: Any) -> None:
            await send(step)
            sent.extend(step.futures)

        async def spy_commit(offsets: dict[TopicPartition, int]) -> None:
            acked = all(f.done() and f.exception() is None for f in sent)
            commits.append((dict(offsets), acked))
            await commit(offsets)

        proc.publisher._send = spy_send  # type: ignore[method-assign]
        positions.commit = spy_commit
        before = await committed(proc)
        await produce(
            kafka_bootstrap,
            cfg.positions_topic,
            [pos(f"p{i}", "BTC", 1 + i, 45000, t0) for i in range(10)],
        )
        await produce(kafka_bootstrap, cfg.ticks_topic, [tick("BTC", t0, 44000, **BTC_MARKET)])
        async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            # Produced (and acknowledged by the broker) without a checkpoint ...
            await actions.until(lambda rs: len({r.key for r in rs}) == 10, "10 actions")
        await wait_for(lambda: sum(proc._live.values()) == 10, "the positions consumed")
        assert proc.publisher.pending > 0
        # ... so nothing was committed yet.
        assert await committed(proc) == before and commits == []
        assert await proc.checkpoint()
        assert proc.publisher.pending == 0
        assert await committed(proc) == await ends(proc)
        assert commits and all(acked for _, acked in commits)
        assert sum(o for offsets, _ in commits for o in offsets.values()) == 10
        # The engine-added latency: one observation per action, fetch -> ack.
        count = proc.metrics.registry.get_sample_value("stream_risk_engine_latency_seconds_count")
        total = proc.metrics.registry.get_sample_value("stream_risk_engine_latency_seconds_sum")
        assert count is not None and count >= 10
        assert total is not None and 0 < total < count * 5.0


@pytest.mark.not_on_mock(
    "not understood yet: after the crash the restarted engine dead-letters the bad record "
    "once on the mock, not again (2 copies expected), under at-least-once too (D18)"
)
async def test_a_crash_before_the_checkpoint_re_reads_the_records(kafka_bootstrap: str) -> None:
    # At-least-once by name: on a broker with transactions `auto` would be exactly-once,
    # where the crashed run's records are aborted rather than re-read beside (D19).
    cfg = config(kafka_bootstrap, processing_guarantee="at-least-once", **NEVER)
    t0 = now_ms()
    proc = StreamProcessor(cfg)
    await proc.start()
    task = asyncio.create_task(proc.run())
    try:
        await wait_for(lambda: proc.is_ready()[0], "processor ready", proc)
        before = await committed(proc)
        await produce(
            kafka_bootstrap,
            cfg.positions_topic,
            [
                (b"bad", b"not json"),
                pos("p1", "BTC", 10, 45000, t0),
                pos("p2", "BTC", 3, 45000, t0),
                pos("p1", "BTC", 20, 45000, t0 + 1),  # the latest p1
            ],
        )
        await produce(kafka_bootstrap, cfg.ticks_topic, [tick("BTC", t0, 44000, **BTC_MARKET)])
        async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            await actions.until(
                lambda rs: (
                    (a := actions.latest().get("p1")) is not None
                    and a["inputs"]["position"]["size"] == 20
                    and b"p2" in {r.key for r in rs}
                ),
                "the actions of p1 (size 20) and p2",
            )
        async with TopicReader(kafka_bootstrap, cfg.dlq_topic) as dlq:
            await dlq.until(lambda rs: len(rs) == 1, "the bad record in the DLQ")
        await wait_for(lambda: sum(proc._live.values()) == 4, "the positions consumed")
        assert await committed(proc) == before  # produced and acked, not checkpointed
    finally:
        await crash(proc, task)

    async def dlq_copies() -> int:
        marker = b"marker-" + str(now_ms()).encode()
        await produce(kafka_bootstrap, cfg.dlq_topic, [(marker, b"{}")])
        async with TopicReader(kafka_bootstrap, cfg.dlq_topic) as dlq:
            await dlq.until(lambda rs: any(r.key == marker for r in rs), "the marker")
            return sum(r.key == b"bad" for r in dlq.records)

    # Restarted: the records after the last commit are read again (the bad one is
    # dead-lettered again: at-least-once), and the latest record per position is right.
    async with running(cfg) as again:
        assert await dlq_copies() == 2
        table = {p["position_id"]: p for p in again.positions()}
        assert table.keys() == {"p1", "p2"}
        assert again.engine.table.positions["p1"].size == 20
        async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            await actions.until(lambda rs: b"p2" in {r.key for r in rs}, "actions")
            latest = actions.latest()
            p1, p2 = latest["p1"], latest["p2"]
            assert p1 is not None and p1["inputs"]["position"]["size"] == 20
            assert p2 is not None and p2["inputs"]["position"]["size"] == 3
            raw = [r for r in actions.records if r.key == b"p1"]
            assert orjson.loads(raw[-1].value)["inputs"]["position"]["size"] == 20
        # This time the processor stops cleanly: its last checkpoint commits.
        assert await committed(again) != before
    async with running(cfg):
        assert await dlq_copies() == 2  # not re-read a third time
