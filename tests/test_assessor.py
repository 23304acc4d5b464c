"""The risk model (DESIGN §1), branch by branch, against numbers worked by hand.

Every expected value is written from the contract's formulas as a literal expression of
the inputs (never copied from the code's output). Two families of inputs make the band
boundaries land exactly on the thresholds, with every term an exact binary fraction:

* family A: size 1, price 1024, vol 0.08, depth 4096 →
  loss 30 (worst = 5 % of N, loss_pct = 0.05 = max_loss_pct, vol_adj = 1),
  vol 25, liquidity 1024 / 4096 × 15 = 3.75, so score = 58.75 + age / 480 × 20;
* family B: size 1, price 1024, vol 0, depth 1024 →
  loss 30 × 0.5 = 15 (vol_adj 0.5 at zero vol), vol 0, liquidity 15,
  so score = 30 + age / 480 × 20.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from stream_risk.assessor import (
    HEDGE_FULL,
    HEDGE_PARTIAL,
    HOLD,
    LIQUIDATE,
    PERP_LONG,
    PERP_SHORT,
    REDUCE,
    SPOT_BUY,
    SPOT_SELL,
    Assessment,
    assess,
    hedge_at,
)
from stream_risk.config import DEFAULT_CONFIG, RiskConfig

REL = 1e-9
EPS_AGE = 1e-6  # minutes: moves the score by 1e-6 / 480 × 20 ≈ 4e-8 points


def approx(x: float) -> Any:
    return pytest.approx(x, rel=REL, abs=1e-12)


def run(
    size: float = 10.0,
    entry_price: float = 45000.0,
    age_minutes: float = 60.0,
    unrealized_pnl: float | None = None,
    price: float = 44000.0,
    vol: float = 0.05,
    spread_bps: float = 3.0,
    funding: float = 0.08,
    bid: float = 5e6,
    ask: float = 5e6,
    cfg: RiskConfig = DEFAULT_CONFIG,
    asset: str = "BTC",
) -> Assessment:
    """`assess` with the worked example's inputs unless told otherwise."""
    return assess(
        size,
        entry_price,
        age_minutes,
        unrealized_pnl,
        price,
        vol,
        spread_bps,
        funding,
        bid,
        ask,
        cfg,
        asset,
    )


def family_a(age: float, **kw: Any) -> Assessment:
    args: dict[str, Any] = dict(
        size=1.0, entry_price=1024.0, price=1024.0, vol=0.08, spread_bps=0.0, funding=0.0
    )
    args.update(bid=4096.0, ask=4096.0, asset="ETH")
    args.update(kw)
    return run(age_minutes=age, **args)


def family_b(age: float, **kw: Any) -> Assessment:
    args: dict[str, Any] = dict(
        size=1.0, entry_price=1024.0, price=1024.0, vol=0.0, spread_bps=0.0, funding=0.0
    )
    args.update(bid=1024.0, ask=1024.0, asset="ETH")
    args.update(kw)
    return run(age_minutes=age, **args)


def components_sum(a: Assessment) -> float:
    return a.loss_score + a.age_score + a.vol_score + a.liquidity_score


