"""The engine's fast paths against the plain ones they replace (byte for byte).

- Conflation marks an asset's positions once per step (`ticked`), where the plain rule
  marks them on every tick of the asset: same assessments, same outputs, same order.
- A published action is kept as what made it (`MadeAction`), not as its bytes: making it
  again gives the published bytes and dict exactly (`GET /positions` shows it).
- Actions read back on a rebuild keep their bytes, compact (not orjson's 4-8 KiB buffer).
"""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_risk.engine import Engine, EngineConfig, Event, StepResult
from stream_risk.engine.actions import LastAction, MadeAction
from stream_risk.engine.events import Trigger
from stream_risk.models import MarketTick

from . import MIN, T0, close, position, price_tick, tick


class PlainEngine(Engine):
    """The engine with the plain conflation rule: every tick marks its asset's positions."""

    def _apply_tick(
        self,
        tick: MarketTick,
        lineage: Any,
        now_ms: int | None,
        affected: dict[str, Trigger],
        res: StepResult,
        ticked: set[str],
    ) -> None:
        super()._apply_tick(tick, lineage, now_ms, affected, res, set())


ASSETS = ("BTC", "ETH", "SOL")
PIDS = ("p1", "p2", "p3", "p4", "p5")


def random_batches(seed: int, steps: int = 40) -> list[tuple[list[Event], int]]:
    """Batches mixing ticks (several per asset, some stale or duplicated), position updates
    that move positions between assets, closes and reopenings."""
    rnd = random.Random(seed)
    prices = {"BTC": 44_000.0, "ETH": 2_400.0, "SOL": 150.0}
    batches: list[tuple[list[Event], int]] = []
    now = T0
    offset = 0
    for _ in range(steps):
        now += rnd.choice((1_000, 10_000, 5 * MIN, 70 * MIN))
        events: list[Event] = []
        for _ in range(rnd.randint(1, 12)):
            offset += 1
            r = rnd.random()
            asset = rnd.choice(ASSETS)
            if r < 0.5:
                prices[asset] *= 1 + rnd.gauss(0, 0.02)
                ts = now - rnd.choice((0, 0, 0, 500, 2 * MIN))
                if rnd.random() < 0.3:
                    events.append(tick(asset, ts, prices[asset], vol=rnd.uniform(0.01, 0.1)))
                else:
                    events.append(price_tick(asset, ts, prices[asset], offset=offset))
            elif r < 0.85:
                events.append(
                    position(
                        rnd.choice(PIDS),
                        asset,
                        size=rnd.choice((-1, 1)) * rnd.uniform(1, 50),
                        entry=prices[asset] * rnd.uniform(0.9, 1.1),
                        ts=now - rnd.choice((0, 0, 1_000)),
                        partition=rnd.randrange(3),
                        offset=offset,
                    )
                )
            else:
                events.append(close(rnd.choice(PIDS), offset=offset))
        batches.append((events, now))
    return batches


def outputs_bytes(res: StepResult) -> list[tuple[str, bytes | None, int]]:
    return [(o.position_id, o.data, o.partition) for o in res.outputs]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), emit=st.sampled_from(["changed", "all"]))
def test_conflation_once_per_asset_equals_the_plain_rule(seed: int, emit: str) -> None:
    fast = Engine(EngineConfig(emit=emit))  # type: ignore[arg-type]
    plain = PlainEngine(EngineConfig(emit=emit))  # type: ignore[arg-type]
    for events, now in random_batches(seed):
        a, b = fast.step(events, now), plain.step(events, now)
        assert outputs_bytes(a) == outputs_bytes(b)
        assert a.assessments == b.assessments
        assert [r.reason for r in a.rejected] == [r.reason for r in b.rejected]
        assert fast.stats == plain.stats
        assert fast.snapshot() == plain.snapshot()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), emit=st.sampled_from(["changed", "all"]))
def test_a_kept_action_makes_the_published_bytes_again(seed: int, emit: str) -> None:
    engine = Engine(EngineConfig(emit=emit))  # type: ignore[arg-type]
    published: dict[str, bytes] = {}
    for events, now in random_batches(seed):
        res = engine.step(events, now)
        res.outputs += engine.fire_timers(now + 30 * MIN).outputs
        for o in res.outputs:
            if o.data is None:
                published.pop(o.position_id, None)
            else:
                assert o.data == orjson.dumps(o.value)
                published[o.position_id] = o.data
        for pid, pos in engine.table.positions.items():
            last = pos.last
            if last is None:
                continue
            assert isinstance(last, MadeAction)
            assert last.value == published[pid]
            assert last.record() == orjson.loads(published[pid])
    for row in engine.snapshot():
        if row["latest_action"] is not None:
            assert orjson.dumps(row["latest_action"]) == published[row["position_id"]]


def test_a_restored_action_keeps_compact_bytes() -> None:
    first = Engine()
    res = first.step([tick(), position("p1", partition=2)], T0)
    value = res.outputs[0].value
    assert value is not None

    engine = Engine()
    engine.step([tick()], T0 + 1_000)
    engine.load([position("p1", partition=2)])
    engine.restore(2, "p1", value)
    engine.settle(2, T0 + 1_000)
    last = engine.table.positions["p1"].last
    assert type(last) is LastAction
    assert last.value == orjson.dumps(value)
    assert last.record() == value
    # Its own allocation, not orjson's oversized buffer (4 KiB and up for a record).
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        engine.restore(2, "p1", value)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 2 * len(orjson.dumps(value)) + 1024
