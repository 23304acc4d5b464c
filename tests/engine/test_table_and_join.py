"""The table: latest position per id, latest market per asset, the asset index, the join."""

from __future__ import annotations

import orjson
import pytest

from stream_risk import __version__
from stream_risk.engine import Engine, EngineConfig
from stream_risk.engine.estimates import MarketDefaults

from . import MIN, T0, actions, index_of, only, position, price_tick, tick

approx = pytest.approx


def engine_all() -> Engine:
    """An engine that publishes every assessment, so each one can be inspected."""
    return Engine(EngineConfig(emit="all"))


def test_worked_example_is_published_with_every_field() -> None:
    engine = Engine()
    res = engine.step([tick(offset=7), position()], T0)

    assert res.assessments == 1
    v = only(res)
    assert v["action"] == "HEDGE_PARTIAL"
    assert v["hedge_pct"] == 0.5
    assert v["risk_score"] == approx(48.82)
    assert v["risk_breakdown"] == {
        "loss_severity": approx(30.0),
        "position_age": approx(2.5),
        "volatility_regime": approx(15.0),
        "size_vs_liquidity": approx(1.32),
        "total": approx(48.82),
    }
    # Half of 10 BTC at 44,000 = 220,000: spread 220,000 × 3 / 10,000 = 66; funding
    # 220,000 × 0.08 / 365 = 48.2191… received by the short perp (funding 0.08 > 0.02).
    assert v["suggested_hedge"] == {
        "instrument": "perp_short",
        "size": approx(5.0),
        "spread_cost_usd": approx(66.0),
        "funding_cost_1d_usd": approx(-48.21917808219178),
        "total_cost_usd": approx(66.0),
        "total_cost_bps": approx(3.0),
    }
    assert v["pnl_scenarios"] == {
        "move_down_5pct": approx(-22_000.0),
        "move_down_2pct": approx(-8_800.0),
        "move_up_2pct": approx(8_800.0),
        "move_up_5pct": approx(22_000.0),
        "hedged_down_5pct": approx(-11_000.0),
        "hedged_down_2pct": approx(-4_400.0),
        "hedged_up_2pct": approx(4_400.0),
        "hedged_up_5pct": approx(11_000.0),
    }
    assert v["position_notional_usd"] == approx(440_000.0)
    assert v["current_unrealized_pnl"] == approx(-10_000.0)  # 10 × (44,000 − 45,000)
    assert v["re_evaluate_minutes"] == 60
    assert v["reasoning"].startswith("Risk score 49/100 (moderate).")
    assert "perp_short" in v["reasoning"]
    # The stream fields (DESIGN §2).
    assert v["position_id"] == "p1"
    assert v["asset"] == "BTC"
    assert v["schema_version"] == 1
    assert v["version"] == __version__
    assert v["trigger"] == "position"
    assert v["event_ts"] == T0
    assert v["tick_ts"] == T0
    assert v["position_ts"] == T0
    assert v["assessed_at"] == T0
    assert v["ts_ms"] == T0
    assert v["stale_market_data"] is False
    assert v["next_evaluation_ts"] == T0 + 60 * MIN
    out = res.outputs[0]
    assert out.position_id == "p1"
    assert out.data == orjson.dumps(v)
    assert out.tick_lineage.offset == 7
    assert out.tick_lineage.topic == "market-ticks"


def test_latest_position_per_id_replaces_the_previous_version() -> None:
    engine = engine_all()
    engine.step([tick(), position()], T0)
    res = engine.step([position(size=20.0, ts=T0 + 1000)], T0 + 1000)

    assert list(engine.table.positions) == ["p1"]
    assert engine.table.positions["p1"].size == 20.0
    v = only(res)
    # Notional 880,000: liquidity 880,000 / 5e6 × 15 = 2.64; age 60 as of the new ts.
    assert v["position_notional_usd"] == approx(880_000.0)
    assert v["risk_score"] == approx(30 + 2.5 + 15 + 2.64)
    assert v["position_ts"] == T0 + 1000
    assert v["trigger"] == "position"