# ------------------------------------------------------------------ the worked example
class TestWorkedExample:
    """BTC 10 long @45000, 60 min; price 44000, vol 5 %, spread 3bps, funding 8 %, 5M depth."""

    def test_score_components(self) -> None:
        a = run()
        notional = 10 * 44000  # 440000
        worst = abs(min(10 * (44000 * -0.05), 10 * (44000 * 0.05)))  # 22000
        loss = min(30, worst / notional / 0.05 * 30 * min(1, 0.05 / 0.05))  # 30
        age = min(20, 60 / 480 * 20)  # 2.5
        vol = 15  # 0.04 <= 0.05 < 0.08
        liq = min(15, notional / 5e6 * 15)  # 1.32
        assert a.loss_score == approx(loss) == approx(30)
        assert a.age_score == approx(age) == approx(2.5)
        assert a.vol_score == approx(vol)
        assert a.liquidity_score == approx(liq) == approx(1.32)
        assert a.risk_score == approx(30 + 2.5 + 15 + 1.32) == approx(48.82)
        assert a.risk_breakdown == {
            "loss_severity": approx(30),
            "position_age": approx(2.5),
            "volatility_regime": approx(15),
            "size_vs_liquidity": approx(1.32),
            "total": approx(48.82),
        }

    def test_action_hedge_and_cadence(self) -> None:
        a = run()
        assert a.action == HEDGE_PARTIAL  # 45 <= 48.82 < 60
        assert a.hedge_pct == 0.5
        assert a.band == "moderate"
        assert a.too_expensive is False
        assert a.re_evaluate_minutes == 60  # 40 <= 48.82 < 60
        assert a.notional == approx(10 * 44000)
        assert a.unrealized_pnl == approx(10 * (44000 - 45000))  # -10000

        h = a.suggested_hedge
        assert h is not None
        notional_h = 10 * 0.5 * 44000  # 220000
        assert h.instrument == PERP_SHORT  # long, funding 0.08 > 0.02
        assert h.size == approx(10 * 0.5)
        assert h.spread_cost_usd == approx(notional_h * 3 / 10000) == approx(66.0)
        assert h.funding_cost_1d_usd == approx(-(notional_h * 0.08 / 365))  # -48.219...
        assert h.funding_cost_1d_usd == approx(-48.21917808219178)
        assert h.total_cost_usd == approx(66.0 + max(0, -48.219))  # receives funding: 66
        assert h.total_cost_bps == approx(66.0 / notional_h * 10000) == approx(3.0)

        full = a.full_hedge
        assert full is not None
        assert full.size == approx(10.0)
        assert full.spread_cost_usd == approx(440000 * 3 / 10000)  # 132
        assert full.total_cost_bps == approx(3.0)  # 3 <= 50: not too expensive

    def test_pnl_scenarios(self) -> None:
        a = run()
        assert a.pnl_scenarios == {
            "move_down_5pct": approx(10 * 44000 * -0.05),  # -22000
            "move_down_2pct": approx(10 * 44000 * -0.02),  # -8800
            "move_up_2pct": approx(10 * 44000 * 0.02),  # +8800
            "move_up_5pct": approx(10 * 44000 * 0.05),  # +22000
            "hedged_down_5pct": approx(-22000 * 0.5),
            "hedged_down_2pct": approx(-8800 * 0.5),
            "hedged_up_2pct": approx(8800 * 0.5),
            "hedged_up_5pct": approx(22000 * 0.5),
        }

    def test_to_dict_has_every_reference_field(self) -> None:
        d = run().to_dict()
        assert d["action"] == "HEDGE_PARTIAL"
        assert d["hedge_pct"] == 0.5
        assert d["risk_score"] == approx(48.82)
        assert d["position_notional_usd"] == approx(440000)
        assert d["current_unrealized_pnl"] == approx(-10000)
        assert d["re_evaluate_minutes"] == 60
        assert d["suggested_hedge"] == {
            "instrument": "perp_short",
            "size": approx(5.0),
            "spread_cost_usd": approx(66.0),
            "funding_cost_1d_usd": approx(-220000 * 0.08 / 365),
            "total_cost_usd": approx(66.0),
            "total_cost_bps": approx(3.0),
        }
        assert set(d["pnl_scenarios"]) == {
            "move_down_5pct",
            "move_down_2pct",
            "move_up_2pct",
            "move_up_5pct",
            "hedged_down_5pct",
            "hedged_down_2pct",
            "hedged_up_2pct",
            "hedged_up_5pct",
        }
        assert d["reasoning"].startswith("Risk score 49/100 (moderate).")

    def test_reasoning_names_instrument_and_cost(self) -> None:
        r = run().reasoning
        assert "perp_short" in r
        assert "$66.00" in r
        assert "3.0bps" in r
        assert "50%" in r


