"""What the engine uses where the feed gives nothing: estimated volatility, default inputs.

Exchanges publish prices, not volatility. The engine estimates each asset's daily vol from
its own price stream, in event time, with this one estimator — live mode per tick, replay
over a file's ticks (`estimate_series`), the same arithmetic in the same order, so both
give the same floats to the last bit (DESIGN §12, docs/design.md D12).

Formula (per asset, over its ticks in event-time order; several ticks at one `ts` count as
the last of them, as the engine conflates them):

    r_k  = ln(p_k / p_{k-1})                       log return between distinct timestamps
    x_k  = r_k² × (86,400,000 / (t_k − t_{k-1}))   that return's variance, scaled to one day
    m_0  = 0;   m_k = λ·m_{k-1} + (1 − λ)·x_k      EWMA, λ = 1 − 2 / (window + 1)
    v_k  = m_k / (1 − λ^k)                         bias-corrected: a weighted mean of x_1..x_k
    σ_k  = min(1, √v_k)                            daily vol, once k ≥ min_obs returns

The bias correction makes v_k the EWMA-weighted *mean* of the returns so far: during the
warm-up every return counts about alike, instead of the first one weighing half the
estimate 20 returns later (seeding v_1 = x_1 with a span of 60 does that); once k ≫
window it is the plain EWMA.

Scaling each squared return by the time it spans makes every x_k an estimate of the *daily*
variance whatever the spacing of the ticks (one-second ticks: × 86,400; minute candles:
× 1,440; irregular ticks: each by its own gap), so the estimate is in event time, not in
tick count. `window` is the EWMA span in returns (RiskMetrics' λ = 0.94 is a span of
~32.3). Before `min_obs` returns there is no estimate: the asset's positions wait, visibly.
The cap at 1 keeps the value inside the tick schema's range (0..1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

DAY_MS: Final = 86_400_000

#: The market fields an action can be made from, in the order `estimated_inputs` lists them.
MARKET_INPUTS: Final = (
    "volatility_1d",
    "spot_spread_bps",
    "perp_funding_rate",
    "bid_depth_usd",
    "ask_depth_usd",
)


@dataclass(frozen=True, slots=True)
class VolEstimator:
    """The estimator's settings: EWMA span and warm-up, both counted in returns."""

    window: float = 60.0
    min_obs: int = 20

    def __post_init__(self) -> None:
        if not self.window >= 1:
            raise ValueError(f"vol window must be >= 1 return, got {self.window}")
        if self.min_obs < 1:
            raise ValueError(f"vol min_obs must be >= 1, got {self.min_obs}")

    @property
    def decay(self) -> float:
        """λ = 1 − 2 / (window + 1)."""
        return 1.0 - 2.0 / (self.window + 1.0)

    def describe(self) -> str:
        return (
            f"EWMA of day-scaled squared log returns, span {self.window:g} returns "
            f"(λ = {self.decay:.6f}), from {self.min_obs} returns on; capped at 1"
        )

    def state(self) -> VolState:
        return VolState(self)


class VolState:
    """One asset's running estimate. `update` takes its ticks in event-time order."""

    __slots__ = ("_a", "_b", "_lam", "_min_obs", "m", "n", "p", "t", "w")

    def __init__(self, est: VolEstimator) -> None:
        self._lam = est.decay
        self._a = 1.0 - self._lam
        self._min_obs = est.min_obs
        #: The latest distinct time, its (last) price, the EWMA m_k, λ^k and k.
        self.t = -1
        self.p = 0.0
        self.m = 0.0
        self.w = 1.0
        self.n = 0
        #: (t, p, m, w, n) before the latest time's return: a second tick at that time
        #: replaces the first (the last tick of a time stands for it).
        self._b: tuple[int, float, float, float, int] | None = None

    def update(self, ts: int, price: float) -> float | None:
        """Take the tick (ts, price); the daily vol as of it, or None while warming up.

        A tick older than the latest is ignored (the engine drops those before)."""
        if ts == self.t:
            b = self._b
            if b is None:  # still the first time: no return yet
                self.p = price
                return None
            self._step(*b, ts, price)
        elif ts > self.t:
            if self.t < 0:
                self.t, self.p = ts, price
                return None
            self._b = (self.t, self.p, self.m, self.w, self.n)
            self._step(self.t, self.p, self.m, self.w, self.n, ts, price)
        return self.value

    def _step(
        self, t0: int, p0: float, m0: float, w0: float, n0: int, ts: int, price: float
    ) -> None:
        r = math.log(price / p0)
        x = r * r * (DAY_MS / (ts - t0))
        lam = self._lam
        self.m = lam * m0 + self._a * x
        self.w = lam * w0
        self.n = n0 + 1
        self.t, self.p = ts, price

    @property
    def variance(self) -> float:
        """v_k, the bias-corrected EWMA (0 before the first return)."""
        return self.m / (1.0 - self.w) if self.n else 0.0

    @property
    def value(self) -> float | None:
        """The daily vol (None before `min_obs` returns)."""
        if self.n < self._min_obs:
            return None
        return min(1.0, math.sqrt(self.variance))

    @property
    def needed(self) -> int:
        """Returns still missing before the estimate is used."""
        return max(0, self._min_obs - self.n)


def estimate_series(
    est: VolEstimator, ts: NDArray[np.int64], price: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Daily vol at each tick of ONE asset (ts non-decreasing), NaN while warming up: the
    value the engine's `VolState` holds after that tick (replay's column)."""
    state = est.state()
    out = np.full(len(ts), np.nan)
    update = state.update
    for i, (t, p) in enumerate(zip(ts.tolist(), price.tolist(), strict=True)):
        v = update(t, p)
        if v is not None:
            out[i] = v
    # Several ticks at one time: each shows the estimate after the time's last tick (the
    # engine assesses once per step, after all of them).
    if len(ts) > 1:
        same_next = np.flatnonzero(ts[:-1] == ts[1:])
        for i in same_next[::-1].tolist():
            out[i] = out[i + 1]
    return out


@dataclass(frozen=True, slots=True)
class MarketDefaults:
    """Market fields a feed may never give (DESIGN §1 defaults; spread: configurable).

    `spot_spread_bps` None: no default, positions wait until the feed gives a spread.
    """

    spot_spread_bps: float | None = 2.0
    perp_funding_rate: float = 0.0
    bid_depth_usd: float = 1_000_000.0
    ask_depth_usd: float = 1_000_000.0


__all__ = [
    "DAY_MS",
    "MARKET_INPUTS",
    "MarketDefaults",
    "VolEstimator",
    "VolState",
    "estimate_series",
]
