"""The net position of an asset and what netting saves (`book.net`), on DESIGN §13's
two-sided example, worked by hand from DESIGN §1:

  +50 BTC @ 60,000 (opened 120 min before T0) and −40 BTC @ 62,000 (opened 30 min before),
  price 61,000, vol 0.05, spread 2 bps, bid depth 1,000,000, ask depth 2,000,000;
  each position's latest action hedges the long at h = 1.0 and the short at h = 0.5.

The sums: positions 2, longs 1, shorts 1; Q = Σq = 10; Σ|q| = 90;
Σ_long q·h = 50·1.0 = 50 (sold); Σ_short |q|·h = 40·0.5 = 20 (bought);
Σ|q|·e = 3,000,000 + 2,480,000 = 5,480,000; Σq·e = 3,000,000 − 2,480,000 = 520,000;
Σ|q|·o = 50(T0 − 120 MIN) + 40(T0 − 30 MIN) = 90 T0 − 7,200 MIN.
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest import approx

from stream_risk.assessor import assess
from stream_risk.book.net import MarketInputs, NetBook, net_record, per_position_hedges
from stream_risk.book.partial import Partial
from stream_risk.config import DEFAULT_CONFIG

T0 = 1_700_000_000_000
MIN = 60_000
CFG = DEFAULT_CONFIG

TWO_SIDED = Partial(
    2, 1, 1, 10.0, 90.0, 50.0, 20.0, 5_480_000.0, 520_000.0, 90.0 * T0 - 7_200 * MIN
)
# entry = 5,480,000 / 90 = 60,888.888…; age = (50·120 + 40·30)/90 = 7,200/90 = 80 min
ENTRY = 5_480_000 / 90
AGE = 80.0
# unrealised = 50·(61,000 − 60,000) + (−40)·(61,000 − 62,000) = 50,000 + 40,000 = 90,000
UNREALIZED = 90_000.0


def market(funding: float) -> MarketInputs:
    return MarketInputs(T0 - 1_000, 61_000.0, 0.05, 2.0, funding, 1_000_000.0, 2_000_000.0)


def test_net_position_sums() -> None:
    t = TWO_SIDED
    assert t.net_size == 10.0 and t.gross_size == 90.0
    assert t.vwap_entry == ENTRY
    assert t.vwap_entry == approx(60_888.888888889)
    assert t.age_minutes(T0) == AGE
    assert t.unrealized_pnl(61_000.0) == UNREALIZED
    # Σ q·h = 50 − 20 = 30: what the positions' own hedges take off the net
    assert t.hedged_size == 30.0


@pytest.mark.parametrize(
    ("funding", "spread", "funding_1d", "total"),
    [
        # traded 50 + 20 = 70 → notional 70 · 61,000 = 4,270,000;
        # spread = 4,270,000 · 2/10,000 = 854; funding 0 → total 854
        (0.0, 854.0, 0.0, 854.0),
        # f = 0.03: the long's hedge (short 50) receives 50·61,000·0.03/365
        #   = 91,500/365 = 250.6849…; the short's hedge (long 20) pays
        #   20·61,000·0.03/365 = 36,600/365 = 100.2740…;
        # net 1-day funding = −91,500/365 + 36,600/365 = −54,900/365 = −150.4110;
        # each hedge charges its own: total = 854 + max(0, −250.68) + max(0, 100.27)
        #   = 854 + 36,600/365 = 954.2740
        (0.03, 854.0, -54_900 / 365, 854.0 + 36_600 / 365),
    ],
)
def test_per_position_hedges(
    funding: float, spread: float, funding_1d: float, total: float
) -> None:
    each = per_position_hedges(TWO_SIDED, 61_000.0, 2.0, funding, CFG)
    assert each["sell_size"] == 50.0
    assert each["buy_size"] == 20.0
    assert each["traded_size"] == 70.0
    assert each["traded_notional_usd"] == approx(4_270_000.0)
    assert each["spread_cost_usd"] == approx(spread)
    assert each["funding_cost_1d_usd"] == approx(funding_1d)
    assert each["total_cost_usd"] == approx(total)


def test_per_position_hedges_negative_funding_charges_the_long_side() -> None:
    # f = −0.03: the long's hedge (short 50) pays 91,500/365 = 250.6849; the short's
    # hedge (long 20) receives 100.2740 → total = 854 + 91,500/365 = 1,104.6849
    each = per_position_hedges(TWO_SIDED, 61_000.0, 2.0, -0.03, CFG)
    assert each["funding_cost_1d_usd"] == approx(54_900 / 365)
    assert each["total_cost_usd"] == approx(854.0 + 91_500 / 365)


def _record(funding: float) -> dict[str, Any]:
    nb = NetBook.of("BTC", TWO_SIDED, market(funding), CFG, T0)
    return net_record(nb, CFG, [], T0 + 7)


@pytest.mark.parametrize("funding", [0.0, 0.03])
def test_the_net_record_by_hand(funding: float) -> None:
    rec = _record(funding)
    assert rec["schema_version"] == 1
    assert (rec["asset"], rec["event_ts"], rec["assessed_at"], rec["tick_ts"]) == (
        "BTC",
        T0,
        T0 + 7,
        T0 - 1_000,
    )
    assert rec["price"] == 61_000.0
    assert (rec["positions"], rec["long"], rec["short"]) == (2, 1, 1)
    assert (rec["net_size"], rec["gross_size"], rec["hedged_size"]) == (10.0, 90.0, 30.0)
    assert rec["entry_price"] == approx(ENTRY)
    assert rec["age_minutes"] == approx(AGE)
    # net notional 10 · 61,000 = 610,000; gross 90 · 61,000 = 5,490,000
    assert rec["net_notional_usd"] == approx(610_000.0)
    assert rec["gross_notional_usd"] == approx(5_490_000.0)
    assert rec["unrealized_pnl"] == approx(UNREALIZED)
    assert rec["breaches"] == []

    # The netted hedge: the per-position hedges in one trade of 50 − 20 = 30, a sale:
    # notional 30 · 61,000 = 1,830,000; spread 1,830,000 · 2/10⁴ = 366;
    # funding (short hedge receives) −1,830,000 · f/365; cost 366 + max(0, that) = 366.
    netted = rec["netted_hedge"]
    assert netted["size"] == approx(30.0)
    assert netted["spread_cost_usd"] == approx(366.0)
    assert netted["funding_cost_1d_usd"] == approx(-1_830_000 * funding / 365)
    assert netted["total_cost_usd"] == approx(366.0)
    assert netted["total_cost_bps"] == approx(2.0)
    # instrument: a long (sale) hedge is perp_short when f > 0.02, else spot_sell
    assert netted["instrument"] == ("perp_short" if funding > 0.02 else "spot_sell")
    each_total = 854.0 + (36_600 / 365 if funding else 0.0)
    assert rec["per_position_hedges"]["total_cost_usd"] == approx(each_total)
    # netting saving = per-position total − 366: 488 (f 0), 588.2740 (f 0.03)
    assert rec["netting_saving_usd"] == approx(each_total - 366.0)
    assert rec["netting_saving_usd"] == approx(488.0 if not funding else 588.2739726)

    # The net advice, by hand: N = 610,000;
    # loss: worst = 5% of 610,000 = 30,500, loss_pct 0.05, vol_adj min(1, 0.05/0.05) = 1
    #   → min(30, 0.05/0.05 · 30 · 1) = 30
    # age: 80/480 · 20 = 3.3333; vol: 0.04 ≤ 0.05 < 0.08 → 15
    # liquidity (net long → bid depth 1,000,000): 610,000/1e6 · 15 = 9.15
    # score = 30 + 3.3333 + 15 + 9.15 = 57.4833 → HEDGE_PARTIAL, h 0.5; re-evaluate 60
    advice = rec["advice"]
    rb = advice["risk_breakdown"]
    assert rb["loss_severity"] == approx(30.0)
    assert rb["position_age"] == approx(10 / 3)
    assert rb["volatility_regime"] == approx(15.0)
    assert rb["size_vs_liquidity"] == approx(9.15)
    assert advice["risk_score"] == approx(57.483333333)
    assert (advice["action"], advice["hedge_pct"], advice["re_evaluate_minutes"]) == (
        "HEDGE_PARTIAL",
        0.5,
        60,
    )
    assert advice["position_notional_usd"] == approx(610_000.0)
    assert advice["current_unrealized_pnl"] == approx(UNREALIZED)
    # P&L −5%: 10 · 61,000 · −0.05 = −30,500; hedged at 0.5: −15,250
    assert advice["pnl_scenarios"]["move_down_5pct"] == approx(-30_500.0)
    assert advice["pnl_scenarios"]["hedged_down_5pct"] == approx(-15_250.0)
    # suggested hedge of the net: 10 · 0.5 = 5, notional 305,000, spread 61,
    # funding −305,000 · f/365 (received), total 61
    hedge = advice["suggested_hedge"]
    assert hedge["size"] == approx(5.0)
    assert hedge["spread_cost_usd"] == approx(61.0)
    assert hedge["funding_cost_1d_usd"] == approx(-305_000 * funding / 365)
    assert hedge["total_cost_usd"] == approx(61.0)
    assert hedge["instrument"] == ("perp_short" if funding > 0.02 else "spot_sell")
    # saving = per-position total − the net advice's hedge: 854 − 61 = 793 (f 0);
    # 954.2740 − 61 = 893.2740 (f 0.03)
    assert rec["saving_usd"] == approx(793.0 if not funding else 893.2739726)


@pytest.mark.parametrize("funding", [0.0, 0.03])
def test_the_advice_is_the_model_on_the_hand_computed_net_position(funding: float) -> None:
    rec = _record(funding)
    # The hand-computed inputs (the sums are exact in floats, so exact equality holds).
    want = assess(
        10.0, ENTRY, AGE, UNREALIZED, 61_000.0, 0.05, 2.0, funding, 1e6, 2e6, CFG, "BTC"
    ).to_dict()
    assert rec["advice"] == want


def test_a_net_short_uses_the_ask_depth_and_buys() -> None:
    # −50 @ 62,000 (h 1.0) and +40 @ 60,000 (h 0.5): Q = −10; sold 20, bought 50
    t = Partial(2, 1, 1, -10.0, 90.0, 20.0, 50.0, 5_500_000.0, -700_000.0, 90.0 * T0)
    nb = NetBook.of("BTC", t, market(0.0), CFG, T0)
    rec = net_record(nb, CFG, [], T0)
    # liquidity against the ask depth 2,000,000: 610,000/2e6 · 15 = 4.575
    assert rec["advice"]["risk_breakdown"]["size_vs_liquidity"] == approx(4.575)
    # the netted trade: 20 − 50 = −30 → buy 30 (spot_buy), spread 366
    assert rec["netted_hedge"]["instrument"] == "spot_buy"
    assert rec["netted_hedge"]["size"] == approx(30.0)
    # unrealised = −10 · 61,000 + 700,000 = 90,000 (= −50·(−1,000) + 40·1,000)
    assert rec["unrealized_pnl"] == approx(90_000.0)


def test_a_flat_net() -> None:
    # +40 @ 60,000 and −40 @ 62,000, both hedged in full (h 1.0): Q = 0, Σ|q| = 80,
    # sold 40, bought 40; Σ|q|e = 2,400,000 + 2,480,000 = 4,880,000 → entry 61,000;
    # Σqe = −80,000 → unrealised = 0 + 80,000 = 80,000
    t = Partial(2, 1, 1, 0.0, 80.0, 40.0, 40.0, 4_880_000.0, -80_000.0, 80.0 * T0)
    nb = NetBook.of("BTC", t, market(0.03), CFG, T0)
    rec = net_record(nb, CFG, [], T0)
    assert rec["entry_price"] == approx(61_000.0)
    assert rec["net_notional_usd"] == 0.0
    assert rec["unrealized_pnl"] == approx(80_000.0)
    a = rec["advice"]
    assert (a["action"], a["hedge_pct"], a["risk_score"], a["suggested_hedge"]) == (
        "HOLD",
        0.0,
        0.0,
        None,
    )
    assert a["re_evaluate_minutes"] == 240
    # netted: 40 − 40 = 0 → no trade
    assert rec["netted_hedge"] is None
    # per-position: 80 · 61,000 · 2/10⁴ = 976 spread; funding: the short's hedge (long 40)
    # pays 40 · 61,000 · 0.03/365 = 73,200/365 = 200.5479; the long's receives as much
    each = rec["per_position_hedges"]
    assert each["spread_cost_usd"] == approx(976.0)
    assert each["funding_cost_1d_usd"] == approx(0.0, abs=1e-9)
    assert each["total_cost_usd"] == approx(976.0 + 73_200 / 365)
    assert rec["netting_saving_usd"] == approx(976.0 + 73_200 / 365)
    assert rec["saving_usd"] == approx(976.0 + 73_200 / 365)


def test_no_market_yet() -> None:
    nb = NetBook.of("BTC", TWO_SIDED, None, CFG, T0)
    assert nb.assessment is None
    rec = nb.record(CFG, [], T0 + 1)
    for k in (
        "tick_ts",
        "price",
        "net_notional_usd",
        "gross_notional_usd",
        "unrealized_pnl",
        "advice",
        "per_position_hedges",
        "netted_hedge",
        "saving_usd",
        "netting_saving_usd",
    ):
        assert rec[k] is None, k
    # the sizes are known without a price
    assert (rec["positions"], rec["net_size"], rec["gross_size"]) == (2, 10.0, 90.0)
    assert rec["entry_price"] == approx(ENTRY)
    assert rec["age_minutes"] == approx(AGE)


def test_no_hedges_advised_per_position() -> None:
    # Neither position has an action yet (h 0): nothing per position, no netted trade;
    # the saving of following the net advice is then negative (−61: its own hedge's cost).
    t = TWO_SIDED._replace(long_hedged=0.0, short_hedged=0.0)
    rec = net_record(NetBook.of("BTC", t, market(0.0), CFG, T0), CFG, [], T0)
    assert rec["per_position_hedges"]["total_cost_usd"] == 0.0
    assert rec["netted_hedge"] is None
    assert rec["netting_saving_usd"] == 0.0
    assert rec["saving_usd"] == approx(-61.0)


def test_a_net_of_float_residue_is_flat() -> None:
    # A partition's running sums after +40, +7.3, −40 and the 7.3 closed:
    # 40 + 7.3 − 40 − 7.3 = −2.66e-15 in floats, not 0; and the hedges likewise.
    residue = 40.0 + 7.3 - 40.0 - 7.3
    assert residue != 0.0
    t = Partial(2, 1, 1, residue, 80.0, 40.0 + residue, 40.0, 4_880_000.0, -80_000.0, 80.0 * T0)
    rec = net_record(NetBook.of("BTC", t, market(0.0), CFG, T0), CFG, [], T0)
    # assessed flat: HOLD, score 0, no hedge; the hedges cancel: no netted trade
    a = rec["advice"]
    assert (a["action"], a["risk_score"], a["suggested_hedge"]) == ("HOLD", 0.0, None)
    assert rec["netted_hedge"] is None
    # a small real net is not residue: 1e-6 BTC on 80 gross is assessed (> 1e-9 × 80)
    small = t._replace(net_size=1e-6)
    assessed = NetBook.of("BTC", small, market(0.0), CFG, T0).assessment
    assert assessed is not None and assessed.size == 1e-6