# ------------------------------------------------------------------ action bands
class TestActionBands:
    def test_family_arithmetic(self) -> None:
        a = family_a(0)
        assert (a.loss_score, a.vol_score, a.liquidity_score) == (30.0, 25.0, 1024 / 4096 * 15)
        b = family_b(0)
        assert (b.loss_score, b.vol_score, b.liquidity_score) == (30 * 0.5, 0.0, 15.0)

    def test_liquidate_at_exactly_75(self) -> None:
        a = family_a(390)  # 390 / 480 × 20 = 16.25 → 30 + 16.25 + 25 + 3.75 = 75
        assert a.risk_score == 75.0
        assert (a.action, a.hedge_pct, a.band) == (LIQUIDATE, 1.0, "critical")
        h = a.suggested_hedge
        assert h is not None
        assert h.size == 1.0  # |1| × 1.0
        assert h.instrument == SPOT_SELL  # long, funding 0 <= 0.02
        assert a.re_evaluate_minutes == 15
        assert a.pnl_scenarios["hedged_down_5pct"] == approx(1024 * -0.05 * (1 - 1.0))

    def test_hedge_full_just_below_75(self) -> None:
        a = family_a(390 - EPS_AGE)
        assert a.risk_score == approx(30 + (390 - EPS_AGE) / 480 * 20 + 25 + 3.75)
        assert a.risk_score < 75
        assert (a.action, a.hedge_pct, a.band) == (HEDGE_FULL, 1.0, "high")
        assert a.re_evaluate_minutes == 15

    def test_liquidate_above_75(self) -> None:
        a = family_a(480)  # age capped at 20 → 78.75
        assert a.risk_score == approx(30 + 20 + 25 + 3.75)
        assert a.action == LIQUIDATE

    def test_hedge_full_at_exactly_60(self) -> None:
        a = family_a(30)  # 30 / 480 × 20 = 1.25 → 58.75 + 1.25 = 60
        assert a.risk_score == 60.0
        assert (a.action, a.hedge_pct, a.band) == (HEDGE_FULL, 1.0, "high")
        h = a.suggested_hedge
        assert h is not None and h.size == 1.0
        # Full hedge: every hedged scenario is zero.
        assert all(a.pnl_scenarios[k] == 0 for k in a.pnl_scenarios if k.startswith("hedged"))

    def test_hedge_partial_just_below_60(self) -> None:
        a = family_a(30 - EPS_AGE)
        assert a.risk_score == approx(58.75 + (30 - EPS_AGE) / 480 * 20)
        assert a.risk_score < 60
        assert (a.action, a.hedge_pct, a.band) == (HEDGE_PARTIAL, 0.5, "moderate")
        h = a.suggested_hedge
        assert h is not None and h.size == approx(1 * 0.5)

    def test_hedge_partial_at_exactly_45(self) -> None:
        a = family_b(360)  # 360 / 480 × 20 = 15 → 15 + 15 + 0 + 15 = 45
        assert a.risk_score == 45.0
        assert (a.action, a.hedge_pct, a.band) == (HEDGE_PARTIAL, 0.5, "moderate")
        assert a.re_evaluate_minutes == 60

    def test_reduce_just_below_45(self) -> None:
        a = family_b(360 - EPS_AGE)
        assert a.risk_score == approx(30 + (360 - EPS_AGE) / 480 * 20)
        assert a.risk_score < 45
        assert (a.action, a.hedge_pct, a.band) == (REDUCE, 0.25, "low-moderate")
        h = a.suggested_hedge
        assert h is not None
        assert h.size == approx(1 * 0.25)
        assert h.instrument == SPOT_SELL
        assert a.pnl_scenarios["hedged_down_5pct"] == approx(1024 * -0.05 * (1 - 0.25))

    def test_reduce_at_exactly_35(self) -> None:
        a = family_b(120)  # 120 / 480 × 20 = 5 → 35
        assert a.risk_score == 35.0
        assert (a.action, a.hedge_pct, a.band) == (REDUCE, 0.25, "low-moderate")
        assert a.re_evaluate_minutes == 240

    def test_hold_just_below_35(self) -> None:
        a = family_b(120 - EPS_AGE)
        assert a.risk_score == approx(30 + (120 - EPS_AGE) / 480 * 20)
        assert a.risk_score < 35
        assert (a.action, a.hedge_pct, a.band) == (HOLD, 0.0, "low")
        assert a.suggested_hedge is None
        assert a.too_expensive is False
        # h = 0: hedged P&L equals unhedged.
        p = a.pnl_scenarios
        assert p["hedged_down_5pct"] == p["move_down_5pct"] == approx(1024 * -0.05)
        assert p["hedged_up_2pct"] == p["move_up_2pct"] == approx(1024 * 0.02)

    def test_short_bands_use_the_same_thresholds(self) -> None:
        a = family_a(390, size=-1.0)  # a short: worst is the +5 % move, same magnitude
        assert a.risk_score == 75.0
        assert a.action == LIQUIDATE
        h = a.suggested_hedge
        assert h is not None and h.instrument == SPOT_BUY