def test_a_field_missing_from_a_tick_keeps_its_last_value() -> None:
    engine = engine_all()
    engine.step([tick(funding=0.08, bid=2e6), position()], T0)
    res = engine.step([price_tick(ts=T0 + MIN, price=22_000.0)], T0 + MIN)

    market = engine.table.markets["BTC"]
    assert market.current_price == 22_000.0
    assert market.volatility_1d == 0.05
    assert market.spot_spread_bps == 3.0
    assert market.perp_funding_rate == 0.08
    assert market.bid_depth_usd == 2e6
    v = only(res)
    # Notional 220,000; liquidity 220,000 / 2e6 × 15 = 1.65; age 61 → 61 / 480 × 20.
    assert v["risk_breakdown"]["size_vs_liquidity"] == approx(1.65)
    assert v["risk_breakdown"]["position_age"] == approx(61 / 24)
    assert v["risk_score"] == approx(30 + 61 / 24 + 15 + 1.65)
    # Funding 0.08 kept: still a perp short; spread 3 kept: 5 × 22,000 × 3 bps = 33.
    assert v["suggested_hedge"]["instrument"] == "perp_short"
    assert v["suggested_hedge"]["spread_cost_usd"] == approx(33.0)
    assert v["trigger"] == "tick"
    assert v["event_ts"] == T0 + MIN


def test_fields_never_sent_take_the_design_defaults() -> None:
    engine = Engine()
    res = engine.step([tick(funding=None, bid=None, ask=None), position()], T0)
    v = only(res)
    # Depth 1,000,000: liquidity 440,000 / 1e6 × 15 = 6.6 → 30 + 2.5 + 15 + 6.6 = 54.1.
    assert v["risk_score"] == approx(54.1)
    assert v["action"] == "HEDGE_PARTIAL"
    # Funding 0: a spot sell, no funding cost: 66 USD = 3 bps of 220,000.
    assert v["suggested_hedge"]["instrument"] == "spot_sell"
    assert v["suggested_hedge"]["funding_cost_1d_usd"] == 0.0
    assert v["suggested_hedge"]["total_cost_usd"] == approx(66.0)


def test_short_position_is_scored_against_ask_depth_and_hedged_with_a_buy() -> None:
    engine = Engine()
    res = engine.step([tick(bid=5e6, ask=1e6), position(size=-10.0)], T0)
    v = only(res)
    # liquidity 440,000 / 1e6 (ask) × 15 = 6.6 → 54.1; the short's worst 5 % move is up.
    assert v["risk_score"] == approx(54.1)
    assert v["current_unrealized_pnl"] == approx(10_000.0)  # −10 × (44,000 − 45,000)
    assert v["pnl_scenarios"]["move_up_5pct"] == approx(-22_000.0)
    # Funding 0.08 is not < −0.02: spot buy; the long hedge pays 220,000 × 0.08 / 365.
    h = v["suggested_hedge"]
    assert h["instrument"] == "spot_buy"
    assert h["funding_cost_1d_usd"] == approx(48.21917808219178)
    assert h["total_cost_usd"] == approx(66 + 48.21917808219178)
    assert h["total_cost_bps"] == approx((66 + 48.21917808219178) / 220_000 * 10_000)


def test_flat_position_holds_with_score_zero() -> None:
    engine = Engine()
    v = only(engine.step([tick(), position(size=0.0)], T0))
    assert v["action"] == "HOLD"
    assert v["risk_score"] == 0.0
    assert v["suggested_hedge"] is None
    assert set(v["pnl_scenarios"].values()) == {0.0}
    assert v["re_evaluate_minutes"] == 240
    assert v["next_evaluation_ts"] == T0 + 240 * MIN


