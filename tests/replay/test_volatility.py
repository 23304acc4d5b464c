"""The vol estimate: EWMA of day-scaled squared log returns, against numbers worked by hand
and a plain loop of the documented formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_risk.replay.volatility import DAY_MS, VolEstimator, ewma

approx = pytest.approx


def test_daily_steps_worked_by_hand() -> None:
    # 100 -> 110 -> 99, one day apart; window 3: λ = 1 - 2/4 = 0.5.
    ts = np.array([0, DAY_MS, 2 * DAY_MS], dtype=np.int64)
    est = VolEstimator(window=3, min_obs=1).estimate(ts, np.array([100.0, 110.0, 99.0]))
    # r1 = ln 1.1 = 0.0953102, v1 = r1² = 0.00908403, σ1 = 0.0953102
    # r2 = ln 0.9 = -0.1053605, x2 = 0.01110084, v2 = 0.5·0.00908403 + 0.5·0.01110084
    #    = 0.01009244, σ2 = 0.1004611
    assert math.isnan(est[0])
    assert est[1] == approx(0.0953102, abs=1e-7)
    assert est[2] == approx(0.1004611, abs=1e-7)


def test_returns_are_scaled_by_the_time_they_span() -> None:
    # The same +10 % move over half a day counts twice the daily variance: σ = r·√2.
    ts = np.array([0, DAY_MS // 2], dtype=np.int64)
    est = VolEstimator(window=3, min_obs=1).estimate(ts, np.array([100.0, 110.0]))
    assert est[1] == approx(0.0953102 * math.sqrt(2), abs=1e-7)  # 0.1347894
    # One-minute candles: × 1440. A 0.1 % move a minute is ~3.79 % a day.
    ts = np.array([0, 60_000], dtype=np.int64)
    est = VolEstimator(window=3, min_obs=1).estimate(ts, np.array([100.0, 100.1]))
    assert est[1] == approx(math.log(1.001) * math.sqrt(1440), rel=1e-12)
    assert est[1] == approx(0.03793, abs=1e-5)


def test_warm_up_same_timestamp_ticks_and_the_cap() -> None:
    ts = np.array([0, 60_000, 60_000, 120_000, 180_000], dtype=np.int64)
    price = np.array([100.0, 101.0, 102.0, 101.0, 300.0])
    est = VolEstimator(window=10, min_obs=2).estimate(ts, price)
    # Ticks at the same time count as the last of them (102): returns 100->102, 102->101.
    assert np.isnan(est[:3]).all()  # one return so far: warming up (min_obs 2)
    lam = 1 - 2 / 11
    v1 = math.log(1.02) ** 2 * 1440
    v2 = lam * v1 + (1 - lam) * math.log(101 / 102) ** 2 * 1440
    assert est[3] == approx(math.sqrt(v2), rel=1e-12)
    assert est[4] == 1.0  # a tripling in a minute: capped at 1 (the tick schema's range)


def loop_ewma(x: list[float], lam: float) -> list[float]:
    out, v = [], x[0]
    out.append(v)
    for xi in x[1:]:
        v = lam * v + (1 - lam) * xi
        out.append(v)
    return out


@pytest.mark.parametrize("window", [1.0, 2.0, 5.0, 60.0, 1000.0])
def test_blocked_numpy_ewma_equals_the_plain_recursion(window: float) -> None:
    rng = np.random.default_rng(7)
    x = rng.gamma(1.0, 1e-4, 20_000)
    lam = 1 - 2 / (window + 1)
    got = ewma(x, lam)
    want = np.array(loop_ewma(x.tolist(), lam))
    assert np.allclose(got, want, rtol=1e-10, atol=0)


def test_window_must_be_sensible() -> None:
    with pytest.raises(ValueError, match="window"):
        VolEstimator(window=0.5)
    with pytest.raises(ValueError, match="min_obs"):
        VolEstimator(min_obs=0)
