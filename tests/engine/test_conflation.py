"""Conflation: within one `step` the latest tick per asset counts and each affected
position is assessed once."""

from __future__ import annotations

import random

import pytest

from stream_risk.engine import Engine, EngineConfig, Event

from . import MIN, T0, actions, by_pid, close, position, price_tick, tick

approx = pytest.approx


def book(engine: Engine) -> None:
    """Three BTC positions and one ETH position, assessed at T0."""
    engine.step(
        [
            tick(),
            tick("ETH", price=3_000.0),
            position("a"),
            position("b", size=-5.0),
            position("c", size=2.0),
            position("e", asset="ETH"),
        ],
        T0,
    )


@pytest.mark.parametrize("emit", ["changed", "all"])
def test_a_thousand_ticks_of_one_asset_give_one_assessment_per_position(emit: str) -> None:
    engine = Engine(EngineConfig(emit=emit))  # type: ignore[arg-type]
    book(engine)
    before = engine.stats.assessments
    # Prices 44,100 … 144,000, one per millisecond; the last one is what counts.
    ticks = [price_tick(ts=T0 + i, price=44_000.0 + 100 * i) for i in range(1, 1001)]
    res = engine.step(ticks, T0 + 1000)

    assert res.assessments == 3  # a, b, c; not e (ETH)
    assert engine.stats.assessments == before + 3
    got = by_pid(res.outputs)
    # Liquidity at 144,000: a 10 × 144,000 / 5e6 × 15 = 4.32 (was 1.32), b 5 × … = 2.16
    # (was 0.66), c 2 × … = 0.864 (was 0.264): c moves 0.6 points, under `changed` muted.
    expected = ["a", "b", "c"] if emit == "all" else ["a", "b"]
    assert sorted(got) == expected
    assert engine.stats.suppressed == (0 if emit == "all" else 1)
    for v in got.values():
        assert v is not None
        assert v["tick_ts"] == T0 + 1000
        assert v["trigger"] == "tick"
    a = got["a"]
    assert a is not None
    assert a["position_notional_usd"] == approx(1_440_000.0)
    # Age 60 + 1/60 min at event_ts T0 + 1 s: age score (60 + 1/60) / 480 × 20.
    assert a["risk_score"] == approx(30 + (60 + 1 / 60) / 24 + 15 + 4.32)


def test_ticks_out_of_order_within_a_batch_leave_the_latest_by_ts() -> None:
    engine = Engine(EngineConfig(emit="all"))
    book(engine)
    ticks = [price_tick(ts=T0 + i, price=44_000.0 + i) for i in range(1, 1001)]
    random.Random(7).shuffle(ticks)
    # Ticks older than the newest already applied are ignored and counted.
    newest = T0
    ignored = 0
    for t in ticks:
        if t.tick.ts < newest:
            ignored += 1
        newest = max(newest, t.tick.ts)
    res = engine.step(ticks, T0 + 1000)

    assert res.assessments == 3
    assert engine.table.markets["BTC"].current_price == 45_000.0
    assert engine.table.markets["BTC"].ts == T0 + 1000
    assert engine.stats.out_of_order_ticks == ignored
    assert all(v["tick_ts"] == T0 + 1000 for v in actions(res))


def test_partial_ticks_in_a_batch_merge_field_by_field() -> None:
    engine = Engine(EngineConfig(emit="all"))
    engine.step([position()], T0)
    batch = [
        tick(ts=T0 + 1, funding=0.01, bid=1e6),
        *[price_tick(ts=T0 + 1 + i, price=44_000.0) for i in range(1, 500)],
        tick(ts=T0 + 600, vol=0.09, spread=None, funding=None, bid=None, ask=None),
    ]
    res = engine.step(batch, T0 + 600)
    assert res.assessments == 1
    (v,) = actions(res)
    # vol 0.09 (last), spread 3 (first), funding 0.01 → spot sell, bid depth 1e6 → 6.6.
    assert v["risk_breakdown"]["volatility_regime"] == 25.0
    assert v["risk_breakdown"]["size_vs_liquidity"] == approx(6.6)
    assert v["suggested_hedge"]["instrument"] == "spot_sell"
    assert v["risk_score"] == approx(30 + (60 + 0.6 / 60) / 24 + 25 + 6.6)
    assert v["action"] == "HEDGE_FULL"  # 61.6 ≥ 60


def test_many_updates_of_one_position_in_a_batch_give_one_assessment_of_the_last() -> None:
    engine = Engine()
    engine.step([tick()], T0)
    batch = [position(size=float(i), ts=T0 + i) for i in range(1, 101)]
    res = engine.step(batch, T0 + 100)
    assert res.assessments == 1
    (v,) = actions(res)
    assert v["position_notional_usd"] == approx(100 * 44_000.0)
    assert v["position_ts"] == T0 + 100


def test_a_position_update_and_ticks_of_its_asset_give_one_assessment() -> None:
    engine = Engine(EngineConfig(emit="all"))
    book(engine)
    batch: list[Event] = [
        price_tick(ts=T0 + 1, price=44_100.0),
        position("a", size=20.0, ts=T0 + 2),
        price_tick(ts=T0 + 3, price=44_200.0),
    ]
    res = engine.step(batch, T0 + 3)
    assert res.assessments == 3  # a, b, c: once each
    got = by_pid(res.outputs)
    a = got["a"]
    assert a is not None
    assert a["trigger"] == "position"  # the position update names the trigger
    assert a["position_notional_usd"] == approx(20 * 44_200.0)
    assert a["event_ts"] == T0 + 3
    b = got["b"]
    assert b is not None and b["trigger"] == "tick"


def test_two_assets_in_one_batch_assess_each_position_once() -> None:
    engine = Engine(EngineConfig(emit="all"))
    book(engine)
    batch = []
    for i in range(1, 201):
        batch.append(price_tick("BTC", T0 + i, 44_000.0 + i))
        batch.append(price_tick("ETH", T0 + i, 3_000.0 + i))
    res = engine.step(batch, T0 + 200)
    assert res.assessments == 4
    assert sorted(by_pid(res.outputs)) == ["a", "b", "c", "e"]


def test_a_close_at_the_end_of_a_batch_wins_over_its_ticks() -> None:
    engine = Engine(EngineConfig(emit="all"))
    book(engine)
    res = engine.step([price_tick(ts=T0 + 1, price=45_000.0), close("a")], T0 + 1)
    assert res.assessments == 2  # b and c
    got = by_pid(res.outputs)
    assert sorted(got) == ["a", "b", "c"]
    assert got["a"] is None
    assert res.outputs[0].value is None  # the tombstone comes first


def test_a_close_then_reopen_in_one_batch_publishes_tombstone_then_first_action() -> None:
    engine = Engine()
    book(engine)
    res = engine.step([close("a"), position("a", ts=T0 + MIN)], T0 + MIN)
    assert [o.position_id for o in res.outputs] == ["a", "a"]
    assert res.outputs[0].value is None
    reopened = res.outputs[1].value
    assert reopened is not None and reopened["trigger"] == "position"
    assert res.assessments == 1
