"""DESIGN §12, docs/design.md D12: a feed of prices alone gives advice. The engine estimates
each asset's daily vol from its prices in event time (one estimator, `VolState`, used live
and by replay), fills the fields a feed never gives from configured defaults, names them in
`estimated_inputs`, and shows a position that cannot be assessed yet as waiting.

Expected numbers are worked by hand, or computed here from the price series with plain
numpy (realised vol), never read back from the code under test."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import orjson
import pytest

from stream_risk.api import assess_body
from stream_risk.engine import Engine, EngineConfig
from stream_risk.engine.estimates import (
    DAY_MS,
    MarketDefaults,
    VolEstimator,
    estimate_series,
)

from . import MIN, T0, only, position, price_tick, tick

approx = pytest.approx

ALL_ESTIMATED = [
    "volatility_1d",
    "spot_spread_bps",
    "perp_funding_rate",
    "bid_depth_usd",
    "ask_depth_usd",
]


def series(est: VolEstimator, ts: list[int], prices: list[float]) -> list[float | None]:
    state = est.state()
    return [state.update(t, p) for t, p in zip(ts, prices, strict=True)]


# ---------------------------------------------------------------------- the formula
def test_daily_steps_worked_by_hand() -> None:
    # 100 -> 110 -> 99, one day apart; window 3: λ = 1 - 2/4 = 0.5.
    got = series(VolEstimator(window=3, min_obs=1), [0, DAY_MS, 2 * DAY_MS], [100, 110, 99])
    # r1 = ln 1.1 = 0.0953102, x1 = 0.00908403; m1 = 0.5·x1, v1 = m1 / (1 − 0.5) = x1,
    # σ1 = 0.0953102.
    # r2 = ln 0.9 = −0.1053605, x2 = 0.01110084; m2 = 0.5·m1 + 0.5·x2 = 0.25·x1 + 0.5·x2,
    # v2 = m2 / (1 − 0.25) = (x1 + 2·x2) / 3 = 0.01042857, σ2 = 0.1021204.
    assert got[0] is None
    assert got[1] == approx(0.0953102, abs=1e-7)
    assert got[2] == approx(0.1021204, abs=1e-7)


def test_returns_are_scaled_by_the_time_they_span() -> None:
    # The same +10 % move over half a day counts twice the daily variance: σ = r·√2.
    got = series(VolEstimator(window=3, min_obs=1), [0, DAY_MS // 2], [100.0, 110.0])
    assert got[1] == approx(0.0953102 * math.sqrt(2), abs=1e-7)  # 0.1347894
    # One-minute candles: × 1440. A 0.1 % move a minute is ~3.79 % a day.
    got = series(VolEstimator(window=3, min_obs=1), [0, MIN], [100.0, 100.1])
    assert got[1] == approx(math.log(1.001) * math.sqrt(1440), rel=1e-12)
    assert got[1] == approx(0.03793, abs=1e-5)


def test_warm_up_same_timestamp_ticks_and_the_cap() -> None:
    ts = [0, MIN, MIN, 2 * MIN, 3 * MIN]
    price = [100.0, 101.0, 102.0, 101.0, 300.0]
    est = VolEstimator(window=10, min_obs=2)
    # Ticks at the same time count as the last of them (102): returns 100->102, 102->101.
    got = series(est, ts, price)
    assert got[:3] == [None, None, None]  # one return so far: warming up (min_obs 2)
    lam = 1 - 2 / 11
    x1 = math.log(1.02) ** 2 * 1440
    x2 = math.log(101 / 102) ** 2 * 1440
    v2 = (lam * x1 + x2) / (1 + lam)  # ((1−λ)λ·x1 + (1−λ)·x2) / (1 − λ²)
    assert got[3] == approx(math.sqrt(v2), rel=1e-12)
    assert got[4] == 1.0  # a tripling in a minute: capped at 1 (the tick schema's range)
    # Replay's column: the same values; the first tick of a time shows the time's estimate.
    col = estimate_series(est, np.array(ts, dtype=np.int64), np.array(price))
    assert np.isnan(col[:3]).all() and col[3] == got[3] and col[4] == 1.0


def test_settings_must_be_sensible() -> None:
    with pytest.raises(ValueError, match="window"):
        VolEstimator(window=0.5)
    with pytest.raises(ValueError, match="min_obs"):
        VolEstimator(min_obs=0)


def gbm(
    rng: np.random.Generator, gaps_ms: np.ndarray, daily_vol: float, p0: float = 100.0
) -> tuple[list[int], list[float], np.ndarray]:
    """Prices with log returns ~ N(0, σ² Δt/day): (ts, prices, the returns)."""
    r = rng.standard_normal(len(gaps_ms)) * daily_vol * np.sqrt(gaps_ms / DAY_MS)
    prices = p0 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    ts = T0 + np.concatenate(([0], np.cumsum(gaps_ms)))
    return [int(t) for t in ts], prices.tolist(), r


def test_one_minute_ticks_track_the_realised_vol() -> None:
    """4,000 one-minute ticks at a true daily vol of 4 %. Realised vol, computed here over
    the whole stream (√(Σr²/n × 1440)), and the estimate averaged over it agree within
    3 %; each estimate after warm-up lies within 35 % of the truth (span 60: the EWMA's
    own sampling error is ≈ 9 % of σ, one standard deviation)."""
    rng = np.random.default_rng(1)
    ts, prices, r = gbm(rng, np.full(4000, MIN), 0.04)
    realised = math.sqrt(float(np.mean(r * r)) * 1440)
    assert realised == approx(0.04, rel=0.05)  # the generator itself
    got = series(VolEstimator(), ts, prices)
    assert got[19] is None and got[20] is not None  # tick k brings return k: warm at 20
    warm = np.array([g for g in got if g is not None])
    assert math.sqrt(float(np.mean(warm**2))) == approx(realised, rel=0.03)
    # From 60 returns on, every estimate is within 35 % of the truth (≈ 4 standard
    # deviations of the EWMA's sampling error at span 60).
    later = np.array(got[60:], dtype=float)
    assert np.all(np.abs(later / 0.04 - 1) < 0.35)
    # During the warm-up it follows what the returns so far realised: the first estimate
    # is within 25 % of their plain realised vol (its weights run from λ^19 ≈ 0.53 to 1).
    first = math.sqrt(float(np.mean(r[:20] ** 2)) * 1440)
    assert warm[0] == approx(first, rel=0.25)


def test_irregular_ticks_are_scaled_by_their_own_gaps() -> None:
    """Gaps of 1 s to 5 min at random: each return is scaled by its own Δt, so the
    estimate is still the daily vol (5 %), as the realised variance per unit of event
    time computed here (Σr² / ΣΔt × 1 day) says."""
    rng = np.random.default_rng(2)
    gaps = rng.choice(np.array([1_000, 10_000, MIN, 5 * MIN]), 6000)
    ts, prices, r = gbm(rng, gaps, 0.05)
    realised = math.sqrt(float(np.sum(r * r)) / float(np.sum(gaps)) * DAY_MS)
    assert realised == approx(0.05, rel=0.05)
    got = [g for g in series(VolEstimator(), ts, prices) if g is not None]
    assert math.sqrt(float(np.mean(np.square(got)))) == approx(realised, rel=0.05)
    # Counting ticks instead of time would be off by far more: one-minute scaling of every
    # return (the mistake this guards against) gives a different number.
    by_count = math.sqrt(float(np.mean(r * r)) * 1440)
    assert abs(by_count / realised - 1) > 0.15


# ---------------------------------------------------------------------- in the engine
def price_only(engine: Engine, ts: list[int], prices: list[float], asset: str = "BTC") -> Any:
    last = None
    for t, p in zip(ts, prices, strict=True):
        last = engine.step([price_tick(asset, t, p)], t)
    return last


def test_a_price_only_feed_is_assessed_once_warm_and_says_what_it_estimated() -> None:
    engine = Engine()
    engine.step([position(ts=T0)], T0)
    ts = [T0 + k * MIN for k in range(1, 30)]
    prices = [44_000.0 * (1 + 0.001 * (-1) ** k) for k in range(1, 30)]
    # 20 returns need 21 ticks: until then the position waits, visibly.
    for k in range(20):
        res = engine.step([price_tick(ts=ts[k], price=prices[k])], ts[k])
        assert res.outputs == []
        row = engine.snapshot()[0]
        assert row["waiting_for"] == ["volatility_1d"]
        assert f"{max(0, k)} of 20 returns" in row["waiting"]["volatility_1d"]
    assert engine.waiting()["BTC"]["positions"] == 1
    v = only(engine.step([price_tick(ts=ts[20], price=prices[20])], ts[20]))
    assert engine.waiting() == {}
    assert v["estimated_inputs"] == ALL_ESTIMATED
    # The vol used is the estimate worked here from the same 21 prices (span 60).
    # Bias-corrected EWMA = Σ λ^(20−k) x_k / Σ λ^(20−k), k = 1..20.
    lam = 1 - 2 / 61
    x = [math.log(b / a) ** 2 * 1440 for a, b in itertools.pairwise(prices[:21])]
    weights = [lam ** (20 - k) for k in range(1, 21)]
    var = sum(w * xi for w, xi in zip(weights, x, strict=True)) / sum(weights)
    market = v["inputs"]["market"]
    assert market["volatility_1d"] == approx(math.sqrt(var), rel=1e-12)
    # Defaults: spread 2 bps, funding 0, depths 1,000,000.
    assert (market["spot_spread_bps"], market["perp_funding_rate"]) == (2.0, 0.0)
    assert market["bid_depth_usd"] == market["ask_depth_usd"] == 1_000_000.0
    # The decision record still reproduces the numbers through POST /assess.
    body = {
        "position": v["inputs"]["position"],
        "market": market,
        "config": v["inputs"]["config"],
    }
    answer = assess_body(orjson.dumps(body), 0)[1]
    for name in ("action", "hedge_pct", "risk_score", "suggested_hedge", "pnl_scenarios"):
        assert answer[name] == v[name], name


def test_a_field_the_feed_gives_always_wins() -> None:
    engine = Engine(EngineConfig(vol=VolEstimator(window=10, min_obs=2)))
    engine.step([position(ts=T0)], T0)
    price_only(engine, [T0, T0 + MIN, T0 + 2 * MIN], [44_000.0, 44_100.0, 43_900.0])
    assert engine.snapshot()[0]["latest_action"]["estimated_inputs"] == ALL_ESTIMATED
    # The feed starts giving vol and depth: they win, and are no longer listed.
    v = only(
        engine.step([tick(ts=T0 + 3 * MIN, vol=0.05, spread=None, funding=None)], T0 + 3 * MIN)
    )
    assert v["inputs"]["market"]["volatility_1d"] == 0.05
    assert v["estimated_inputs"] == ["spot_spread_bps", "perp_funding_rate"]
    # Later price-only ticks keep the feed's vol (carried forward), not the estimate.
    engine.step([price_tick(ts=T0 + 4 * MIN, price=30_000.0)], T0 + 4 * MIN)
    assert engine.table.markets["BTC"].volatility_1d == 0.05
    assert engine.snapshot()[0]["latest_action"]["inputs"]["market"]["volatility_1d"] == 0.05


def test_the_defaults_are_configurable() -> None:
    cfg = EngineConfig(
        market_defaults=MarketDefaults(7.0, 0.05, 2e6, 3e6), vol=VolEstimator(min_obs=1)
    )
    engine = Engine(cfg)
    engine.step([position(ts=T0)], T0)
    price_only(engine, [T0, T0 + MIN], [44_000.0, 44_044.0])
    market = engine.snapshot()[0]["latest_action"]["inputs"]["market"]
    assert (market["spot_spread_bps"], market["perp_funding_rate"]) == (7.0, 0.05)
    assert (market["bid_depth_usd"], market["ask_depth_usd"]) == (2e6, 3e6)


def test_a_waiting_position_still_counts_in_exposure() -> None:
    engine = Engine()
    engine.step([position(ts=T0, size=10.0)], T0)
    engine.step([price_tick(ts=T0 + 1000, price=44_000.0)], T0 + 1000)
    assert engine.waiting()["BTC"]["missing"] == ["volatility_1d"]
    book = engine.book_exposure()
    assert book["assets"]["BTC"]["net_notional_usd"] == 440_000.0
    assert book["book"]["gross_notional_usd"] == 440_000.0


def test_a_restart_warms_up_again_from_the_look_back() -> None:
    """After a restart the estimate is rebuilt from the ticks the look-back re-reads:
    with 25 one-minute ticks in it the engine is warm again, with the estimate a fresh
    engine computes from those ticks (and nothing from before them)."""
    rng = np.random.default_rng(5)
    ts, prices, _ = gbm(rng, np.full(60, MIN), 0.04)
    before = Engine()
    price_only(before, ts, prices)
    after = Engine()
    price_only(after, ts[-25:], prices[-25:])
    want = series(VolEstimator(), ts[-25:], prices[-25:])[-1]
    assert want is not None
    assert after.table.markets["BTC"].volatility_1d == want
    assert before.table.markets["BTC"].volatility_1d != want  # it had more history