# ------------------------------------------------------------------ re-evaluation cadence
class TestReEvaluation:
    def test_fast_at_exactly_60(self) -> None:
        assert family_a(30).re_evaluate_minutes == 15

    def test_medium_just_below_60(self) -> None:
        assert family_a(30 - EPS_AGE).re_evaluate_minutes == 60

    def test_medium_at_exactly_40(self) -> None:
        a = family_b(240)  # 240 / 480 × 20 = 10 → 40
        assert a.risk_score == 40.0
        assert a.re_evaluate_minutes == 60
        assert a.action == REDUCE  # 35 <= 40 < 45

    def test_slow_just_below_40(self) -> None:
        a = family_b(240 - EPS_AGE)
        assert a.risk_score < 40
        assert a.re_evaluate_minutes == 240

    def test_cadence_is_by_score_even_when_hold(self) -> None:
        # Too expensive → HOLD, but a 75 score still re-evaluates in 15 minutes.
        a = family_a(390, spread_bps=60.0)
        assert a.action == HOLD
        assert a.re_evaluate_minutes == 15


# ------------------------------------------------------------------ hedge too expensive
class TestHedgeTooExpensive:
    def test_spread_above_limit_holds(self) -> None:
        a = run(spread_bps=60.0)  # full hedge: 440000 × 60 / 10000 / 440000 × 10000 = 60 > 50
        assert a.full_hedge is not None
        assert a.full_hedge.total_cost_bps == approx(60.0)
        assert a.too_expensive is True
        assert (a.action, a.hedge_pct) == (HOLD, 0.0)
        assert a.suggested_hedge is None
        # The score, band and cadence are still reported by score.
        assert a.risk_score == approx(30 + 2.5 + 15 + 1.32)
        assert a.band == "moderate"
        assert a.re_evaluate_minutes == 60
        # h = 0: hedged equals unhedged.
        assert a.pnl_scenarios["hedged_down_5pct"] == approx(10 * 44000 * -0.05)
        assert a.reason_code == "HEDGE_TOO_EXPENSIVE"

    def test_reasoning_says_too_expensive_and_reports_band(self) -> None:
        r = run(spread_bps=60.0).reasoning
        assert r.startswith("Hedge cost too high (60.0bps > 50bps limit).")
        assert "Risk score 49/100 (moderate)." in r

    def test_critical_score_but_too_expensive(self) -> None:
        a = family_a(390, spread_bps=60.0)
        assert a.risk_score == 75.0
        assert a.band == "critical"
        assert (a.action, a.hedge_pct, a.suggested_hedge) == (HOLD, 0.0, None)
        assert "Risk score 75/100 (critical)." in a.reasoning

    def test_exactly_at_limit_is_not_too_expensive(self) -> None:
        # N = 1024: 1024 × 50 / 10000 = 5.12 → 5.12 / 1024 × 10000 = 50, not > 50.
        a = family_a(390, spread_bps=50.0)
        assert a.full_hedge is not None
        assert a.full_hedge.total_cost_bps == 50.0
        assert a.too_expensive is False
        assert a.action == LIQUIDATE

    def test_paying_funding_makes_it_expensive_for_a_long(self) -> None:
        # Long hedged short at funding −200 %/yr pays: 1d = N × 2 / 365 → 54.79bps > 50.
        a = run(spread_bps=0.0, funding=-2.0)
        assert a.full_hedge is not None
        assert a.full_hedge.funding_cost_1d_usd == approx(440000 * 2 / 365)
        assert a.full_hedge.total_cost_bps == approx(2 / 365 * 10000)
        assert a.action == HOLD and a.too_expensive

    def test_paying_funding_makes_it_expensive_for_a_short(self) -> None:
        # Short hedged long at funding +200 %/yr pays N × 2 / 365 (sign not flipped).
        a = run(size=-10.0, spread_bps=0.0, funding=2.0)
        assert a.full_hedge is not None
        assert a.full_hedge.funding_cost_1d_usd == approx(440000 * 2 / 365)
        assert a.action == HOLD and a.too_expensive

    def test_receiving_funding_is_not_a_cost(self) -> None:
        # Short at funding −200 %: the long perp hedge receives; cost is the spread only.
        a = run(size=-10.0, spread_bps=3.0, funding=-2.0)
        assert a.full_hedge is not None
        assert a.full_hedge.funding_cost_1d_usd == approx(440000 * -2 / 365)
        assert a.full_hedge.total_cost_usd == approx(440000 * 3 / 10000)
        assert a.full_hedge.instrument == PERP_LONG
        assert not a.too_expensive

    def test_override_limit_lets_it_hedge(self) -> None:
        a = run(spread_bps=60.0, cfg=RiskConfig(max_hedge_cost_bps=100))
        assert not a.too_expensive
        assert a.action == HEDGE_PARTIAL


