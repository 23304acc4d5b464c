"""Emission policy: `changed` (default) publishes only what a consumer needs to see;
`all` publishes every assessment; a close publishes a tombstone."""

from __future__ import annotations

import pytest

from stream_risk.engine import Engine, EngineConfig

from . import MIN, T0, close, only, position, price_tick, tick, tombstones

approx = pytest.approx


def started(emit: str = "changed") -> Engine:
    engine = Engine(EngineConfig(emit=emit))  # type: ignore[arg-type]
    v = only(engine.step([tick(), position()], T0))  # the first assessment publishes
    assert v["risk_score"] == approx(48.82)
    return engine


def test_the_first_assessment_publishes() -> None:
    engine = started()
    assert engine.stats.published == 1 and engine.stats.suppressed == 0


def test_nothing_material_changed_is_suppressed() -> None:
    engine = started()
    # A new price tick at the same price, 1 s later: the score moves 1/1440 (age).
    res = engine.step([price_tick(ts=T0 + 1000)], T0 + 1000)
    assert res.assessments == 1 and res.outputs == []
    assert engine.stats.suppressed == 1
    assert engine.stats.published == 1


def test_score_moves_are_measured_from_the_last_published_score() -> None:
    engine = started()
    # A tick 22.8 minutes on: age 82.8 → 3.45 points (+0.95 on 48.82): suppressed.
    res = engine.step([price_tick(ts=T0 + 22 * MIN + 48_000)], T0 + 22 * MIN + 48_000)
    assert res.assessments == 1 and res.outputs == []
    # 25.2 minutes on: age 85.2 → 3.55 (+0.10 on the last assessment, +1.05 on the last
    # published): out.
    v = only(engine.step([price_tick(ts=T0 + 25 * MIN + 12_000)], T0 + 25 * MIN + 12_000))
    assert v["risk_score"] == approx(49.87)
    assert engine.stats.suppressed == 1


def test_every_update_of_the_position_itself_publishes() -> None:
    engine = started()
    # The same position again one second later, age 60 as of the new ts: the score does
    # not move at all, yet the update is published (the latest record is as of it).
    v = only(engine.step([position(ts=T0 + 1000)], T0 + 1000))
    assert v["trigger"] == "position" and v["position_ts"] == T0 + 1000
    assert v["risk_score"] == approx(48.82)
    # Back to age 60 after a larger age: published as well.
    only(engine.step([position(ts=T0 + 2000, age=85.2)], T0 + 2000))
    v = only(engine.step([position(ts=T0 + 3000, age=60.0)], T0 + 3000))
    assert v["risk_score"] == approx(48.82)
    assert engine.stats.suppressed == 0


def test_the_score_threshold_is_configurable() -> None:
    engine = Engine(EngineConfig(score_change_points=0.5))
    engine.step([tick(), position()], T0)
    v = only(engine.step([position(ts=T0 + 1000, age=75.0)], T0 + 1000))
    assert v["risk_score"] == approx(48.82 + 0.625)  # age 75 → 3.125


def test_an_action_change_publishes_even_when_the_score_barely_moves() -> None:
    engine = Engine()
    # Vol 0.045: loss 30 × 0.9 = 27, vol 15, liquidity 1.32. Age 30 → 1.25: 44.57 REDUCE.
    v = only(engine.step([tick(vol=0.045), position(age=30.0)], T0))
    assert v["risk_score"] == approx(44.57)
    assert (v["action"], v["hedge_pct"]) == ("REDUCE", 0.25)
    # Age 45 → 1.875: 45.195 (+0.625) crosses 45: HEDGE_PARTIAL.
    v = only(engine.step([position(ts=T0 + 1000, age=45.0)], T0 + 1000))
    assert v["risk_score"] == approx(45.195)
    assert (v["action"], v["hedge_pct"]) == ("HEDGE_PARTIAL", 0.5)


def test_a_hedge_pct_change_alone_publishes() -> None:
    engine = started()
    v = only(engine.step([position(config={"hedge_partial_pct": 0.6})], T0 + 1000))
    assert (v["action"], v["hedge_pct"]) == ("HEDGE_PARTIAL", 0.6)
    assert v["risk_score"] == approx(48.82)