def test_a_full_hedge_dearer_than_the_limit_means_hold() -> None:
    engine = Engine()
    v = only(engine.step([tick(spread=60.0), position()], T0))
    # Full hedge: 440,000 × 60 bps = 2,640 USD = 60 bps > 50 → HOLD, score unchanged.
    assert v["action"] == "HOLD"
    assert v["hedge_pct"] == 0.0
    assert v["suggested_hedge"] is None
    assert v["risk_score"] == approx(48.82)
    assert v["reason_code"] == "HEDGE_TOO_EXPENSIVE"
    assert v["re_evaluate_minutes"] == 60


def test_unrealized_pnl_from_the_position_is_used_as_given() -> None:
    engine = Engine()
    v = only(engine.step([tick(), position(pnl=-1234.5)], T0))
    assert v["current_unrealized_pnl"] == -1234.5


def test_age_is_the_age_as_of_ts_plus_the_event_time_since() -> None:
    engine = engine_all()
    # 90 minutes old as of 30 minutes before the tick: 120 at event_ts (the tick's ts).
    v = only(engine.step([tick(), position(ts=T0 - 30 * MIN, age=90.0)], T0))
    assert v["event_ts"] == T0
    assert v["risk_breakdown"]["position_age"] == approx(5.0)  # 120 / 480 × 20
    assert v["risk_score"] == approx(51.32)


def test_age_from_opened_at_wins_over_age_minutes() -> None:
    engine = engine_all()
    ev = position(ts=T0, age=10.0, opened_at=T0 - 120 * MIN)
    v = only(engine.step([tick(), ev], T0))
    assert v["risk_breakdown"]["position_age"] == approx(5.0)  # 120 minutes open
    assert v["risk_score"] == approx(51.32)


def test_event_ts_is_the_later_of_position_ts_and_tick_ts() -> None:
    engine = engine_all()
    v = only(engine.step([tick(ts=T0), position(ts=T0 + 30 * MIN, age=60.0)], T0 + 30 * MIN))
    assert v["event_ts"] == T0 + 30 * MIN
    assert v["risk_breakdown"]["position_age"] == approx(2.5)  # age 60 as of its own ts
    assert v["next_evaluation_ts"] == T0 + 90 * MIN


def test_position_waits_for_its_first_complete_tick() -> None:
    engine = Engine()
    res = engine.step([position()], T0)
    assert res.outputs == [] and res.assessments == 0
    assert engine.stats.waiting == 1
    assert engine.next_due() is None  # nothing assessed, nothing scheduled
    assert engine.snapshot()[0]["waiting_for"] == ["current_price"]

    # A price without vol is not enough: the estimate needs 20 returns first (the spread
    # has its 2 bps default).
    res = engine.step([price_tick(ts=T0 + 1000)], T0 + 1000)
    assert res.outputs == [] and res.assessments == 0
    row = engine.snapshot()[0]
    assert row["waiting_for"] == ["volatility_1d"]
    assert "0 of 20 returns" in row["waiting"]["volatility_1d"]

    # The first complete tick assesses (and, first assessment, publishes) it.
    res = engine.step([tick(ts=T0 + 2000)], T0 + 2000)
    v = only(res)
    assert v["trigger"] == "tick"
    assert v["tick_ts"] == T0 + 2000
    assert engine.snapshot()[0]["waiting_for"] == []
    assert engine.stats.assessments == 1


def test_a_position_waits_for_vol_and_spread_without_estimates_or_defaults() -> None:
    engine = Engine(EngineConfig(market_defaults=MarketDefaults(spot_spread_bps=None), vol=None))
    engine.step([position()], T0)
    res = engine.step([price_tick(ts=T0 + 1000)], T0 + 1000)
    assert res.outputs == [] and res.assessments == 0
    row = engine.snapshot()[0]
    assert row["waiting_for"] == ["volatility_1d", "spot_spread_bps"]
    assert "estimation is off" in row["waiting"]["volatility_1d"]
    assert engine.waiting() == {"BTC": {"positions": 1, **row["waiting"]}}
    v = only(engine.step([tick(ts=T0 + 2000)], T0 + 2000))
    assert v["estimated_inputs"] == [] and engine.waiting() == {}


