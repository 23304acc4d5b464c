"""The whole book, as every instance sees it (docs/design.md D17): the latest `risk-book`
record of every asset, read by every instance from the whole topic (a broadcast table, as
the ticks are), priced at the instance's own latest tick of each asset. `GET /exposure`,
the exposure cards and the book metrics come from here when the book stage runs, so
every instance shows the same whole book whichever positions it holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stream_risk.book.figures import Moves, all_breaches, asset_figures, book_figures


class BookView:
    """asset -> its latest `risk-book` record (a tombstone removes it)."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        #: How many records were applied (a change counter for readers).
        self.version = 0
        #: assessed_at of the latest record applied (wall ms), -1 before any.
        self.latest_assessed_at = -1

    def apply(self, asset: str, value: dict[str, Any] | None) -> None:
        self.version += 1
        if value is None:
            self.records.pop(asset, None)
            return
        self.records[asset] = value
        at = value.get("assessed_at")
        if isinstance(at, int) and at > self.latest_assessed_at:
            self.latest_assessed_at = at

    def assets(
        self, price_of: Callable[[str], float | None], moves: Moves
    ) -> dict[str, dict[str, Any]]:
        """Per asset, `asset_figures` of the whole book's positions of it, at the latest
        price this instance has (the record's own when it has none)."""
        out = {}
        for asset, r in self.records.items():
            price = price_of(asset)
            if price is None:
                price = r.get("price")
            out[asset] = asset_figures(
                int(r["positions"]),
                int(r["long"]),
                int(r["short"]),
                float(r["net_size"]),
                float(r["gross_size"]),
                float(r["hedged_size"]),
                price,
                moves,
            )
        return out

    def exposure(
        self,
        price_of: Callable[[str], float | None],
        limits: Mapping[str, Mapping[str, float]],
        moves: Moves,
    ) -> dict[str, Any]:
        """The same shape as `Engine.book_exposure()`, for the whole book; with each
        asset's net advice and saving."""
        assets = self.assets(price_of, moves)
        for asset, e in assets.items():
            r = self.records[asset]
            advice = r.get("advice")
            e["net_advice"] = (
                None
                if advice is None
                else {
                    "action": advice["action"],
                    "hedge_pct": advice["hedge_pct"],
                    "risk_score": advice["risk_score"],
                    "suggested_hedge": advice["suggested_hedge"],
                }
            )
            e["saving_usd"] = r.get("saving_usd")
        book = book_figures(assets, moves)
        book["saving_usd"] = sum(
            float(r["saving_usd"]) for r in self.records.values() if r.get("saving_usd") is not None
        )
        return {
            "assets": assets,
            "book": book,
            "limits": {k: dict(v) for k, v in limits.items()},
            "breaches": all_breaches(assets, book, limits),
        }
