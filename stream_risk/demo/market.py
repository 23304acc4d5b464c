"""A simulated crypto market for the demo: ticks for `market-ticks` (DESIGN §2).

Deterministic for a seed: the same seed and the same sequence of `step(now_ms, dt_s)` calls
give the same ticks, bit for bit (one `random.Random`, no wall clock inside).

The model, per asset, in *simulated* time (`time_scale` simulated seconds per wall second,
300 by default, so a one-minute demo covers five hours of market):

- A market-wide **regime** (calm, normal, stress), a Markov chain with mean stays of a few
  simulated hours (stress shorter). Crypto stress is correlated: every asset follows it.
- **Volatility**: each asset's base daily vol times the regime's multiplier; the reported
  `volatility_1d` approaches that target smoothly, with a little noise, and spikes after a
  jump (as an EWMA estimate would).
- **Price**: geometric Brownian motion on a shared market factor (beta) plus idiosyncratic
  noise, and Poisson **jumps** (more and larger in stress, skewed down). Log-returns keep
  every price positive.
- **Spread** widens in stress and right after jumps; **depth** (USD within 1 %) thins.
- **Funding** (annualised): mean-reverting toward a regime level (positive when calm, below
  zero in stress) with noise and shocks, so it drifts and changes sign.

A tick always carries `asset`, `ts`, `current_price`, `volatility_1d` and
`spot_spread_bps`; funding and depth only every few ticks (and on the first), as venues
publish them less often: the engine keeps the last value of a missing field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

Regime = Literal["calm", "normal", "stress"]
REGIMES: Final[tuple[Regime, ...]] = ("calm", "normal", "stress")

_DAY_S: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """The calm-market character of one asset."""

    symbol: str
    price: float  # starting price, USD
    daily_vol: float  # base 1-day volatility (decimal) in the normal regime
    spread_bps: float  # base spot spread, bps
    depth_usd: float  # base depth within 1 % of mid, each side, USD
    beta: float = 1.0  # sensitivity to the market factor
    funding: float = 0.08  # long-run annualised funding in the normal regime


#: Roughly where these markets traded in 2025 (prices), with typical volatility, top-of-book
#: spreads and 1 % depth on a large venue. Ordered by size: `--assets N` takes the first N.
ASSETS: Final[tuple[AssetSpec, ...]] = (
    AssetSpec("BTC", 97_000.0, 0.028, 1.0, 30e6, 1.0, 0.08),
    AssetSpec("ETH", 3_400.0, 0.036, 1.5, 14e6, 1.2, 0.09),
    AssetSpec("SOL", 190.0, 0.052, 3.0, 4.5e6, 1.5, 0.12),
    AssetSpec("XRP", 2.30, 0.050, 3.5, 3.5e6, 1.3, 0.07),
    AssetSpec("DOGE", 0.32, 0.060, 4.5, 2.2e6, 1.6, 0.14),
    AssetSpec("AVAX", 38.0, 0.058, 6.0, 1.2e6, 1.5, 0.10),
    AssetSpec("LINK", 22.0, 0.055, 5.5, 1.4e6, 1.4, 0.06),
    AssetSpec("ADA", 0.95, 0.054, 5.0, 1.6e6, 1.3, 0.05),
)


@dataclass(frozen=True, slots=True)
class RegimeSpec:
    vol_mult: float  # target vol = base vol x this
    spread_mult: float
    depth_mult: float
    funding_level: float  # funding mean-reverts toward asset funding x this (+ offset)
    funding_offset: float
    jumps_per_day: float  # Poisson intensity of jumps, per simulated day
    jump_scale: float  # jump log-size sd, in units of the asset's current daily vol
    jump_drift: float  # mean jump log-size, in units of daily vol (negative: crashes)
    mean_stay_min: float  # mean stay in this regime, simulated minutes


REGIME_SPECS: Final[dict[Regime, RegimeSpec]] = {
    "calm": RegimeSpec(0.65, 0.8, 1.25, 0.8, 0.00, 1.0, 0.35, 0.0, 240.0),
    "normal": RegimeSpec(1.0, 1.0, 1.0, 1.0, 0.00, 2.5, 0.45, -0.05, 200.0),
    "stress": RegimeSpec(2.1, 3.2, 0.35, -0.8, -0.10, 10.0, 0.60, -0.25, 90.0),
}

#: Where a regime goes when it ends (weights).
_NEXT: Final[dict[Regime, tuple[tuple[Regime, float], ...]]] = {
    "calm": (("normal", 0.85), ("stress", 0.15)),
    "normal": (("calm", 0.55), ("stress", 0.45)),
    "stress": (("normal", 0.8), ("calm", 0.2)),
}

#: Engine bounds (`MarketTick`): keep every field inside them whatever the random draw.
_MAX_VOL = 0.95
_MAX_SPREAD_BPS = 2_000.0
_MAX_FUNDING = 5.0


@dataclass(slots=True)
class AssetState:
    spec: AssetSpec
    price: float
    vol: float  # the reported volatility_1d
    spread_bps: float
    funding: float
    bid_depth_usd: float
    ask_depth_usd: float
    shock: float = 0.0  # decays after a jump: widens spreads, lifts vol, thins depth
    ticks: int = 0
    last_jump: float = 0.0  # log-size of the latest jump (0 = none yet)
    outage_left_s: float = 0.0  # wall seconds left in a feed outage (no ticks meanwhile)


class MarketSimulator:
    """Several assets under one market regime. Call `step(now_ms, dt_s)` for the next ticks.

    Args:
        assets: the assets (specs, or the first N of `ASSETS` when an int).
        seed: the random seed (None: a fresh one, not reproducible).
        time_scale: simulated seconds per wall second.
        tick_probability: chance that an asset ticks in a step (venues tick irregularly).
        funding_every: funding is sent on roughly one tick in this many (and the first).
        depth_every: depth is sent on roughly one tick in this many (and the first).
        regime: the starting regime.
        outages_per_min: per asset, how often its feed goes quiet (wall time; 0 = never).
        outage_s: (min, max) wall seconds an outage lasts. Prices move on meanwhile: the
            first tick after it jumps to where the market went.
    """

    def __init__(
        self,
        assets: int | Sequence[AssetSpec] = 5,
        *,
        seed: int | None = None,
        time_scale: float = 300.0,
        tick_probability: float = 0.85,
        funding_every: int = 8,
        depth_every: int = 4,
        regime: Regime = "normal",
        outages_per_min: float = 0.0,
        outage_s: tuple[float, float] = (6.0, 15.0),
    ) -> None:
        if isinstance(assets, int):
            if not 1 <= assets <= len(ASSETS):
                raise ValueError(f"assets must be 1..{len(ASSETS)}, got {assets}")
            specs: tuple[AssetSpec, ...] = ASSETS[:assets]
        else:
            specs = tuple(assets)
            if not specs:
                raise ValueError("at least one asset is needed")
        if len({s.symbol for s in specs}) != len(specs):
            raise ValueError("asset symbols must be unique")
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if not 0 < tick_probability <= 1:
            raise ValueError("tick_probability must be in (0, 1]")
        self.rng = random.Random(seed)
        self.time_scale = time_scale
        self.tick_probability = tick_probability
        self.funding_every = max(1, funding_every)
        self.depth_every = max(1, depth_every)
        if outages_per_min < 0 or not 0 <= outage_s[0] <= outage_s[1]:
            raise ValueError("outages_per_min must be >= 0 and outage_s a (min, max) range")
        self.outages_per_min = outages_per_min
        self.outage_s = outage_s
        self.outages = 0
        self.regime: Regime = regime
        self.regime_changes = 0
        self.sim_seconds = 0.0
        self.jumps = 0
        rs = REGIME_SPECS[regime]
        self.assets: dict[str, AssetState] = {}
        for s in specs:
            depth = s.depth_usd * rs.depth_mult
            self.assets[s.symbol] = AssetState(
                spec=s,
                price=s.price * math.exp(self.rng.gauss(0.0, 0.01)),
                vol=s.daily_vol * rs.vol_mult,
                spread_bps=s.spread_bps * rs.spread_mult,
                funding=s.funding * rs.funding_level + rs.funding_offset,
                bid_depth_usd=depth,
                ask_depth_usd=depth,
            )

    # ------------------------------------------------------------------ reading
    @property
    def symbols(self) -> list[str]:
        return list(self.assets)

    def price(self, symbol: str) -> float:
        return self.assets[symbol].price

    # ------------------------------------------------------------------ stepping
    def step(self, now_ms: int, dt_s: float) -> list[dict[str, Any]]:
        """Advance `dt_s` wall seconds; return the ticks of this step (ts = `now_ms`)."""
        if dt_s < 0:
            raise ValueError("dt_s must be >= 0")
        rng = self.rng
        dt_sim = dt_s * self.time_scale
        dt_days = dt_sim / _DAY_S
        self.sim_seconds += dt_sim
        self._maybe_switch_regime(dt_sim)
        rs = REGIME_SPECS[self.regime]
        market_z = rng.gauss(0.0, 1.0)
        # A market-wide jump hits every asset (scaled by beta), as in a liquidation cascade.
        market_jump = 0.0
        if dt_days > 0 and rng.random() < 1.0 - math.exp(-rs.jumps_per_day * 0.4 * dt_days):
            market_jump = rng.gauss(rs.jump_drift, rs.jump_scale)
        ticks: list[dict[str, Any]] = []
        for a in self.assets.values():
            s = a.spec
            decay = math.exp(-dt_sim / 1_800.0)  # a jump's after-shock halves in ~20 sim min
            a.shock *= decay
            # Volatility: toward the regime's target (time constant ~30 sim min), plus noise.
            target = s.daily_vol * rs.vol_mult * (1.0 + 0.8 * a.shock)
            pull = 1.0 - math.exp(-dt_sim / 1_800.0)
            a.vol += (target - a.vol) * pull
            a.vol *= math.exp(rng.gauss(0.0, 0.012 * math.sqrt(min(dt_sim, 600.0) / 60.0)))
            a.vol = min(_MAX_VOL, max(0.002, a.vol))
            # Price: shared factor + idiosyncratic part, drift-corrected GBM, plus jumps.
            sigma = a.vol * math.sqrt(dt_days)
            beta_share = min(0.9, 0.6 * s.beta)
            z = beta_share * market_z + math.sqrt(1.0 - beta_share**2) * rng.gauss(0.0, 1.0)
            log_ret = -0.5 * sigma * sigma + sigma * z
            jump = market_jump * s.beta * a.vol
            if dt_days > 0 and rng.random() < 1.0 - math.exp(-rs.jumps_per_day * 0.6 * dt_days):
                jump += rng.gauss(rs.jump_drift, rs.jump_scale) * a.vol
            if jump:
                self.jumps += 1
                a.last_jump = jump
                a.shock = min(2.0, a.shock + abs(jump) / max(a.vol, 1e-6))
                log_ret += jump
            a.price = min(1e11, max(1e-9, a.price * math.exp(log_ret)))
            # Spread: regime x after-shock, noisy around its level.
            spread_level = s.spread_bps * rs.spread_mult * (1.0 + 1.2 * a.shock)
            a.spread_bps = min(
                _MAX_SPREAD_BPS, max(0.1, spread_level * math.exp(rng.gauss(0.0, 0.12)))
            )
            # Depth: thinner in stress and after a jump; bids thin more in a sell-off.
            depth = s.depth_usd * rs.depth_mult / (1.0 + 0.8 * a.shock)
            skew = max(-0.5, min(0.5, 4.0 * a.last_jump * decay))
            a.bid_depth_usd = max(1_000.0, depth * (1.0 + skew) * math.exp(rng.gauss(0.0, 0.1)))
            a.ask_depth_usd = max(1_000.0, depth * (1.0 - skew) * math.exp(rng.gauss(0.0, 0.1)))
            # Funding: Ornstein-Uhlenbeck toward the regime level (6 sim-hour half-life).
            level = s.funding * rs.funding_level + rs.funding_offset + 2.0 * a.last_jump * decay
            kappa = 1.0 - math.exp(-dt_sim / 21_600.0)
            a.funding += (level - a.funding) * kappa
            a.funding += rng.gauss(0.0, 0.12) * math.sqrt(dt_days)
            a.funding = min(_MAX_FUNDING, max(-_MAX_FUNDING, a.funding))

            if self._quiet(a, dt_s):
                continue
            if a.ticks > 0 and rng.random() >= self.tick_probability:
                continue
            ticks.append(self._tick(a, now_ms))
        return ticks

    def in_outage(self, symbol: str) -> bool:
        return self.assets[symbol].outage_left_s > 0

    def _quiet(self, a: AssetState, dt_s: float) -> bool:
        """Whether the asset's feed is down this step (outages start and end here)."""
        if a.outage_left_s > 0:
            a.outage_left_s = max(0.0, a.outage_left_s - dt_s)
            return a.outage_left_s > 0
        if a.ticks == 0 or self.outages_per_min <= 0 or dt_s <= 0:
            return False
        if self.rng.random() < 1.0 - math.exp(-self.outages_per_min * dt_s / 60.0):
            a.outage_left_s = self.rng.uniform(*self.outage_s)
            self.outages += 1
            return True
        return False

    def snapshot_ticks(self, now_ms: int) -> list[dict[str, Any]]:
        """A complete tick (every field) per asset, without advancing: the opening prints."""
        out = []
        for a in self.assets.values():
            a.ticks = 0
            out.append(self._tick(a, now_ms))
        return out

    def _tick(self, a: AssetState, now_ms: int) -> dict[str, Any]:
        tick: dict[str, Any] = {
            "asset": a.spec.symbol,
            "ts": now_ms,
            "current_price": _round_price(a.price),
            "volatility_1d": round(a.vol, 5),
            "spot_spread_bps": round(a.spread_bps, 2),
        }
        first = a.ticks == 0
        rng = self.rng
        if first or rng.random() < 1.0 / self.funding_every:
            tick["perp_funding_rate"] = round(a.funding, 5)
        if first or rng.random() < 1.0 / self.depth_every:
            tick["bid_depth_usd"] = round(a.bid_depth_usd, 0)
            tick["ask_depth_usd"] = round(a.ask_depth_usd, 0)
        a.ticks += 1
        return tick

    def _maybe_switch_regime(self, dt_sim: float) -> None:
        stay = REGIME_SPECS[self.regime].mean_stay_min * 60.0
        if dt_sim <= 0 or self.rng.random() >= 1.0 - math.exp(-dt_sim / stay):
            return
        choices = _NEXT[self.regime]
        r = self.rng.random() * sum(w for _, w in choices)
        for name, w in choices:
            r -= w
            if r <= 0:
                self.regime = name
                break
        else:  # pragma: no cover - float rounding
            self.regime = choices[-1][0]
        self.regime_changes += 1


def _round_price(price: float) -> float:
    """Round to 6 significant digits (as a venue's tick size would), never to zero."""
    if price <= 0:  # pragma: no cover - log-returns keep prices positive
        raise ValueError("price must be positive")
    digits = 5 - math.floor(math.log10(price))
    rounded = round(price, max(0, digits))
    return rounded if rounded > 0 else price


__all__ = [
    "ASSETS",
    "REGIMES",
    "REGIME_SPECS",
    "AssetSpec",
    "AssetState",
    "MarketSimulator",
    "Regime",
    "RegimeSpec",
]
