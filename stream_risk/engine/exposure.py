"""Exposure and limits, from the table's running sums per asset (O(assets)): net and
gross notional at the latest price, P&L under the four moves, the notional limits in force
and their breaches; and which assets wait for market data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream_risk.config import (
    SCOPE_ASSET,
    SCOPE_GLOBAL,
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

    def book_exposure(self) -> dict[str, Any]:
        """Net / gross notional and P&L under the four moves, per asset and for the book,
        at the latest price of each asset; with the limits in force and their breaches.

        P&L at move m of a set of positions = Σ size × price × m = net notional × m;
        hedged (each position hedged at the fraction h its latest action advises, the
        model's `hedged_*` rule, §1): Σ size × (1 − h) × price × m. Positions whose
        market has no price yet count in `positions`, `long` and `short` only.
        """
        moves = self._moves()
        assets: dict[str, dict[str, Any]] = {}
        book: dict[str, Any] = dict.fromkeys(_SUMMED, 0)
        for asset, pids in self.table.by_asset.items():
            e = assets[asset] = self._asset_exposure(asset, len(pids), moves)
            for k in _SUMMED:
                book[k] += e[k]
        book_net = book["net_notional_usd"]
        book_hedged = book_net - book["hedged_notional_usd"]
        for name, hedged_name, m in moves:
            book[name] = book_net * m
            book[hedged_name] = book_hedged * m
        limits = self.limits()
        breaches = []
        for scope, lim in limits.items():
            x = book if scope == "book" else assets.get(scope[len(SCOPE_ASSET) :])
            if x is None:
                continue
            for name, value in (
                ("max_net_notional_usd", abs(x["net_notional_usd"])),
                ("max_gross_notional_usd", x["gross_notional_usd"]),
            ):
                limit = lim.get(name)
                if limit is not None and value > limit:
                    breaches.append(
                        {"scope": scope, "limit": name, "limit_usd": limit, "value_usd": value}
                    )
        return {"assets": assets, "book": book, "limits": limits, "breaches": breaches}

    def asset_exposure(self, assets: Iterable[str]) -> dict[str, dict[str, Any]]:
        """`book_exposure()["assets"]` for these assets only (those of the table among
        them): O(len(assets)), e.g. the assets of a page of `GET /positions`."""
        moves = self._moves()
        by_asset = self.table.by_asset
        return {
            a: self._asset_exposure(a, len(by_asset[a]), moves) for a in assets if a in by_asset
        }

    def _moves(self) -> tuple[tuple[str, str, float], ...]:
        """(P&L key, hedged P&L key, move) of the four moves."""
        cfg = self.config.risk
        return (
            ("pnl_down_5pct", "hedged_pnl_down_5pct", -cfg.large_move),
            ("pnl_down_2pct", "hedged_pnl_down_2pct", -cfg.small_move),
            ("pnl_up_2pct", "hedged_pnl_up_2pct", cfg.small_move),
            ("pnl_up_5pct", "hedged_pnl_up_5pct", cfg.large_move),
        )

    def _asset_exposure(
        self, asset: str, n: int, moves: tuple[tuple[str, str, float], ...]
    ) -> dict[str, Any]:
        market = self.table.markets.get(asset)
        priced = market is not None and market.ts >= 0
        price = market.current_price if market is not None and priced else 0.0
        # Σ size × price = price × Σ size (the table keeps the sums per asset).
        net_size, gross_size, longs, shorts, hedged_size = self.table.sizes.get(asset, _NONE)
        if not priced:
            net_size = gross_size = hedged_size = 0.0
        net = net_size * price
        hedged = (net_size - hedged_size) * price  # Σ size × (1 − h) × price
        e: dict[str, Any] = {
            "positions": n,
            "long": int(longs),
            "short": int(shorts),
            "price": price if priced else None,
            "net_notional_usd": net,
            "gross_notional_usd": gross_size * price,
            "hedged_notional_usd": hedged_size * price,
        }
        for name, hedged_name, m in moves:
            e[name] = net * m
            e[hedged_name] = hedged * m
        return e


#: What `book_exposure` sums over the assets for the book.
_SUMMED = (
    "positions",
    "long",
    "short",
    "net_notional_usd",
    "gross_notional_usd",
    "hedged_notional_usd",
)
_NONE = (0.0, 0.0, 0.0, 0.0, 0.0)
