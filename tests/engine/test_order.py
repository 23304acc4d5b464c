"""Out-of-order, duplicate and future-dated records."""

from __future__ import annotations

import pytest

from stream_risk.engine import Engine, EngineConfig, Event, Lineage, TickEvent

from . import MIN, T0, only, position, price_tick, tick

approx = pytest.approx


def started() -> Engine:
    engine = Engine(EngineConfig(emit="all"))
    engine.step([tick(), position()], T0)
    return engine


def test_an_older_tick_is_ignored_and_counted() -> None:
    engine = started()
    res = engine.step([price_tick(ts=T0 - 1, price=50_000.0)], T0 + 1000)
    assert res.outputs == [] and res.assessments == 0 and res.rejected == []
    assert engine.stats.out_of_order_ticks == 1
    assert engine.table.markets["BTC"].current_price == 44_000.0
    assert engine.table.markets["BTC"].ts == T0


def test_a_duplicate_tick_is_counted_and_assesses_nothing() -> None:
    engine = started()
    res = engine.step([tick()], T0 + 1000)
    assert res.outputs == [] and res.assessments == 0
    assert engine.stats.duplicate_ticks == 1
    # A tick repeating the price alone (other fields left out) is a duplicate too.
    engine.step([price_tick()], T0 + 1000)
    assert engine.stats.duplicate_ticks == 2
    assert engine.stats.out_of_order_ticks == 0


def test_a_tick_with_the_same_ts_but_new_values_is_applied() -> None:
    engine = started()
    res = engine.step([price_tick(ts=T0, price=44_100.0)], T0 + 1000)
    assert res.assessments == 1
    assert engine.table.markets["BTC"].current_price == 44_100.0
    assert engine.stats.duplicate_ticks == 0


def test_an_older_position_update_is_ignored_and_counted() -> None:
    engine = started()
    res = engine.step([position(size=99.0, ts=T0 - 1)], T0 + 1000)
    assert res.outputs == [] and res.assessments == 0 and res.rejected == []
    assert engine.stats.out_of_order_positions == 1
    assert engine.table.positions["p1"].size == 10.0


def test_a_duplicate_position_update_is_counted_and_assesses_nothing() -> None:
    engine = started()
    res = engine.step([position()], T0 + 1000)
    assert res.outputs == [] and res.assessments == 0
    assert engine.stats.duplicate_positions == 1
    assert engine.stats.out_of_order_positions == 0


def test_a_position_update_with_the_same_ts_but_new_values_is_applied() -> None:
    engine = started()
    v = only(engine.step([position(size=20.0)], T0 + 1000))
    assert v["position_notional_usd"] == approx(880_000.0)
    assert engine.stats.duplicate_positions == 0


def test_late_updates_after_newer_ones_in_one_batch_are_ignored() -> None:
    engine = started()
    batch: list[Event] = [
        position(size=30.0, ts=T0 + 3000),
        position(size=20.0, ts=T0 + 2000),
        price_tick(ts=T0 + 3000, price=45_000.0),
        price_tick(ts=T0 + 2000, price=43_000.0),
    ]
    v = only(engine.step(batch, T0 + 3000))
    assert v["position_notional_usd"] == approx(30 * 45_000.0)
    assert (v["position_ts"], v["tick_ts"]) == (T0 + 3000, T0 + 3000)
    assert engine.stats.out_of_order_positions == 1
    assert engine.stats.out_of_order_ticks == 1


def test_a_tick_too_far_ahead_of_now_is_rejected_and_counted() -> None:
    engine = started()
    now = T0 + MIN
    limit = EngineConfig().max_future_ms  # 300,000 ms
    res = engine.step([price_tick(ts=now + limit + 1, price=50_000.0, offset=5)], now)
    assert res.outputs == [] and res.assessments == 0
    assert len(res.rejected) == 1
    assert res.rejected[0].lineage.offset == 5
    assert "ahead of now" in res.rejected[0].reason
    assert engine.stats.future_records == 1
    assert engine.table.markets["BTC"].current_price == 44_000.0

    # Exactly at the limit is accepted.
    res = engine.step([price_tick(ts=now + limit, price=50_000.0)], now)
    assert res.rejected == [] and res.assessments == 1
    assert engine.stats.future_records == 1


def test_a_position_too_far_ahead_of_now_is_rejected_and_counted() -> None:
    engine = started()
    now = T0 + MIN
    res = engine.step([position("p2", ts=now + 300_001)], now)
    assert len(res.rejected) == 1 and res.outputs == []
    assert "p2" not in engine.table.positions
    assert engine.stats.future_records == 1
    # A ts missing from the body falls back to the record time, checked the same way.
    res = engine.step([position("p3", ts=None, ts_fallback=now + 300_001)], now)
    assert len(res.rejected) == 1
    assert engine.stats.future_records == 2


def test_the_future_guard_follows_the_configured_limit() -> None:
    engine = Engine(EngineConfig(max_future_ms=1000))
    res = engine.step([tick(ts=T0 + 1001), position(ts=T0)], T0)
    assert len(res.rejected) == 1
    assert res.outputs == []  # the position waits: the only tick was refused
    assert engine.stats.waiting == 1


def test_rejected_and_ignored_records_leave_the_timer_alone() -> None:
    engine = started()
    engine.step(
        [
            price_tick(ts=T0 - 1),
            position(ts=T0 - 1),
            price_tick(ts=T0 + 10 * MIN, price=1.0),
        ],
        T0 + 1000,
    )
    assert engine.next_due() == T0 + 60 * MIN


def test_a_record_timestamp_in_seconds_is_not_taken_for_a_clock() -> None:
    # A producer that wrote epoch *seconds* as the Kafka record timestamp: that is no clock
    # to judge "from the future" by. The tick (ts = now) is applied, not refused.
    engine = Engine()
    ev = tick()
    seconds_stamped = TickEvent(ev.tick, Lineage("market-ticks", 0, 0, T0 // 1000))
    res = engine.step([seconds_stamped, position()], T0)
    assert res.rejected == []
    assert engine.stats.future_records == 0
    assert only(res)["tick_ts"] == T0
