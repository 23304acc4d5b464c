"""What replay's fast path calls (replay/fastpath.py): a market set as after a run of
ticks (`apply_market`) and the tick assessments that published nothing (`assess_quietly`)."""

from __future__ import annotations

from stream_risk.assessor import assess
from stream_risk.engine.base import EngineParts
from stream_risk.engine.market import MarketState, PriceHistory


class ReplayMixin(EngineParts):
    def apply_market(
        self,
        asset: str,
        ts: int,
        current_price: float,
        volatility_1d: float | None,
        spot_spread_bps: float,
        perp_funding_rate: float,
        bid_depth_usd: float,
        ask_depth_usd: float,
        given: int,
        history: PriceHistory | None = None,
        duplicates: int = 0,
    ) -> None:
        """Set `asset`'s market as after a run of its ticks not stepped through one by one
        (replay's fast path: their assessments published nothing, see `assess_quietly`):
        the values as of the last (`MarketState.set_as_of`; `given`: the MARKET_INPUTS
        bits the feed had given by then; `history` feeds the vol estimate). `duplicates`:
        how many of those ticks were duplicate deliveries (counted as `step` counts them)."""
        market = self.table.markets.get(asset)
        if market is None:
            cfg = self.config
            market = self.table.markets[asset] = MarketState(asset, cfg.market_defaults, cfg.vol)
        market.set_as_of(
            ts,
            current_price,
            volatility_1d,
            spot_spread_bps,
            perp_funding_rate,
            bid_depth_usd,
            ask_depth_usd,
            given,
            history,
        )
        self.stats.duplicate_ticks += duplicates

    def assess_quietly(self, position_id: str, event_ts: int, n: int = 1) -> int:
        """Count `n` tick assessments of a position that published nothing (replay's fast
        path skips them; `step` would have suppressed them), the last as of `event_ts` on
        its asset's market as it now is; returns the due time of the re-evaluation that one
        sets. Not scheduled: the caller schedules (`schedule`) in the order of the ticks."""
        pos = self.table.positions[position_id]
        market = self.table.markets[pos.asset]
        vol, spread = market.volatility_1d, market.spot_spread_bps
        assert vol is not None and spread is not None  # a quiet tick is of a complete market
        re_eval = assess(
            pos.size,
            pos.entry_price,
            pos.age_minutes(event_ts),
            pos.unrealized_pnl,
            market.current_price,
            vol,
            spread,
            market.perp_funding_rate,
            market.bid_depth_usd,
            market.ask_depth_usd,
            pos.config or self.config.risk,
            pos.asset,
        ).re_evaluate_minutes
        stats = self.stats
        stats.assessments += n
        stats.suppressed += n
        return event_ts + re_eval * 60_000