def test_a_complete_market_can_be_assembled_from_partial_ticks() -> None:
    engine = Engine(EngineConfig(market_defaults=MarketDefaults(spot_spread_bps=None)))
    engine.step([position(), tick(spread=None)], T0)
    assert engine.stats.assessments == 0
    res = engine.step([tick(ts=T0 + 1000, vol=None, spread=3.0)], T0 + 1000)
    assert only(res)["risk_breakdown"]["volatility_regime"] == approx(15.0)


def test_asset_index_follows_a_position_that_changes_asset() -> None:
    engine = engine_all()
    eth = tick("ETH", price=3_000.0)
    engine.step(
        [tick(), eth, position("p1"), position("p2"), position("p3", asset="ETH")],
        T0,
    )
    assert index_of(engine) == {"BTC": {"p1", "p2"}, "ETH": {"p3"}}

    res = engine.step([position("p1", asset="ETH", ts=T0 + 1000)], T0 + 1000)
    assert index_of(engine) == {"BTC": {"p2"}, "ETH": {"p1", "p3"}}
    assert only(res)["asset"] == "ETH"
    assert engine.snapshot("ETH")[0]["position_id"] in {"p1", "p3"}
    assert {r["position_id"] for r in engine.snapshot("ETH")} == {"p1", "p3"}

    res = engine.step([price_tick("BTC", T0 + 2000, 44_100.0)], T0 + 2000)
    assert [v["position_id"] for v in actions(res)] == ["p2"]
    res = engine.step([price_tick("ETH", T0 + 3000, 3_010.0)], T0 + 3000)
    assert sorted(v["position_id"] for v in actions(res)) == ["p1", "p3"]

    # The last position of an asset leaves: the asset leaves the index.
    engine.step([position("p2", asset="ETH", ts=T0 + 4000)], T0 + 4000)
    assert index_of(engine) == {"ETH": {"p1", "p2", "p3"}}


def test_key_disagreeing_with_body_position_id_is_rejected() -> None:
    engine = Engine()
    engine.step([tick()], T0)
    res = engine.step([position("p1", key="p9", offset=42)], T0)
    assert res.outputs == []
    assert len(res.rejected) == 1
    rej = res.rejected[0]
    assert "p9" in rej.reason and "p1" in rej.reason
    assert rej.lineage.offset == 42 and rej.lineage.topic == "positions"
    assert engine.table.positions == {}


def test_position_id_defaults_to_the_key_then_the_asset() -> None:
    engine = Engine()
    engine.step([tick()], T0)
    res = engine.step([position("k1", body_id=None)], T0)
    assert only(res)["position_id"] == "k1"
    res = engine.step([position("", body_id=None)], T0)
    assert only(res)["position_id"] == "BTC"
    assert set(engine.table.positions) == {"k1", "BTC"}


def test_position_without_ts_uses_the_record_timestamp() -> None:
    engine = Engine()
    engine.step([tick()], T0)
    res = engine.step([position(ts=None, ts_fallback=T0 + 5000)], T0 + 5000)
    v = only(res)
    assert v["position_ts"] == T0 + 5000
    assert v["event_ts"] == T0 + 5000


def test_exposure_nets_longs_and_shorts_at_the_latest_price() -> None:
    engine = Engine()
    engine.step([tick(), position("p1", size=10.0), position("p2", size=-4.0)], T0)
    assert engine.exposure() == {
        "BTC": {
            "net_notional_usd": approx(6 * 44_000.0),
            "gross_notional_usd": approx(14 * 44_000.0),
        }
    }
