"""A sidecar state whose book stage runs (docs/design.md D17), with hand-made `risk-book`
records: what `StreamProcessor` answers when every instance reads the whole book.

BTC: two positions, +50 and −40 BTC at $44,000, each advised HEDGE_PARTIAL (h = 0.5) on
its own; spread 3 bps, funding 0.
- each hedged alone: sell 50 × 0.5 = 25, buy 40 × 0.5 = 20: 45 BTC traded,
  45 × 44,000 × 3/10⁴ = $594 of spread;
- the net (+10 BTC) assessed HEDGE_PARTIAL: one spot sell of 10 × 0.5 = 5 BTC,
  5 × 44,000 × 3/10⁴ = $66;
- saving_usd = 594 − 66 = $528.
ETH: one long of 100 at $2,000 advised HOLD, its net HOLD (no hedge): saving 0.
SOL: two positions, no tick yet: no advice, no saving.
"""

from __future__ import annotations

from typing import Any

from stream_risk.book.figures import moves_of
from stream_risk.book.view import BookView
from stream_risk.state import SidecarState

T0 = 1_700_000_000_000


def _record(asset: str, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schema_version": 1,
        "asset": asset,
        "event_ts": T0,
        "assessed_at": T0 + 5,
        "tick_ts": T0,
        "price": None,
        "positions": 0,
        "long": 0,
        "short": 0,
        "net_size": 0.0,
        "gross_size": 0.0,
        "hedged_size": 0.0,
        "entry_price": None,
        "age_minutes": 0.0,
        "net_notional_usd": None,
        "gross_notional_usd": None,
        "unrealized_pnl": None,
        "advice": None,
        "per_position_hedges": None,
        "netted_hedge": None,
        "saving_usd": None,
        "netting_saving_usd": None,
        "breaches": [],
    }
    rec.update(fields)
    return rec


def _advice(action: str, hedge_pct: float, score: float, hedge: Any) -> dict[str, Any]:
    return {
        "action": action,
        "hedge_pct": hedge_pct,
        "risk_score": score,
        "suggested_hedge": hedge,
        "reason_code": "SCORE_BAND",
    }


BTC_NET_HEDGE = {
    "instrument": "spot_sell",
    "size": 5.0,
    "spread_cost_usd": 66.0,
    "funding_cost_1d_usd": 0.0,
    "total_cost_usd": 66.0,
    "total_cost_bps": 3.0,
}

RECORDS: dict[str, dict[str, Any]] = {
    "BTC": _record(
        "BTC",
        price=44_000.0,
        positions=2,
        long=1,
        short=1,
        net_size=10.0,
        gross_size=90.0,
        hedged_size=5.0,  # Σ q·h = 50 × 0.5 − 40 × 0.5
        entry_price=44_500.0,
        net_notional_usd=440_000.0,
        gross_notional_usd=3_960_000.0,
        advice=_advice("HEDGE_PARTIAL", 0.5, 55.5, BTC_NET_HEDGE),
        per_position_hedges={
            "sell_size": 25.0,
            "buy_size": 20.0,
            "traded_size": 45.0,
            "traded_notional_usd": 1_980_000.0,
            "spread_cost_usd": 594.0,
            "funding_cost_1d_usd": 0.0,
            "total_cost_usd": 594.0,
        },
        saving_usd=528.0,
    ),
    "ETH": _record(
        "ETH",
        price=2_000.0,
        positions=1,
        long=1,
        net_size=100.0,
        gross_size=100.0,
        entry_price=1_990.0,
        net_notional_usd=200_000.0,
        gross_notional_usd=200_000.0,
        advice=_advice("HOLD", 0.0, 12.0, None),
        saving_usd=0.0,
    ),
    "SOL": _record("SOL", positions=2, long=1, short=1, net_size=1.0, gross_size=3.0),
}


class WholeBook(SidecarState):
    """The whole book, as every instance shows it when the book stage runs."""

    def __init__(self, records: dict[str, dict[str, Any]] | None = None) -> None:
        self.view = BookView()
        for asset, rec in (RECORDS if records is None else records).items():
            self.view.apply(asset, rec)

    def is_ready(self) -> tuple[bool, list[str]]:
        return True, []

    def count(self, asset: str | None = None) -> int:
        return 1  # this instance holds one of the book's positions

    def exposure_view(self) -> dict[str, Any]:
        view = self.view.exposure(lambda a: None, {}, moves_of(0.02, 0.05))
        view["scope"] = "book"
        view["alerts_active"] = []
        view["alerts_recent"] = []
        return view

    def book_records(self) -> dict[str, dict[str, Any]]:
        return dict(self.view.records)
