"""Promise 1 (issue 8), crash: `kill -9` the engine in the middle of a stream, keep the
stream going while it is down, restart it, and check from `risk-actions` alone that every
position's latest action is the one its final position and tick call for, that no position
is missing, and that the duplicates are only those at-least-once allows (counted).

`make test` runs 20,000 ticks over 1,000 positions; `make soak` the issue's 100,000 ticks
over 5,000 positions.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from .stream import StreamShape, SyntheticStream
from .support import (
    EngineProcess,
    Producer,
    Topics,
    latest_by_key,
    now_ms,
    read_all,
    report,
)

pytestmark = pytest.mark.broker


async def crash_and_restart(
    bootstrap: str, tmp_path: Path, shape: StreamShape, kill_at: int, down_for: int
) -> dict[str, Any]:
    topics = Topics.new()
    await topics.create(bootstrap)
    stream = SyntheticStream(shape, topics)
    a = EngineProcess(bootstrap, topics, tmp_path, name="engine-a").start()
    b = EngineProcess(bootstrap, topics, tmp_path, name="engine-b")
    try:
        await a.wait_ready()
        async with Producer(bootstrap) as producer:
            await stream.open_book(producer)
            await stream.produce_ticks(producer, kill_at)
            # Mid-stream: the engine is busy with the ticks just sent.
            m = await a.metrics()
            a_published = m.total("stream_risk_actions_published_total")
            assert a.alive() and a_published > 0
            a.kill9()
            killed_wall = now_ms()
            # The stream goes on while the engine is down...
            await stream.produce_ticks(producer, down_for)
            b.start()
            t_restart = time.monotonic()
            # ...while it restarts and rebuilds (at most half of the rest), and after.
            tail = shape.ticks - kill_at - down_for
            sent = 0
            while (await b.readiness()).status != 200:
                assert b.alive(), b.tail()
                assert time.monotonic() - t_restart < 90, "engine B not ready in 90 s"
                if sent < tail // 2:
                    await stream.produce_ticks(producer, shape.chunk)
                    sent += shape.chunk
                await asyncio.sleep(0.2)
            ready_s = time.monotonic() - t_restart
            await stream.produce_ticks(producer, tail - sent)
        caught_up_s = await b.wait_caught_up(timeout=180)
        recovered_s = time.monotonic() - t_restart
        mb = await b.metrics()
        # As a hedging bot reads them: committed records only (all of them at-least-once).
        records = await read_all(
            bootstrap, topics.actions, timeout=120, isolation_level="read_committed"
        )
        latest = latest_by_key(records)
        counts = stream.book.check_latest(latest)

        # Duplicates: the same assessment (position, event time, inputs) published twice.
        seen: Counter[tuple[Any, ...]] = Counter()
        before_kill: set[tuple[Any, ...]] = set()
        dups_across_crash = dups_elsewhere = 0
        b_records = 0
        for r in records:
            if r.value is None:
                continue
            v = orjson.loads(r.value)
            k = (r.key, v["event_ts"], v["position_ts"], v["tick_ts"], v["action"])
            seen[k] += 1
            by_a = v["assessed_at"] <= killed_wall
            b_records += not by_a
            if seen[k] > 1:
                if not by_a and k in before_kill:
                    dups_across_crash += 1
                else:
                    dups_elsewhere += 1
            elif by_a:
                before_kill.add(k)
        # At-least-once: a duplicate can only be an action engine A published whose
        # acknowledgement it never acted on (its window), re-made by B from the same inputs;
        # never two copies from one run, and at most one per position.
        assert dups_elsewhere == 0
        assert dups_across_crash <= shape.positions
        rebuilt = re.findall(
            r"rebuilt partitions \[[\d, ]*\]: (\d+) records, (\d+) positions, (\d+) actions",
            b.log(),
        )
        settle_actions = sum(int(x[2]) for x in rebuilt)
        figures = {
            "ticks": stream.ticks_sent,
            "positions": shape.positions,
            "updates": stream.updates_sent,
            "closes": stream.closes_sent,
            "killed_after_ticks": kill_at,
            "a_published_before_kill": int(a_published),
            "actions_records": len(records),
            "b_published": int(mb.total("stream_risk_actions_published_total")),
            "b_settle_actions": settle_actions,
            "duplicates": dups_across_crash,
            "b_ready_s": round(ready_s, 2),
            "b_caught_up_s": round(recovered_s, 2),
            "b_catch_up_after_ready_s": round(caught_up_s, 2),
            "rebuild_s": round(mb.total("stream_risk_rebuild_seconds_sum"), 3),
            **counts,
        }
        report("crash (kill -9) and restart", **figures)
        assert b.terminate() == 0
        return figures
    finally:
        a.cleanup()
        b.cleanup()


async def test_kill9_mid_stream_then_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    shape = StreamShape(positions=1_000, assets=20, ticks=20_000, chunk=1_000, pause_s=0.05)
    await crash_and_restart(kafka_bootstrap, tmp_path, shape, kill_at=8_000, down_for=4_000)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_kill9_mid_stream_then_restart_soak(kafka_bootstrap: str, tmp_path: Path) -> None:
    shape = StreamShape(positions=5_000, assets=50, ticks=100_000, chunk=2_000, pause_s=0.05)
    await crash_and_restart(kafka_bootstrap, tmp_path, shape, kill_at=40_000, down_for=20_000)