# ------------------------------------------------------------------ instrument choice
class TestInstrument:
    @pytest.mark.parametrize(
        ("size", "funding", "instrument"),
        [
            (10.0, 0.08, PERP_SHORT),
            (10.0, 0.02, SPOT_SELL),  # exactly the threshold: not > 0.02
            (10.0, 0.020001, PERP_SHORT),
            (10.0, 0.019999, SPOT_SELL),
            (10.0, 0.0, SPOT_SELL),
            (10.0, -0.5, SPOT_SELL),
            (-10.0, -0.08, PERP_LONG),
            (-10.0, -0.02, SPOT_BUY),  # exactly the threshold: not < −0.02
            (-10.0, -0.020001, PERP_LONG),
            (-10.0, -0.019999, SPOT_BUY),
            (-10.0, 0.0, SPOT_BUY),
            (-10.0, 0.5, SPOT_BUY),
        ],
    )
    def test_choice(self, size: float, funding: float, instrument: str) -> None:
        assert hedge_at(size, 44000.0, 3.0, funding, 1.0).instrument == instrument
        a = run(size=size, funding=funding, age_minutes=480)  # score ≥ 60: a full hedge
        assert a.suggested_hedge is not None
        assert a.suggested_hedge.instrument == instrument

    def test_threshold_is_configurable(self) -> None:
        cfg = RiskConfig(funding_threshold=0.1)
        assert hedge_at(10.0, 44000.0, 3.0, 0.08, 1.0, cfg).instrument == SPOT_SELL
        assert hedge_at(-10.0, 44000.0, 3.0, -0.08, 1.0, cfg).instrument == SPOT_BUY
        assert hedge_at(10.0, 44000.0, 3.0, 0.11, 1.0, cfg).instrument == PERP_SHORT

    def test_hedge_at_costs(self) -> None:
        # h = 0.25 of a 10-lot short at 44000: notional_h = 2.5 × 44000 = 110000.
        h = hedge_at(-10.0, 44000.0, 4.0, 0.1, 0.25)
        assert h.size == approx(10 * 0.25)
        assert h.spread_cost_usd == approx(110000 * 4 / 10000)  # 44
        assert h.funding_cost_1d_usd == approx(110000 * 0.1 / 365)  # paid by the long perp
        assert h.total_cost_usd == approx(44 + 110000 * 0.1 / 365)
        assert h.total_cost_bps == approx((44 + 110000 * 0.1 / 365) / 110000 * 10000)

    def test_hedge_at_zero_fraction(self) -> None:
        h = hedge_at(10.0, 44000.0, 3.0, 0.08, 0.0)
        assert (h.size, h.spread_cost_usd, h.total_cost_usd, h.total_cost_bps) == (0, 0, 0, 0)


