"""The exposure figures of a set of positions of one asset, and the limit rule: one home,
used by an instance's own view (`Engine.book_exposure`), the whole book's broadcast view
(`BookView`) and the aggregation stage (`BookAggregator`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: (P&L key, hedged P&L key, move) of the four moves.
Moves = tuple[tuple[str, str, float], ...]

#: What the book sums over its assets.
SUMMED = (
    "positions",
    "long",
    "short",
    "net_notional_usd",
    "gross_notional_usd",
    "hedged_notional_usd",
)


def moves_of(small_move: float, large_move: float) -> Moves:
    return (
        ("pnl_down_5pct", "hedged_pnl_down_5pct", -large_move),
        ("pnl_down_2pct", "hedged_pnl_down_2pct", -small_move),
        ("pnl_up_2pct", "hedged_pnl_up_2pct", small_move),
        ("pnl_up_5pct", "hedged_pnl_up_5pct", large_move),
    )


def asset_figures(
    positions: int,
    longs: int,
    shorts: int,
    net_size: float,
    gross_size: float,
    hedged_size: float,
    price: float | None,
    moves: Moves,
) -> dict[str, Any]:
    """Net / gross / hedged notional at `price` and the P&L under the moves, unhedged
    (net × m) and with each position hedged at its latest action's fraction h
    ((Σ q − Σ q·h) × price × m, the model's `hedged_*` rule, §1). Without a price the
    sizes count as 0 (positions, long and short still count)."""
    if price is None:
        net_size = gross_size = hedged_size = 0.0
    p = price if price is not None else 0.0
    net = net_size * p
    hedged = (net_size - hedged_size) * p
    e: dict[str, Any] = {
        "positions": positions,
        "long": longs,
        "short": shorts,
        "price": price,
        "net_notional_usd": net,
        "gross_notional_usd": gross_size * p,
        "hedged_notional_usd": hedged_size * p,
    }
    for name, hedged_name, m in moves:
        e[name] = net * m
        e[hedged_name] = hedged * m
    return e


def book_figures(assets: Mapping[str, Mapping[str, Any]], moves: Moves) -> dict[str, Any]:
    """The book: the assets' figures summed, and its P&L under the moves."""
    book: dict[str, Any] = dict.fromkeys(SUMMED, 0)
    for e in assets.values():
        for k in SUMMED:
            book[k] += e[k]
    net = book["net_notional_usd"]
    hedged = net - book["hedged_notional_usd"]
    for name, hedged_name, m in moves:
        book[name] = net * m
        book[hedged_name] = hedged * m
    return book


def breaches(figures: Mapping[str, Any], limits: Mapping[str, float]) -> list[dict[str, Any]]:
    """The notional limits `figures` break (|net| against `max_net_notional_usd`, gross
    against `max_gross_notional_usd`): the one rule, for an asset and for the book."""
    out = []
    for name, value in (
        ("max_net_notional_usd", abs(figures["net_notional_usd"])),
        ("max_gross_notional_usd", figures["gross_notional_usd"]),
    ):
        limit = limits.get(name)
        if limit is not None and value > limit:
            out.append({"limit": name, "limit_usd": float(limit), "value_usd": value})
    return out


def all_breaches(
    assets: Mapping[str, Mapping[str, Any]],
    book: Mapping[str, Any],
    limits: Mapping[str, Mapping[str, float]],
) -> list[dict[str, Any]]:
    """Every breach of the limits in force (`limits`: "book" and "asset:<A>" scopes)."""
    out: list[dict[str, Any]] = []
    for scope, lim in limits.items():
        x = book if scope == "book" else assets.get(scope[len("asset:") :])
        if x is None:
            continue
        out.extend({"scope": scope, **b} for b in breaches(x, lim))
    return out
