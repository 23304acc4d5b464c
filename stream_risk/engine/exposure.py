"""Exposure and limits, from the table's running sums per asset (O(assets)): net and
gross notional at the latest price, P&L under the four moves, the notional limits in force
and their breaches; and which assets wait for market data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from stream_risk.book.figures import Moves, all_breaches, asset_figures, book_figures, moves_of
from stream_risk.book.net import MarketInputs
from stream_risk.book.partial import Partial, total
from stream_risk.config import (
    SCOPE_ASSET,
    SCOPE_GLOBAL,
    RiskConfig,
)
from stream_risk.engine.base import LIMIT_FIELDS, EngineParts
from stream_risk.engine.views import waiting_detail as _waiting_detail


class ExposureMixin(EngineParts):
    def waiting(self) -> dict[str, dict[str, Any]]:
        """Assets whose positions cannot be assessed yet: per asset, how many positions
        wait and what for (`MarketState.waiting`). O(assets)."""
        out: dict[str, dict[str, Any]] = {}
        markets = self.table.markets
        for asset, pids in self.table.by_asset.items():
            detail = _waiting_detail(asset, markets.get(asset))
            if detail is not None:
                out[asset] = {"positions": len(pids), **detail}
        return out

    def exposure(self) -> dict[str, dict[str, float]]:
        """Net and gross notional per asset at the latest price (assets with a price):
        `book_exposure`'s figures (the one rule, `_asset_exposure`), without the rest."""
        moves = self._moves()
        out: dict[str, dict[str, float]] = {}
        for asset, pids in self.table.by_asset.items():
            e = self._asset_exposure(asset, len(pids), moves)
            if e["price"] is not None:
                out[asset] = {
                    "net_notional_usd": e["net_notional_usd"],
                    "gross_notional_usd": e["gross_notional_usd"],
                }
        return out

    def limits(self) -> dict[str, dict[str, float]]:
        """Notional limits in force: `book` (from `global`, else the engine's config) and
        per asset (from `asset:<ASSET>` scopes only: a book limit is not an asset's)."""
        out: dict[str, dict[str, float]] = {}
        book: dict[str, float] = {}
        base = self.config.risk
        glob = self.scopes.get(SCOPE_GLOBAL, ({}, -1))[0]
        for name in LIMIT_FIELDS:
            v = glob.get(name, getattr(base, name))
            if v is not None:
                book[name] = float(v)
        if book:
            out["book"] = book
        for scope, (fields, _) in self.scopes.items():
            if scope.startswith(SCOPE_ASSET):
                lim = {n: float(fields[n]) for n in LIMIT_FIELDS if fields.get(n) is not None}
                if lim:
                    out[scope] = lim
        return out

    # ------------------------------------------------------------------ the book (D17)
    def drain_partials(self) -> list[tuple[str, int, Partial | None]]:
        """What the positions partitions held here contribute to each asset's book, for
        the (asset, partition) keys changed since the last call (None: nothing left
        there, a tombstone). Needs `EngineConfig.book_partials`."""
        return [
            (a, p, None if s is None else Partial.of(s)) for a, p, s in self.table.drain_parts()
        ]

    def set_book_partials(self, on: bool) -> None:
        """Keep the contributions (`drain_partials`) or not: `EngineConfig.book_partials`,
        decided by the shell once it knows the book's topics exist. Before any position."""
        if self.table.positions:
            raise RuntimeError("set_book_partials before the first position")
        self.table.parts = {} if on else None
        self.table.dirty_parts.clear()

    def asset_totals(self, asset: str) -> Partial:
        """The sums of `book.partial.FIELDS` over the positions of `asset` held here (all
        their partitions; replay's are all -1). Needs `EngineConfig.book_partials`."""
        parts = self.table.parts
        if parts is None:
            raise RuntimeError("asset_totals needs EngineConfig(book_partials=True)")
        return total(Partial.of(s) for (a, _), s in parts.items() if a == asset)

    def book_market(self, asset: str) -> MarketInputs | None:
        """The asset's market as the model reads it (None until it is complete)."""
        m = self.table.markets.get(asset)
        if m is None or not m.complete:
            return None
        vol, spread = m.volatility_1d, m.spot_spread_bps
        assert vol is not None and spread is not None
        return MarketInputs(
            m.ts,
            m.current_price,
            vol,
            spread,
            m.perp_funding_rate,
            m.bid_depth_usd,
            m.ask_depth_usd,
        )

    def price(self, asset: str) -> float | None:
        """The asset's latest price (None before its first tick)."""
        m = self.table.markets.get(asset)
        return m.current_price if m is not None and m.ts >= 0 else None

    def asset_config(self, asset: str) -> RiskConfig:
        """The asset's effective config: defaults < global < asset:<ASSET> (what its net
        position is assessed with)."""
        try:
            cfg, _ = self._effective("", asset, {}, self.scopes)
        except ValidationError:
            cfg = None
        return cfg or self.config.risk

    def asset_limits(self, asset: str) -> dict[str, float]:
        """The notional limits of `asset:<ASSET>` (a book limit is not an asset's)."""
        return self.limits().get(SCOPE_ASSET + asset, {})

    def book_limits(self) -> dict[str, float]:
        return self.limits().get("book", {})

    def moves(self) -> Moves:
        return self._moves()

    def book_exposure(self) -> dict[str, Any]:
        """Net / gross notional and P&L under the four moves, per asset and for the book,
        of the positions this instance holds, at the latest price of each asset; with the
        limits in force and their breaches (the figures' rules: `book.figures`).

        P&L at move m of a set of positions = Σ size × price × m = net notional × m;
        hedged (each position hedged at the fraction h its latest action advises, the
        model's `hedged_*` rule, §1): Σ size × (1 − h) × price × m. Positions whose
        market has no price yet count in `positions`, `long` and `short` only.
        """
        moves = self._moves()
        assets = {
            asset: self._asset_exposure(asset, len(pids), moves)
            for asset, pids in self.table.by_asset.items()
        }
        book = book_figures(assets, moves)
        limits = self.limits()
        return {
            "assets": assets,
            "book": book,
            "limits": limits,
            "breaches": all_breaches(assets, book, limits),
        }

    def asset_exposure(self, assets: Iterable[str]) -> dict[str, dict[str, Any]]:
        """`book_exposure()["assets"]` for these assets only (those of the table among
        them): O(len(assets)), e.g. the assets of a page of `GET /positions`."""
        moves = self._moves()
        by_asset = self.table.by_asset
        return {
            a: self._asset_exposure(a, len(by_asset[a]), moves) for a in assets if a in by_asset
        }

    def _moves(self) -> Moves:
        """(P&L key, hedged P&L key, move) of the four moves."""
        cfg = self.config.risk
        return moves_of(cfg.small_move, cfg.large_move)

    def _asset_exposure(self, asset: str, n: int, moves: Moves) -> dict[str, Any]:
        market = self.table.markets.get(asset)
        priced = market is not None and market.ts >= 0
        # Σ size × price = price × Σ size (the table keeps the sums per asset).
        net_size, gross_size, longs, shorts, hedged_size = self.table.sizes.get(asset, _NONE)
        return asset_figures(
            n,
            int(longs),
            int(shorts),
            net_size,
            gross_size,
            hedged_size,
            market.current_price if market is not None and priced else None,
            moves,
        )


_NONE = (0.0, 0.0, 0.0, 0.0, 0.0)