# ------------------------------------------------------------------ volatility
class TestVolatility:
    def test_zero_vol(self) -> None:
        a = run(vol=0.0)
        assert a.loss_score == approx(min(30, 0.05 / 0.05 * 30 * 0.5))  # vol_adj 0.5 → 15
        assert a.vol_score == 0.0  # 0 / 0.04 × 10
        assert a.risk_score == approx(15 + 2.5 + 0 + 1.32)  # 18.82
        assert (a.action, a.hedge_pct, a.re_evaluate_minutes) == (HOLD, 0.0, 240)
        assert a.reasoning.startswith("Risk score 19/100 (low).")

    def test_low_vol_scales_loss_and_vol_score(self) -> None:
        a = run(vol=0.02)
        assert a.loss_score == approx(1 * 30 * (0.02 / 0.05))  # 12
        assert a.vol_score == approx(0.02 / 0.04 * 10)  # 5
        assert a.risk_score == approx(12 + 2.5 + 5 + 1.32)

    @pytest.mark.parametrize(
        ("vol", "vol_score"),
        [
            (0.0399, 0.0399 / 0.04 * 10),
            (0.04, 15.0),  # exactly high
            (0.0799, 15.0),
            (0.08, 25.0),  # exactly extreme
            (0.5, 25.0),
        ],
    )
    def test_regimes(self, vol: float, vol_score: float) -> None:
        assert run(vol=vol).vol_score == approx(vol_score)

    def test_vol_adj_capped_at_one(self) -> None:
        assert run(vol=0.2).loss_score == approx(30)  # min(1, 0.2 / 0.05) = 1

    def test_vol_adj_at_four_percent(self) -> None:
        # vol 0.04: vol_adj = 0.04 / 0.05 = 0.8 → loss 24; vol score 15; liquidity
        # 1024 / 4096 × 15 = 3.75; age 54 / 480 × 20 = 2.25 → 45 exactly: HEDGE_PARTIAL.
        a = family_a(54, vol=0.04)
        assert a.loss_score == approx(0.8 * 30)
        assert a.risk_score == approx(24 + 2.25 + 15 + 3.75)
        assert a.risk_score == 45.0
        assert a.action == HEDGE_PARTIAL


# ------------------------------------------------------------------ flat
class TestFlat:
    def test_flat_position(self) -> None:
        a = run(size=0.0, age_minutes=10_000, vol=0.5, funding=5.0, spread_bps=500.0)
        assert (a.action, a.hedge_pct, a.risk_score) == (HOLD, 0.0, 0.0)
        assert a.suggested_hedge is None
        assert a.re_evaluate_minutes == 240
        assert a.notional == 0
        assert a.unrealized_pnl == 0  # 0 × (44000 − 45000)
        assert set(a.pnl_scenarios.values()) == {0.0}
        assert (a.loss_score, a.age_score, a.vol_score, a.liquidity_score) == (0, 0, 0, 0)
        assert a.reasoning.startswith("Risk score 0/100 (low).")
        assert a.to_dict()["suggested_hedge"] is None
        assert a.reason_code == "FLAT_POSITION"

    def test_flat_negative_zero(self) -> None:
        assert run(size=-0.0).action == HOLD

    def test_flat_keeps_given_unrealized(self) -> None:
        assert run(size=0.0, unrealized_pnl=123.5).unrealized_pnl == 123.5


# ------------------------------------------------------------------ shorts and depth
class TestShort:
    def test_short_position(self) -> None:
        # 10 short @45000, price 46000 (losing), ask depth 2.5M, bid 5M.
        a = run(size=-10.0, price=46000.0, bid=5e6, ask=2.5e6)
        notional = 10 * 46000  # 460000
        assert a.notional == approx(notional)
        assert a.unrealized_pnl == approx(-10 * (46000 - 45000))  # -10000
        assert a.move_down_5pct == approx(-10 * 46000 * -0.05)  # +23000
        assert a.move_down_2pct == approx(-10 * 46000 * -0.02)  # +9200
        assert a.move_up_2pct == approx(-10 * 46000 * 0.02)  # -9200
        assert a.move_up_5pct == approx(-10 * 46000 * 0.05)  # -23000
        assert a.loss_score == approx(30)  # worst 23000 / 460000 = 0.05
        assert a.liquidity_score == approx(notional / 2.5e6 * 15)  # ask depth: 2.76
        assert a.risk_score == approx(30 + 2.5 + 15 + 2.76)  # 50.26
        assert (a.action, a.hedge_pct) == (HEDGE_PARTIAL, 0.5)
        h = a.suggested_hedge
        assert h is not None
        notional_h = 10 * 0.5 * 46000  # 230000
        assert h.instrument == SPOT_BUY  # funding 0.08 is not < −0.02
        assert h.size == approx(5.0)
        assert h.spread_cost_usd == approx(notional_h * 3 / 10000)  # 69
        # Not flipped for a short: the long hedge pays positive funding.
        assert h.funding_cost_1d_usd == approx(notional_h * 0.08 / 365)
        assert h.total_cost_usd == approx(69 + notional_h * 0.08 / 365)
        assert h.total_cost_bps == approx((69 + notional_h * 0.08 / 365) / notional_h * 10000)
        p = a.pnl_scenarios
        assert p["hedged_down_5pct"] == approx(23000 * 0.5)
        assert p["hedged_up_5pct"] == approx(-23000 * 0.5)

    def test_long_uses_bid_depth(self) -> None:
        a = run(bid=1e6, ask=1e9)
        assert a.liquidity_score == approx(min(15, 440000 / 1e6 * 15))  # 6.6
        b = run(bid=1e9, ask=1e6)
        assert b.liquidity_score == approx(440000 / 1e9 * 15)

    def test_short_uses_ask_depth(self) -> None:
        a = run(size=-10.0, bid=1e6, ask=1e9)
        assert a.liquidity_score == approx(440000 / 1e9 * 15)
        b = run(size=-10.0, bid=1e9, ask=1e6)
        assert b.liquidity_score == approx(440000 / 1e6 * 15)

    def test_liquidity_capped(self) -> None:
        assert run(bid=1e5).liquidity_score == 15.0  # 440000 / 1e5 × 15 = 66 → 15


