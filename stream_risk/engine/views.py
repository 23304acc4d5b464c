"""Reads of the table for people and tools: one position's row, and pages of rows.

    positions_page(table, PositionQuery(...)) -> PositionsPage     # via Engine.positions_page
    position_row(table, pos) -> dict                                # one `GET /positions` row

A page is bounded work, whatever the size of the table (docs/design.md D14):

- it seeks its start in the sorted index of position ids (`Table.ids`, or the asset's
  `Table.ids_by_asset`) in O(log n), from the last position id of the previous page;
- it examines at most `budget` candidates: a filter on the action or the score that few
  positions match ends the page early, *partial* (fewer than `limit` rows) with a cursor to
  go on from (like a DynamoDB scan page: an empty page with a cursor is not the end);
- only the rows it returns are formatted (a position's latest action is kept as its inputs
  and its record is made again on demand: `MadeAction.record()`); the filters read the
  action's name and score, which the table keeps as plain attributes.

Order is by position id (string order), so a walk of the pages sees every position that
stays in the table exactly once, in order, even while others are added or removed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedList

from stream_risk.engine.market import MarketState
from stream_risk.engine.table import PositionState, Table

#: Candidates one page may examine (docs/design.md D14): a few milliseconds of the loop.
DEFAULT_BUDGET = 20_000
#: Rows a page may return.
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class PositionQuery:
    """Which positions, from where, how many.

    asset: the asset's name, case-insensitive (`btc` finds BTC).
    action: the latest action's name (`stream_risk.rules.ACTIONS`): positions without an
        action yet (waiting for market data) never match an action or a score filter.
    min_score, max_score: bounds on the latest action's risk score, inclusive.
    after: the page starts after this position id (None: at the start).
    limit: at most this many rows (1..MAX_LIMIT).
    budget: at most this many candidates examined (>= 1).
    """

    asset: str | None = None
    action: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    after: str | None = None
    limit: int = 100
    budget: int = DEFAULT_BUDGET

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}, not {self.limit}")
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, not {self.budget}")


@dataclass(slots=True)
class PositionsPage:
    """One page: `rows` in position-id order; `next_after` the position id to continue
    after (None: nothing is left); `scanned` candidates examined; `partial` when the budget
    ran out before `limit` rows were found."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    next_after: str | None = None
    scanned: int = 0
    partial: bool = False


def waiting_detail(asset: str, market: MarketState | None) -> dict[str, Any] | None:
    """What positions on `asset` wait for, for people (`MarketState.waiting`), or None
    when they can be assessed."""
    if market is None:
        return {
            "missing": ["current_price"],
            "current_price": f"no tick of {asset} on market-ticks yet",
        }
    return market.waiting()


def mark_and_unrealized(
    pos: PositionState, market: MarketState | None
) -> tuple[float | None, float | None]:
    """The position's mark (its asset's latest price, None before the first tick) and its
    unrealised P&L at that mark by the core's rule (`assessor`): the position's own
    `unrealized_pnl` when its message gave one, else size × (mark − entry)."""
    mark = market.current_price if market is not None and market.ts >= 0 else None
    if pos.unrealized_pnl is not None:
        return mark, pos.unrealized_pnl
    if mark is None:
        return None, None
    return mark, pos.size * (mark - pos.entry_price)


def position_row(table: Table, pos: PositionState) -> dict[str, Any]:
    """One `GET /positions` row: the position, its mark price and unrealised P&L, its
    market's tick time, what it waits for, its next re-evaluation and its latest published
    action (made again from its inputs)."""
    market = table.markets.get(pos.asset)
    last = pos.last
    detail = waiting_detail(pos.asset, market)
    mark, unrealized = mark_and_unrealized(pos, market)
    return {
        "position_id": pos.position_id,
        "asset": pos.asset,
        "size": pos.size,
        "entry_price": pos.entry_price,
        "mark_price": mark,
        "unrealized_pnl": unrealized,
        "position_ts": pos.ts,
        "tick_ts": market.ts if market is not None else None,
        "waiting_for": [] if detail is None else detail["missing"],
        "waiting": detail,
        "estimated_inputs": [] if market is None else market.estimated(),
        "next_evaluation_ts": pos.next_due if pos.next_due >= 0 else None,
        "latest_action": None if last is None else last.record(),
    }


