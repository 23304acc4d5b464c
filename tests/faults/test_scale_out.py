"""Promise 2 (issue 8), scale-out: two `stream-risk run` processes in one consumer group
share the `positions` partitions; every position is owned by exactly one; stop one and the
other takes its partitions, rebuilds them and goes on with the timers it had; start it
again and the partitions move back. After each settle no position is without an action.

`make test`: 600 positions, the leaver stops with SIGTERM. `make soak`: 5,000 positions,
the leaver is `kill -9`ed (the survivor waits out its session), and re-evaluation timers
are set to one minute so the survivor is seen firing the leaver's timers at the very
times the leaver had scheduled them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from .stream import StreamShape, SyntheticStream
from .support import (
    PARTITIONS,
    EngineProcess,
    Producer,
    Topics,
    last_assignment,
    latest_by_key,
    poll_until,
    read_all,
    report,
)

pytestmark = pytest.mark.broker


class Owner:
    """What one engine holds, from its /positions (and its own word for the assignment)."""

    def __init__(self, engine: EngineProcess, rows: list[dict[str, Any]], parts: dict[str, int]):
        self.engine = engine
        self.rows = {r["position_id"]: r for r in rows}
        self.pids = set(self.rows)
        self.partitions = {parts[p] for p in self.pids}
        self.assigned = last_assignment(engine.log())


async def settled(engines: list[EngineProcess], stream: SyntheticStream) -> list[Owner] | None:
    """Each engine ready, the partitions split with none shared and none left over, each
    engine holding exactly the positions of the partitions it was assigned; else None."""
    for e in engines:
        if (await e.readiness()).status != 200:
            return None
    owners = [Owner(e, await e.positions(), stream.book.partition_of) for e in engines]
    every = set(range(PARTITIONS))
    open_ids = {p for p, v in stream.book.positions.items() if v is not None}
    assigned = [o.assigned for o in owners]
    if any(not a for a in assigned) or set().union(*assigned) != every:
        return None
    if sum(len(a) for a in assigned) != PARTITIONS:  # a partition claimed twice
        return None
    if set().union(*(o.pids for o in owners)) != open_ids:
        return None
    if sum(len(o.pids) for o in owners) != len(open_ids):  # a position held twice
        return None
    if any(not o.partitions <= o.assigned for o in owners):
        return None
    return owners


async def wait_settled(
    engines: list[EngineProcess], stream: SyntheticStream, timeout: float = 60.0
) -> tuple[list[Owner], float]:
    t0 = time.monotonic()
    result: list[list[Owner]] = []

    async def check() -> bool:
        owners = await settled(engines, stream)
        if owners is None:
            return False
        result.append(owners)
        return True

    await poll_until(check, f"{[e.name for e in engines]} to settle", timeout, every=0.25)
    return result[-1], round(time.monotonic() - t0, 2)


def no_position_without_action(owners: list[Owner]) -> None:
    bare = [pid for o in owners for pid, r in o.rows.items() if r["latest_action"] is None]
    assert not bare, f"{len(bare)} positions without an action, e.g. {bare[:5]}"


async def handover(
    bootstrap: str, tmp_path: Path, shape: StreamShape, kill: bool, env: dict[str, str]
) -> dict[str, Any]:
    topics = Topics.new()
    await topics.create(bootstrap)
    stream = SyntheticStream(shape, topics)
    a = EngineProcess(bootstrap, topics, tmp_path, name="engine-a", env=env).start()
    b = EngineProcess(bootstrap, topics, tmp_path, name="engine-b", env=env)
    b2 = EngineProcess(bootstrap, topics, tmp_path, name="engine-b2", env=env)
    figures: dict[str, Any] = {"positions": shape.positions}
    try:
        await a.wait_ready()
        async with Producer(bootstrap) as producer:
            await stream.open_book(producer)
            (only_a,), _ = await wait_settled([a], stream)
            no_position_without_action([only_a])
            assert only_a.assigned == set(range(PARTITIONS))
            timers = {pid: r["next_evaluation_ts"] for pid, r in only_a.rows.items()}

            # B joins: a 3 + 3 split, each position owned once, B's half rebuilt with the
            # timers A had set (nothing changed, so nothing is re-assessed).
            b.start()
            (oa, ob), figures["join_settle_s"] = await wait_settled([a, b], stream)
            assert len(oa.assigned) == len(ob.assigned) == PARTITIONS // 2
            no_position_without_action([oa, ob])
            for pid, r in ob.rows.items():
                assert r["next_evaluation_ts"] == timers[pid], pid
            figures["split"] = f"{sorted(oa.assigned)}+{sorted(ob.assigned)}"

            # It goes on: a tick on every asset reaches every position, whoever owns it.
            await with_actions(bootstrap, topics, stream, producer)

            # B leaves: A takes its partitions, rebuilds them and keeps B's timers.
            (oa, ob), _ = await wait_settled([a, b], stream)
            b_timers = {pid: r["next_evaluation_ts"] for pid, r in ob.rows.items()}
            t_leave = time.monotonic()
            if kill:
                b.kill9()
            else:
                assert b.terminate() == 0, b.tail()
            (oa,), _ = await wait_settled([a], stream, timeout=90)
            figures["takeover_s"] = round(time.monotonic() - t_leave, 2)
            assert oa.assigned == set(range(PARTITIONS))
            no_position_without_action([oa])
            for pid, due in b_timers.items():
                assert oa.rows[pid]["next_evaluation_ts"] == due, pid
            await with_actions(bootstrap, topics, stream, producer)

            # B again: the partitions move back, and still one owner per position.
            (oa,), _ = await wait_settled([a], stream)
            a_timers = {pid: r["next_evaluation_ts"] for pid, r in oa.rows.items()}
            b2.start()
            (oa, ob2), figures["rejoin_settle_s"] = await wait_settled([a, b2], stream)
            assert len(oa.assigned) == len(ob2.assigned) == PARTITIONS // 2
            no_position_without_action([oa, ob2])
            for pid, r in ob2.rows.items():
                assert r["next_evaluation_ts"] == a_timers[pid], pid
            if env:
                figures["timers_fired_by_new_owner"] = await timers_fire(
                    bootstrap, topics, ob2, a_timers
                )
        records = await read_all(bootstrap, topics.actions)
        figures.update(stream.book.check_latest(latest_by_key(records)))
        figures["actions_records"] = len(records)
        assert a.terminate() == 0 and b2.terminate() == 0
        report(f"scale-out ({'kill -9' if kill else 'SIGTERM'})", **figures)
        return figures
    finally:
        for e in (a, b, b2):
            e.cleanup()


async def with_actions(
    bootstrap: str, topics: Topics, stream: SyntheticStream, producer: Producer
) -> None:
    """One tick per asset that moves every score by well over a point (volatility
    between 1 % and 10 %: 2.5 vs 25 volatility points, DESIGN §1), so `changed` emission
    publishes for every position; each must get an action made from it (its latest action
    carries that tick's ts), whichever engine owns it."""
    ticks = []
    for a in stream.assets:
        m = stream.book.markets[a]
        vol = 0.1 if (m.vol or 0) < 0.05 else 0.01
        tick = {"asset": a, "ts": stream._ts(a), "current_price": m.price, "volatility_1d": vol}
        m.apply(tick)
        ticks.append((a.encode(), orjson.dumps(tick)))
    await producer.send_many(topics.ticks, ticks)
    book = stream.book
    want = {p: book.markets[v.asset].ts for p, v in book.positions.items() if v is not None}

    async def all_acted() -> bool:
        latest = latest_by_key(await read_all(bootstrap, topics.actions, idle_ms=200))
        return all((latest.get(p) or {}).get("tick_ts") == ts for p, ts in want.items())

    await poll_until(all_acted, "an action for every position after the tick", 60, every=0.5)


async def timers_fire(bootstrap: str, topics: Topics, owner: Owner, due: dict[str, int]) -> int:
    """Wait past the timers the previous owner set; the new owner fires each at its time."""
    wanted = {pid: due[pid] for pid in owner.pids}
    deadline_ms = max(wanted.values())

    async def fired() -> bool:
        recs = await read_all(bootstrap, topics.actions, idle_ms=200)
        got = set()
        for r in recs:
            if r.value is None:
                continue
            v = orjson.loads(r.value)
            pid = r.key.decode()
            if v["trigger"] == "timer" and v["event_ts"] == wanted.get(pid):
                got.add(pid)
        return got >= set(wanted)

    wait_s = max(0.0, (deadline_ms - time.time() * 1000) / 1000) + 60
    await poll_until(fired, "every inherited timer to fire at its time", wait_s, every=2)
    return len(wanted)


async def test_two_processes_share_hand_over_and_take_back(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    shape = StreamShape(positions=600, assets=10, ticks=0)
    await handover(kafka_bootstrap, tmp_path, shape, kill=False, env={})


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_two_processes_kill9_hand_over_with_timers_soak(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    shape = StreamShape(positions=5_000, assets=50, ticks=0)
    one_minute = {
        "STREAM_RISK_RISK__FAST_RE_EVAL_MINUTES": "1",
        "STREAM_RISK_RISK__MEDIUM_RE_EVAL_MINUTES": "1",
        "STREAM_RISK_RISK__SLOW_RE_EVAL_MINUTES": "1",
    }
    await handover(kafka_bootstrap, tmp_path, shape, kill=True, env=one_minute)