# ------------------------------------------------------------------ config overrides
class TestConfigOverrides:
    def test_max_loss_pct(self) -> None:
        a = run(cfg=RiskConfig(max_loss_pct=0.1))
        assert a.loss_score == approx(0.05 / 0.1 * 30 * 1)  # 15
        assert a.risk_score == approx(15 + 2.5 + 15 + 1.32)  # 33.82
        assert (a.action, a.re_evaluate_minutes) == (HOLD, 240)

    def test_max_hold_minutes(self) -> None:
        a = run(cfg=RiskConfig(max_hold_minutes=120))
        assert a.age_score == approx(60 / 120 * 20)  # 10
        assert a.risk_score == approx(30 + 10 + 15 + 1.32)  # 56.32
        assert a.action == HEDGE_PARTIAL

    def test_max_hedge_cost_bps(self) -> None:
        a = run(cfg=RiskConfig(max_hedge_cost_bps=2))  # full hedge is 3bps > 2
        assert (a.action, a.too_expensive) == (HOLD, True)
        assert a.reasoning.startswith("Hedge cost too high (3.0bps > 2bps limit).")

    def test_hedge_trigger_has_no_effect(self) -> None:
        a, b = run(), run(cfg=RiskConfig(hedge_trigger_loss_pct=0.9))
        assert (a.action, a.risk_score) == (b.action, b.risk_score)

    def test_loss_weight(self) -> None:
        a = run(cfg=RiskConfig(loss_weight=60))
        assert a.loss_score == approx(min(60, 1 * 60 * 1))
        assert a.risk_score == approx(60 + 2.5 + 15 + 1.32)  # 78.82
        assert a.action == LIQUIDATE

    def test_score_clamped_at_100(self) -> None:
        a = run(cfg=RiskConfig(loss_weight=100))
        assert a.risk_score == 100.0  # min(100, 100 + 2.5 + 15 + 1.32)
        assert components_sum(a) == approx(118.82)
        assert a.action == LIQUIDATE

    def test_band_thresholds(self) -> None:
        a = run(cfg=RiskConfig(hedge_partial_score=50))  # 48.82 < 50
        assert (a.action, a.hedge_pct, a.band) == (REDUCE, 0.25, "low-moderate")
        b = run(cfg=RiskConfig(liquidate_score=48, hedge_full_score=48))
        assert (b.action, b.band) == (LIQUIDATE, "critical")

    def test_hedge_fractions(self) -> None:
        a = run(cfg=RiskConfig(hedge_partial_pct=0.3))
        assert a.hedge_pct == 0.3
        assert a.suggested_hedge is not None
        assert a.suggested_hedge.size == approx(10 * 0.3)
        assert a.pnl_scenarios["hedged_down_5pct"] == approx(-22000 * (1 - 0.3))

    def test_vol_thresholds(self) -> None:
        a = run(cfg=RiskConfig(high_vol_threshold=0.06, extreme_vol_threshold=0.1))
        assert a.vol_score == approx(0.05 / 0.06 * 10)

    def test_re_eval_cadence(self) -> None:
        cfg = RiskConfig(medium_re_eval_score=50, medium_re_eval_minutes=30)
        assert run(cfg=cfg).re_evaluate_minutes == 240  # 48.82 < 50
        cfg = RiskConfig(medium_re_eval_minutes=30)
        assert run(cfg=cfg).re_evaluate_minutes == 30

    def test_stress_moves(self) -> None:
        a = run(cfg=RiskConfig(large_move=0.1, small_move=0.01))
        assert a.move_down_5pct == approx(10 * 44000 * -0.1)
        assert a.move_up_2pct == approx(10 * 44000 * 0.01)
        assert a.loss_score == approx(min(30, 0.1 / 0.05 * 30))  # capped at 30

    def test_days_per_year(self) -> None:
        h = hedge_at(10.0, 44000.0, 3.0, 0.08, 1.0, RiskConfig(days_per_year=360))
        assert h.funding_cost_1d_usd == approx(-(440000 * 0.08 / 360))