def resolve_assets(table: Table, asset: str) -> list[str]:
    """The table's assets named `asset`, case-insensitively (exact name first). O(assets)
    only when the exact name is not an asset of the table."""
    if asset in table.ids_by_asset:
        return [asset]
    folded = asset.casefold()
    return sorted(a for a in table.ids_by_asset if a.casefold() == folded)


def _after(ids: SortedList, after: str | None) -> Iterator[str]:
    if after is None:
        return iter(ids)
    it: Iterator[str] = ids.irange(minimum=after, inclusive=(False, True))
    return it


def _more_after(indexes: list[SortedList], pid: str) -> bool:
    return any(ids.bisect_right(pid) < len(ids) for ids in indexes)


def _matches(pos: PositionState, action: str | None, lo: float | None, hi: float | None) -> bool:
    a = pos.last
    if a is None or (action is not None and a.action != action):
        return False
    return (lo is None or a.risk_score >= lo) and (hi is None or a.risk_score <= hi)


def positions_page(table: Table, q: PositionQuery) -> PositionsPage:
    """The page of `q` (see the module's doc)."""
    if q.asset is None:
        indexes: list[SortedList] = [table.ids]
    else:
        indexes = [table.ids_by_asset[a] for a in resolve_assets(table, q.asset)]
    if not indexes:
        return PositionsPage()
    if len(indexes) == 1:
        candidates = _after(indexes[0], q.after)
    else:  # e.g. both "btc" and "BTC" are assets: one walk in id order across them
        candidates = heapq.merge(*(_after(ids, q.after) for ids in indexes))
    positions = table.positions
    action, lo, hi = q.action, q.min_score, q.max_score
    filtered = action is not None or lo is not None or hi is not None
    page = PositionsPage()
    chosen: list[PositionState] = []
    scanned = 0
    last_pid: str | None = None
    for pid in candidates:
        scanned += 1
        last_pid = pid
        pos = positions[pid]
        if not filtered or _matches(pos, action, lo, hi):
            chosen.append(pos)
        if len(chosen) >= q.limit:
            break
        if scanned >= q.budget:
            page.partial = True
            break
    page.scanned = scanned
    page.rows = [position_row(table, pos) for pos in chosen]
    if last_pid is not None and _more_after(indexes, last_pid):
        page.next_after = last_pid
    else:
        page.partial = False  # the end: nothing was left unexamined
    return page


__all__ = [
    "DEFAULT_BUDGET",
    "MAX_LIMIT",
    "PositionQuery",
    "PositionsPage",
    "mark_and_unrealized",
    "page_of_rows",
    "position_row",
    "positions_page",
    "resolve_assets",
    "waiting_detail",
]


def page_of_rows(rows: list[dict[str, Any]], q: PositionQuery) -> PositionsPage:
    """The page of `q` over rows already made (`GET /positions` rows), for a state that has
    no table of its own (a test double, a small process): the same order, filters, budget
    and cursor as `positions_page`, O(rows)."""
    asset = None if q.asset is None else q.asset.casefold()
    pool = sorted(
        (r for r in rows if asset is None or str(r.get("asset", "")).casefold() == asset),
        key=lambda r: str(r["position_id"]),
    )
    if q.after is not None:
        pool = [r for r in pool if str(r["position_id"]) > q.after]
    filtered = q.action is not None or q.min_score is not None or q.max_score is not None
    page = PositionsPage()
    for i, row in enumerate(pool):
        page.scanned += 1
        a = row.get("latest_action")
        if not filtered or (
            isinstance(a, dict)
            and (q.action is None or a.get("action") == q.action)
            and (q.min_score is None or float(a.get("risk_score", 0.0)) >= q.min_score)
            and (q.max_score is None or float(a.get("risk_score", 0.0)) <= q.max_score)
        ):
            page.rows.append(row)
        full = len(page.rows) >= q.limit
        if full or page.scanned >= q.budget:
            if i + 1 < len(pool):
                page.next_after = str(row["position_id"])
                page.partial = not full
            break
    return page
