"""Daily volatility estimated from the price stream itself (used when ticks carry none).

Formula (per asset, over its ticks in event-time order; several ticks at the same `ts`
count as the last of them, as the engine conflates them):

    r_k  = ln(p_k / p_{k-1})                       log return between distinct timestamps
    x_k  = r_k² × (86,400,000 / (t_k − t_{k-1}))   that return's variance, scaled to one day
    v_1  = x_1;   v_k = λ·v_{k-1} + (1 − λ)·x_k    EWMA, λ = 1 − 2 / (window + 1)
    σ_k  = min(1, √v_k)                            daily vol, once k ≥ min_obs returns

`window` is the EWMA span in observations (RiskMetrics' λ = 0.94 is a span of ~32.3);
scaling each squared return by the time it spans makes the estimate a daily variance for
any spacing of the data (minute candles: × 1440). Before `min_obs` returns the estimate is
missing (NaN) and positions on that asset wait, as for a market with no `volatility_1d`.
The cap at 1 keeps the value inside the tick schema's range (0..1).

The recursion runs in numpy blocks (closed form within a block, carried across blocks), so
it is exact up to float rounding and linear in the number of ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class VolEstimator:
    """EWMA of day-scaled squared log returns (see the module doc)."""

    window: float = 60.0
    min_obs: int = 20

    def __post_init__(self) -> None:
        if not self.window >= 1:
            raise ValueError(f"vol window must be >= 1 observation, got {self.window}")
        if self.min_obs < 1:
            raise ValueError(f"vol min_obs must be >= 1, got {self.min_obs}")

    @property
    def decay(self) -> float:
        """λ = 1 − 2 / (window + 1)."""
        return 1.0 - 2.0 / (self.window + 1.0)

    def describe(self) -> str:
        return (
            f"EWMA of day-scaled squared log returns, span {self.window:g} observations "
            f"(λ = {self.decay:.6f}), from {self.min_obs} returns on; capped at 1"
        )

    def estimate(self, ts: NDArray[np.int64], price: NDArray[np.float64]) -> NDArray[np.float64]:
        """Daily vol at each tick of ONE asset (ts non-decreasing); NaN while warming up."""
        n = len(ts)
        out = np.full(n, np.nan)
        if n < 2:
            return out
        # The last tick of each timestamp stands for it.
        last = np.ones(n, dtype=bool)
        last[:-1] = ts[1:] != ts[:-1]
        idx = np.flatnonzero(last)
        t = ts[idx]
        p = price[idx]
        if len(t) < 2:
            return out
        dt = np.diff(t).astype(np.float64)
        r = np.log(p[1:] / p[:-1])
        x = r * r * (DAY_MS / dt)
        v = ewma(x, self.decay)
        sigma = np.minimum(1.0, np.sqrt(v))
        sigma[: self.min_obs - 1] = np.nan
        # Vol at distinct timestamp j (j >= 1) is sigma[j-1]; map back to every tick.
        per_ts = np.concatenate(([np.nan], sigma))
        group = np.cumsum(np.concatenate(([True], ts[1:] != ts[:-1]))) - 1
        result: NDArray[np.float64] = per_ts[group]
        return result


def ewma(x: NDArray[np.float64], lam: float) -> NDArray[np.float64]:
    """v_0 = x_0, v_k = lam·v_{k-1} + (1 − lam)·x_k, in numpy blocks."""
    n = len(x)
    out = np.empty(n)
    if n == 0:
        return out
    if lam <= 0.0:
        out[:] = x
        return out
    # Block length such that lam^-B stays well inside float range and precision.
    block = max(1, min(4096, int(12 * math.log(10) / -math.log(lam)))) if lam < 1 else 4096
    a = 1.0 - lam
    prev = float(x[0])
    out[0] = prev
    start = 1
    while start < n:
        end = min(n, start + block)
        xs = x[start:end]
        j = np.arange(1, end - start + 1, dtype=np.float64)
        w = lam**j  # lam^(j) for j = 1..B
        # v_{s+j-1} = lam^j · prev + a · Σ_{i<=j} lam^(j-i) x_i = lam^j (prev + a Σ x_i lam^-i)
        acc = np.cumsum(xs / w)
        vals = w * (prev + a * acc)
        out[start:end] = vals
        prev = float(vals[-1])
        start = end
    return out