def test_an_instrument_change_alone_publishes() -> None:
    engine = started()
    # Funding 0.08 → 0.01: spot sell instead of perp short; the score does not use funding.
    ev = tick(ts=T0 + 1000, funding=0.01)
    v = only(engine.step([ev], T0 + 1000))
    assert v["suggested_hedge"]["instrument"] == "spot_sell"
    assert v["risk_score"] == approx(48.82 + 1 / 1440)
    # Funding 0.01 → 0.015: the cost moves, the instrument does not: suppressed.
    res = engine.step([tick(ts=T0 + 2000, funding=0.015)], T0 + 2000)
    assert res.assessments == 1 and res.outputs == []


def test_the_stale_flag_flipping_publishes_both_ways() -> None:
    engine = started()
    # 61 s after the only tick: stale (older than 60 s), same numbers otherwise.
    v = only(engine.step([position(ts=T0 + 61_000)], T0 + 61_000))
    assert v["stale_market_data"] is True
    assert engine.stats.stale_assessments == 1
    # Still stale: nothing to tell (a timer-free, tick-free step just ages the data).
    res = engine.step([price_tick(asset="ETH", ts=T0 + 62_000)], T0 + 62_000)
    assert res.assessments == 0 and res.outputs == []
    # A fresh tick: no longer stale.
    v = only(engine.step([price_tick(ts=T0 + 63_000)], T0 + 63_000))
    assert v["stale_market_data"] is False


def test_stale_means_strictly_older_than_max_tick_age() -> None:
    engine = Engine(EngineConfig(emit="all"))
    engine.step([tick(), position()], T0)
    v = only(engine.step([position(ts=T0 + 60_000)], T0 + 60_000))
    assert v["stale_market_data"] is False  # exactly 60 s old
    v = only(engine.step([position(ts=T0 + 60_001)], T0 + 60_001))
    assert v["stale_market_data"] is True


def test_max_tick_age_is_configurable() -> None:
    engine = Engine(EngineConfig(max_tick_age_ms=5_000))
    v = only(engine.step([tick(), position(ts=T0 + 5_001)], T0 + 5_001))
    assert v["stale_market_data"] is True


def test_every_timer_reevaluation_publishes() -> None:
    engine = Engine()
    # max_hold 100,000 minutes: age 60 → 0.012 points; 30 + 0.012 + 15 + 1.32 = 46.332.
    cfg = {"max_hold_minutes": 100_000}
    v = only(engine.step([tick(), position(config=cfg)], T0))
    assert v["risk_score"] == approx(46.332)
    for k in (1, 2, 3):
        # Each hour adds 0.012: far below one point, same action: published (timer).
        v = only(engine.fire_timers(T0 + k * 60 * MIN))
        assert v["trigger"] == "timer"
        assert v["risk_score"] == approx(46.332 + k * 0.012)
    assert engine.stats.suppressed == 0


def test_all_publishes_every_assessment() -> None:
    engine = started("all")
    for i in range(1, 6):
        v = only(engine.step([price_tick(ts=T0 + i * 1000)], T0 + i * 1000))
        assert v["trigger"] == "tick"
    assert engine.stats.published == 6 and engine.stats.suppressed == 0


def test_a_close_publishes_a_tombstone_and_drops_the_position() -> None:
    engine = started()
    res = engine.step([close(offset=9)], T0 + 1000)
    assert tombstones(res) == ["p1"]
    out = res.outputs[0]
    assert out.value is None and out.data is None
    assert res.assessments == 0
    assert engine.stats.tombstones == 1
    assert engine.table.positions == {}
    assert engine.table.by_asset == {}
    assert engine.snapshot() == []
    # Its asset's ticks no longer assess anything.
    res = engine.step([price_tick(ts=T0 + 2000, price=50_000.0)], T0 + 2000)
    assert res.assessments == 0 and res.outputs == []


def test_a_close_of_an_unknown_position_publishes_nothing() -> None:
    engine = started()
    res = engine.step([close("never-seen")], T0 + 1000)
    assert res.outputs == []
    assert engine.stats.tombstones == 0


def test_a_close_of_a_waiting_position_still_publishes_a_tombstone() -> None:
    engine = Engine()
    engine.step([position(asset="ETH")], T0)  # no ETH market: never assessed
    assert tombstones(engine.step([close()], T0 + 1000)) == ["p1"]


@pytest.mark.parametrize("emit", ["changed", "all"])
def test_a_reopened_position_publishes_its_first_assessment(emit: str) -> None:
    engine = started(emit)
    engine.step([close()], T0 + 1000)
    v = only(engine.step([position(ts=T0 + 2000)], T0 + 2000))
    assert v["risk_score"] == approx(48.82)  # same as before the close, still published
