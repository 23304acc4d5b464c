"""The net position of an asset across the whole book, its advice, and what netting saves
(DESIGN §13, docs/design.md D17). One rule, used by the live aggregation stage and replay.

The net position of a set of positions of one asset (sums in a `Partial`):
- size Q = Σ q; entry = Σ |q|·e / Σ |q| (the open positions' size-weighted entry);
  age = Σ |q|·age / Σ |q| (size-weighted: notional-weighted at the asset's one price);
  unrealised P&L = Σ q·(price − e) (each position's own, summed);
- assessed with the model (`assessor.assess`, DESIGN §1) on the asset's market and its
  effective config (defaults < global < asset:), with no hysteresis (it is stateless);
- its hedge: the model's suggested hedge of Q (null when the advice is HOLD or flat).

"Each position hedged on its own" (`per_position_hedges`): every position hedged at the
fraction h of its latest action, on the asset's market now: the longs' hedges sell
L = Σ_long q·h, the shorts' buy S = Σ_short |q|·h; spread cost = (L + S)·price·spread/10⁴;
1-day funding (a long's hedge is short: it receives positive funding) = (S − L)·price·f/365,
charged as max(0, −L·price·f/365) + max(0, S·price·f/365) (each position's hedge charges
its own, DESIGN §1). The instruments follow §1 per side.

- `saving_usd` = that total cost − the net hedge's total cost: what following the net
  advice saves against hedging every position on its own;
- `netted_hedge`: the same per-position hedges netted into one trade of L − S (sell when
  positive) — the same exposure after the hedge as hedging each position, for one spread;
  `netting_saving_usd` = per-position total − its total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream_risk.assessor import Assessment, assess, hedge_at
from stream_risk.book.partial import Partial
from stream_risk.config import RiskConfig

#: The risk-book record's schema version.
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class MarketInputs:
    """The market fields the model reads (an engine's `MarketState` when complete)."""

    ts: int
    current_price: float
    volatility_1d: float
    spot_spread_bps: float
    perp_funding_rate: float = 0.0
    bid_depth_usd: float = 1_000_000.0
    ask_depth_usd: float = 1_000_000.0


def per_position_hedges(
    t: Partial, price: float, spread_bps: float, funding: float, cfg: RiskConfig
) -> dict[str, Any]:
    """What hedging each position on its own at its latest action's fraction costs now."""
    sell, buy = t.long_hedged, t.short_hedged
    traded = sell + buy
    spread_cost = traded * price * (spread_bps / 10_000)
    long_funding = -sell * price * (funding / cfg.days_per_year)  # received when funding > 0
    short_funding = buy * price * (funding / cfg.days_per_year)
    total = spread_cost + max(0.0, long_funding) + max(0.0, short_funding)
    return {
        "sell_size": sell,
        "buy_size": buy,
        "traded_size": traded,
        "traded_notional_usd": traded * price,
        "spread_cost_usd": spread_cost,
        "funding_cost_1d_usd": long_funding + short_funding,
        "total_cost_usd": total,
    }


#: A net within this fraction of the gross size is flat: the running sums of positions that
#: came and went leave float residue (+40 + 7.3 − 7.3 − 40 = −2.7e-15), which the model
#: would assess as a tiny position (HEDGE_PARTIAL of 1e-15 BTC), flapping with its sign.
FLAT_TOLERANCE = 1e-9


def _netted(size: float, gross: float) -> float:
    """`size`, or 0.0 when it is float residue of a netted-out sum (|size| ≤ 1e-9 × gross)."""
    return 0.0 if abs(size) <= FLAT_TOLERANCE * gross else size


def _hedge_dict(size: float, price: float, m: MarketInputs, h: float, cfg: RiskConfig) -> Any:
    if size == 0 or h <= 0:
        return None
    return hedge_at(size, price, m.spot_spread_bps, m.perp_funding_rate, h, cfg).to_dict()


@dataclass(frozen=True, slots=True)
class NetBook:
    """An asset's net position, assessed (`assessment` None when it has no price yet)."""

    asset: str
    totals: Partial
    market: MarketInputs | None
    assessment: Assessment | None
    at_ms: int

    @classmethod
    def of(
        cls,
        asset: str,
        totals: Partial,
        market: MarketInputs | None,
        cfg: RiskConfig,
        at_ms: int,
    ) -> NetBook:
        a = None
        if market is not None and not totals.empty:
            price = market.current_price
            a = assess(
                _netted(totals.net_size, totals.gross_size),
                totals.vwap_entry,
                totals.age_minutes(at_ms),
                totals.unrealized_pnl(price),
                price,
                market.volatility_1d,
                market.spot_spread_bps,
                market.perp_funding_rate,
                market.bid_depth_usd,
                market.ask_depth_usd,
                cfg,
                asset,
            )
        return cls(asset, totals, market, a, at_ms)

    def record(
        self, cfg: RiskConfig, breaches: list[dict[str, Any]], assessed_at: int
    ) -> dict[str, Any]:
        """The `risk-book` value of this asset (schemas/risk-book.schema.json)."""
        return net_record(self, cfg, breaches, assessed_at)


def net_record(
    nb: NetBook, cfg: RiskConfig, breaches: list[dict[str, Any]], assessed_at: int
) -> dict[str, Any]:
    t, m, a = nb.totals, nb.market, nb.assessment
    price = m.current_price if m is not None else None
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "asset": nb.asset,
        "event_ts": nb.at_ms,
        "assessed_at": assessed_at,
        "tick_ts": m.ts if m is not None else None,
        "price": price,
        "positions": t.positions,
        "long": t.longs,
        "short": t.shorts,
        "net_size": t.net_size,
        "gross_size": t.gross_size,
        "hedged_size": t.hedged_size,
        "entry_price": t.vwap_entry,
        "age_minutes": t.age_minutes(nb.at_ms),
        "net_notional_usd": None,
        "gross_notional_usd": None,
        "unrealized_pnl": None,
        "advice": None,
        "per_position_hedges": None,
        "netted_hedge": None,
        "saving_usd": None,
        "netting_saving_usd": None,
        "breaches": breaches,
    }
    if m is None or price is None:
        return rec
    rec["net_notional_usd"] = t.net_size * price
    rec["gross_notional_usd"] = t.gross_size * price
    rec["unrealized_pnl"] = t.unrealized_pnl(price)
    each = per_position_hedges(t, price, m.spot_spread_bps, m.perp_funding_rate, cfg)
    netted = _hedge_dict(_netted(t.long_hedged - t.short_hedged, t.gross_size), price, m, 1.0, cfg)
    rec["per_position_hedges"] = each
    rec["netted_hedge"] = netted
    rec["netting_saving_usd"] = each["total_cost_usd"] - (
        netted["total_cost_usd"] if netted else 0.0
    )
    if a is not None:
        advice = a.to_dict()
        hedge = advice["suggested_hedge"]
        rec["advice"] = advice
        rec["saving_usd"] = each["total_cost_usd"] - (hedge["total_cost_usd"] if hedge else 0.0)
    return rec