# ------------------------------------------------------------------ unrealized P&L
class TestUnrealized:
    def test_absent_is_derived(self) -> None:
        assert run().unrealized_pnl == approx(10 * (44000 - 45000))
        assert run(size=-3.0, price=46000.0).unrealized_pnl == approx(-3 * (46000 - 45000))

    def test_given_is_reported_and_does_not_move_the_score(self) -> None:
        a = run(unrealized_pnl=1234.5)
        assert a.unrealized_pnl == 1234.5
        assert a.risk_score == approx(48.82)
        assert a.to_dict()["current_unrealized_pnl"] == 1234.5


# ------------------------------------------------------------------ reasoning
HEAD = re.compile(r"^Risk score (\d{1,3})/100 \((critical|high|moderate|low-moderate|low)\)\. ")


class TestReasoning:
    @pytest.mark.parametrize(
        ("make", "action", "band"),
        [
            (lambda: family_a(390), LIQUIDATE, "critical"),
            (lambda: family_a(30), HEDGE_FULL, "high"),
            (lambda: family_b(360), HEDGE_PARTIAL, "moderate"),
            (lambda: family_b(120), REDUCE, "low-moderate"),
            (lambda: family_b(0), HOLD, "low"),
        ],
    )
    def test_head_and_hedge(self, make: Any, action: str, band: str) -> None:
        a = make()
        assert a.action == action
        m = HEAD.match(a.reasoning)
        assert m is not None, a.reasoning
        assert int(m.group(1)) == round(a.risk_score)
        assert m.group(2) == band
        h = a.suggested_hedge
        if action == HOLD:
            assert h is None
            assert "spot_" not in a.reasoning and "perp_" not in a.reasoning
        else:
            assert h is not None
            assert h.instrument in a.reasoning
            assert f"${h.total_cost_usd:,.2f}" in a.reasoning
            assert f"{h.total_cost_bps:.1f}bps" in a.reasoning

    def test_sentences(self) -> None:
        # Short: the head and a sentence of advice (HOLD texts end with a terse "Hold.",
        # as the reference's do); the hedge-cost sentence may come in front.
        def count(text: str) -> int:
            return len(re.findall(r"\.(?:\s|$)", text))  # full stops, not decimal points

        for a in (run(), family_a(390), family_a(30), family_b(120), family_b(0), run(size=0)):
            limit = 3 if a.action == HOLD else 2
            assert 1 <= count(a.reasoning) <= limit, a.reasoning
        assert 2 <= count(run(spread_bps=60.0).reasoning) <= 3

    def test_no_dangling_space_without_asset(self) -> None:
        a = family_b(120, asset="")
        assert " )" not in a.reasoning
        assert "(0.25)" in a.reasoning

    def test_asset_named(self) -> None:
        assert "(5 BTC)" in run().reasoning


# ------------------------------------------------------------------ breakdown
class TestBreakdown:
    @pytest.mark.parametrize(
        "make",
        [
            lambda: run(),
            lambda: run(size=-10.0, price=46000.0, ask=2.5e6),
            lambda: run(vol=0.0),
            lambda: family_a(390),
            lambda: family_b(120),
            lambda: run(size=0.0),
            lambda: run(spread_bps=60.0),
        ],
    )
    def test_components_sum_to_score(self, make: Any) -> None:
        a = make()
        b = a.risk_breakdown
        parts = b["loss_severity"] + b["position_age"] + b["volatility_regime"]
        assert parts + b["size_vs_liquidity"] == approx(b["total"])
        assert b["total"] == a.risk_score
        assert 0 <= b["loss_severity"] <= 30
        assert 0 <= b["position_age"] <= 20
        assert 0 <= b["volatility_regime"] <= 25
        assert 0 <= b["size_vs_liquidity"] <= 15
