"""Per-position `config` overrides on top of the engine-wide `EngineConfig.risk`."""

from __future__ import annotations

import pytest

from stream_risk.config import RiskConfig
from stream_risk.engine import Engine, EngineConfig

from . import T0, by_pid, only, position, price_tick, tick

approx = pytest.approx


def test_positions_of_one_asset_are_each_assessed_with_their_own_config() -> None:
    engine = Engine(EngineConfig(emit="all"))
    engine.step(
        [
            tick(),
            position("default"),
            position("cheap", config={"max_hedge_cost_bps": 2}),
            position("patient", config={"max_hold_minutes": 240}),
        ],
        T0,
    )
    res = engine.step([price_tick(ts=T0 + 60_000)], T0 + 60_000)
    got = by_pid(res.outputs)
    d, c, p = got["default"], got["cheap"], got["patient"]
    assert d is not None and c is not None and p is not None
    age_61 = 61 / 480 * 20
    # Default: 48.82 (+ one minute of age) → HEDGE_PARTIAL.
    assert d["action"] == "HEDGE_PARTIAL"
    assert d["risk_score"] == approx(30 + age_61 + 15 + 1.32)
    # A full hedge costs 3 bps > 2: HOLD, same score.
    assert (c["action"], c["hedge_pct"], c["suggested_hedge"]) == ("HOLD", 0.0, None)
    assert c["reason_code"] == "HEDGE_TOO_EXPENSIVE"
    assert c["risk_score"] == approx(d["risk_score"])
    # max_hold 240: age 61 → 61 / 240 × 20.
    assert p["risk_breakdown"]["position_age"] == approx(61 / 240 * 20)
    assert p["risk_score"] == approx(30 + 61 / 12 + 15 + 1.32)


def test_the_engine_wide_config_applies_to_every_position() -> None:
    engine = Engine(EngineConfig(risk=RiskConfig(max_loss_pct=0.1)))
    v = only(engine.step([tick(), position()], T0))
    # loss 0.05 / 0.1 × 30 = 15: 15 + 2.5 + 15 + 1.32 = 33.82 → HOLD, every 240 min.
    assert v["risk_breakdown"]["loss_severity"] == approx(15.0)
    assert v["risk_score"] == approx(33.82)
    assert v["action"] == "HOLD"
    assert v["re_evaluate_minutes"] == 240


def test_a_position_override_layers_on_the_engine_wide_config() -> None:
    engine = Engine(EngineConfig(risk=RiskConfig(max_loss_pct=0.1)))
    v = only(engine.step([tick(), position(config={"max_hold_minutes": 240})], T0))
    # Engine max_loss 0.1 (loss 15) kept, position max_hold 240 (age 5): 36.32 → REDUCE.
    assert v["risk_score"] == approx(36.32)
    assert (v["action"], v["hedge_pct"]) == ("REDUCE", 0.25)
    # The quarter hedge: 2.5 BTC, 110,000 notional, spread 33, funding received 24.11.
    h = v["suggested_hedge"]
    assert h["size"] == approx(2.5)
    assert h["spread_cost_usd"] == approx(33.0)
    assert h["funding_cost_1d_usd"] == approx(-110_000 * 0.08 / 365)
    assert h["total_cost_bps"] == approx(3.0)


def test_a_model_constant_can_be_overridden_per_position() -> None:
    engine = Engine()
    v = only(engine.step([tick(), position(config={"high_vol_threshold": 0.06})], T0))
    # vol 0.05 < 0.06: 0.05 / 0.06 × 10 = 8.33…: 30 + 2.5 + 8.333 + 1.32 = 42.153 REDUCE.
    assert v["risk_breakdown"]["volatility_regime"] == approx(0.05 / 0.06 * 10)
    assert v["risk_score"] == approx(30 + 2.5 + 0.05 / 0.06 * 10 + 1.32)
    assert v["action"] == "REDUCE"
    assert v["re_evaluate_minutes"] == 60  # ≥ 40


def test_changing_the_override_reassesses_and_removing_it_restores_the_default() -> None:
    engine = Engine(EngineConfig(emit="all"))
    engine.step([tick(), position(config={"max_hedge_cost_bps": 2})], T0)
    assert engine.table.positions["p1"].overrides == {"max_hedge_cost_bps": 2}
    # Same ts, same numbers, different config: not a duplicate.
    v = only(engine.step([position()], T0))
    assert v["action"] == "HEDGE_PARTIAL"
    assert engine.table.positions["p1"].overrides is None
    assert engine.stats.duplicate_positions == 0


def test_a_config_invalid_once_merged_is_rejected_and_the_last_version_kept() -> None:
    engine = Engine()
    engine.step([tick(), position()], T0)
    # reduce_score 50 above hedge_partial_score 45: each field is in range, the whole is not.
    res = engine.step([position(size=20.0, ts=T0 + 1, config={"reduce_score": 50})], T0 + 1)
    assert res.outputs == [] and res.assessments == 0
    assert len(res.rejected) == 1
    assert "config" in res.rejected[0].reason
    assert engine.table.positions["p1"].size == 10.0


def test_an_invalid_config_on_a_new_position_leaves_no_trace() -> None:
    engine = Engine()
    engine.step([tick()], T0)
    res = engine.step([position("p2", config={"reduce_score": 50})], T0)
    assert len(res.rejected) == 1
    assert "p2" not in engine.table.positions
    assert engine.table.by_asset == {}
