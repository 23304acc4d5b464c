"""What the sidecar asks of the process it runs beside (DESIGN §5).

The sidecar never reaches into the engine: it asks a `SidecarState` whether the process is
ready and, for `GET /positions`, what the current table holds. The engine subclasses
`SidecarState`; `stream-risk serve` (no broker) uses `StatelessState`.

`GET /positions` contract (a page: docs/design.md D14), the same in both modes so a
dashboard needs no special case::

    200 {"mode": "engine" | "stateless", "count": rows in this page, "positions": [...],
         "next_cursor": str | null, "filter": {...}, "limit": N, "scanned": N,
         "partial": bool, "total": N, "exposure": {asset: {...}}}

In stateless mode there is no table, so the answer is 200 with an empty list and
`"mode": "stateless"` (not a 404): a dashboard pointed at a serve-only sidecar sees an
empty book and, from `mode`, why.

Reads are per request on the event loop: a state with a big table implements
`positions_page`, `position` and `count` in bounded work (the engine's do: O(log n) seek, a
scan budget, only a page's rows formatted) and `exposure_view` from running sums; the
defaults derive them from `positions()`, O(table), for small states and test doubles.

One book across instances (docs/design.md D17): `exposure_view()` says in `scope` whether
it is the whole book (`"book"`, the book stage runs) or this instance's positions only
(`"instance"`); `book_records()` answers `GET /book` (None: the stage is off).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Any, ClassVar

from stream_risk.engine.core import Engine
from stream_risk.engine.views import PositionQuery, PositionsPage, page_of_rows


class SidecarState(ABC):
    """The sidecar's view of its process. Subclass it; only `is_ready` is required.

    Every method is called on the event loop, per request: keep them cheap and never block.
    """

    #: Reported by `GET /positions` (and `GET /readyz`): "engine" or "stateless".
    mode: ClassVar[str] = "engine"

    @abstractmethod
    def is_ready(self) -> tuple[bool, list[str]]:
        """(ready, reasons it is not). `GET /readyz` answers 200 when ready, else 503.

        Reasons are short sentences an operator reads, e.g. "positions partition 3 still
        rebuilding" or "broker unreachable: localhost:9092". Empty when ready.
        """

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        """The whole current table, one JSON-ready dict per position with its latest action;
        only positions in `asset` when given. O(table): the sidecar's reads use
        `positions_page`. The default has no table: an empty list."""
        return []

    def positions_page(self, query: PositionQuery) -> PositionsPage:
        """`GET /positions`: one page of the table in position-id order (`PositionQuery`:
        asset case-insensitive, action, score bounds, `after` cursor, limit, scan budget).
        Default: paged over `positions()`."""
        return page_of_rows(self.positions(None), query)

    def position(self, position_id: str) -> dict[str, Any] | None:
        """`GET /positions/{id}`: one row, or None when there is no such position."""
        return next((r for r in self.positions(None) if r.get("position_id") == position_id), None)

    def count(self, asset: str | None = None) -> int:
        """How many positions the table holds (on `asset`, case-insensitive, when given)."""
        if asset is None:
            return len(self.positions(None))
        folded = asset.casefold()
        return sum(1 for r in self.positions(None) if str(r.get("asset")).casefold() == folded)

    def risk_config(self) -> dict[str, Any] | None:
        """`GET /config`: the risk config in force per scope and its history of changes
        (docs/design.md D9). None: this process has no live config (stateless)."""
        return None

    def exposure_view(self) -> dict[str, Any] | None:
        """`GET /exposure`: exposure per asset and for the book, limits and breaches.
        None: the sidecar derives what it can from `positions()` (O(table)).

        `scope` says whose positions it sums (docs/design.md D17): `"book"` when the book
        stage runs (the whole book, whichever instance holds which positions; each asset
        then carries `net_advice` and `saving_usd`, the book `saving_usd`), `"instance"`
        when it is off (only this instance's positions partitions)."""
        return None

    def book_records(self) -> dict[str, dict[str, Any]] | None:
        """`GET /book`: asset -> its latest `risk-book` record (the whole book's net
        position of the asset, its advice and what netting saves: D17). None when the book
        stage is off (its topics `risk-book-partials` and `risk-book` do not exist)."""
        return None

    def asset_exposure(self, assets: Collection[str]) -> dict[str, dict[str, Any]] | None:
        """`exposure_view()["assets"]` of these assets only (those of a page of `GET
        /positions`), without the rest of the book. None: take them from `exposure_view()`."""
        return None


class StatelessState(SidecarState):
    """`stream-risk serve`: no broker, no table. Always ready; `/positions` is empty."""

    mode: ClassVar[str] = "stateless"

    def is_ready(self) -> tuple[bool, list[str]]:
        return True, []


class EngineReads(SidecarState):
    """Every read of a process that holds an `Engine` (`self.engine`): the engine's own
    pages, rows, counts, config and exposure. The Kafka processor and `EngineState` are
    both this; a subclass adds its readiness."""

    engine: Engine

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        return self.engine.snapshot(asset)

    def positions_page(self, query: PositionQuery) -> PositionsPage:
        return self.engine.positions_page(query)

    def position(self, position_id: str) -> dict[str, Any] | None:
        return self.engine.position(position_id)

    def count(self, asset: str | None = None) -> int:
        return self.engine.count(asset)

    def risk_config(self) -> dict[str, Any]:
        return self.engine.config_view()

    def exposure_view(self) -> dict[str, Any]:
        # This engine's own positions: the whole book only through the book stage (D17).
        view = self.engine.book_exposure()
        view["scope"] = "instance"
        return view

    def book_records(self) -> dict[str, dict[str, Any]] | None:
        return None  # an engine alone has no book stage

    def asset_exposure(self, assets: Collection[str]) -> dict[str, dict[str, Any]]:
        return self.engine.asset_exposure(assets)


class EngineState(EngineReads):
    """A sidecar over an in-process `Engine` without Kafka (tests, benchmarks, tools that
    step an engine themselves): always ready; every read is the engine's own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def is_ready(self) -> tuple[bool, list[str]]:
        return True, []
