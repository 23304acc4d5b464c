"""Net exposure per asset across the positions of the table (dashboard and `GET /positions`).

    exposure_of(state, rows=None, asset=None) -> {"BTC": {...}, "ETH": {...}, ...}

Per asset:

- `positions`, `long`, `short`: open positions (flat ones count in neither side).
- `net_notional_usd` (+ long / − short), `gross_notional_usd`, `long_notional_usd`,
  `short_notional_usd`. When the state can compute them at the latest tick (a state with an
  `exposure()` method, e.g. the engine's `Engine.exposure()`), net and gross come from it
  and long/short are derived from them ((gross ± net) / 2); otherwise each position counts
  at the price of its latest action (`position_notional_usd`, signed by the size).
- `pnl_down_5pct` .. `pnl_up_5pct`: the book's P&L on that asset under the four moves,
  unhedged; `hedged_pnl_down_5pct` .. `hedged_pnl_up_5pct`: the same if every advised hedge
  were placed (sums of the actions' `pnl_scenarios`).
- `priced_by`: `"tick"` (engine exposure) or `"last_action"` (the fallback).

Positions still waiting for market data have no action: they count in `positions` (and in
the engine's notional once a price is known) but add nothing to the P&L sums.

A state with a table of its own (the engine) gives its exposure per asset without a row
(`SidecarState.exposure_view()`, from the running sums of its table: O(assets));
`state_exposure` then takes it from there (`exposure_from_view`): positions, longs and
shorts, net, gross, long and short notional and the P&L per move, unhedged and hedged at
each position's latest advised fraction, `priced_by: "tick"`; the sidecar never formats
the whole table to answer a read (docs/design.md D14). When that view is the whole book's
(the book stage runs, `scope: "book"`, D17), each asset also carries `net_advice` (action,
hedge_pct, risk_score, suggested_hedge of its net position, or None) and `saving_usd`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final

from stream_risk.state import SidecarState

MOVES: Final = ("down_5pct", "down_2pct", "up_2pct", "up_5pct")

Exposure = dict[str, dict[str, Any]]


def _blank() -> dict[str, Any]:
    out: dict[str, Any] = {
        "positions": 0,
        "long": 0,
        "short": 0,
        "net_notional_usd": 0.0,
        "gross_notional_usd": 0.0,
        "long_notional_usd": 0.0,
        "short_notional_usd": 0.0,
    }
    for m in MOVES:
        out[f"pnl_{m}"] = 0.0
    for m in MOVES:
        out[f"hedged_pnl_{m}"] = 0.0
    out["priced_by"] = "last_action"
    return out


def exposure_from_rows(rows: Iterable[Mapping[str, Any]]) -> Exposure:
    """Exposure per asset from `GET /positions` rows alone (prices of the latest actions)."""
    out: Exposure = {}
    for row in rows:
        asset = row.get("asset")
        if not isinstance(asset, str):
            continue
        e = out.get(asset)
        if e is None:
            e = out[asset] = _blank()
        e["positions"] += 1
        size = float(row.get("size") or 0.0)
        if size > 0:
            e["long"] += 1
        elif size < 0:
            e["short"] += 1
        action = row.get("latest_action")
        if not isinstance(action, Mapping):
            continue
        notional = abs(float(action.get("position_notional_usd") or 0.0))
        if size > 0:
            e["long_notional_usd"] += notional
        elif size < 0:
            e["short_notional_usd"] += notional
        pnl = action.get("pnl_scenarios")
        if isinstance(pnl, Mapping):
            for m in MOVES:
                e[f"pnl_{m}"] += float(pnl.get(f"move_{m}") or 0.0)
                e[f"hedged_pnl_{m}"] += float(pnl.get(f"hedged_{m}") or 0.0)
    for e in out.values():
        e["net_notional_usd"] = e["long_notional_usd"] - e["short_notional_usd"]
        e["gross_notional_usd"] = e["long_notional_usd"] + e["short_notional_usd"]
    return out


def exposure_of(
    state: SidecarState,
    rows: list[dict[str, Any]] | None = None,
    asset: str | None = None,
) -> Exposure:
    """Exposure per asset of `state`'s table (`rows` = `state.positions(asset)` if given)."""
    if rows is None:
        rows = state.positions(asset)
    out = exposure_from_rows(rows)
    engine_exposure: Callable[[], Mapping[str, Mapping[str, float]]] | None = getattr(
        state, "exposure", None
    )
    if not callable(engine_exposure):
        return out
    live = engine_exposure()
    for name, e in out.items():
        x = live.get(name)
        if x is None:
            continue
        net = float(x.get("net_notional_usd", e["net_notional_usd"]))
        gross = float(x.get("gross_notional_usd", e["gross_notional_usd"]))
        e["net_notional_usd"] = net
        e["gross_notional_usd"] = gross
        e["long_notional_usd"] = max(0.0, (gross + net) / 2)
        e["short_notional_usd"] = max(0.0, (gross - net) / 2)
        e["priced_by"] = "tick"
    return out


def exposure_from_view(view: Mapping[str, Any], only: Collection[str] | None = None) -> Exposure:
    """Exposure per asset from `exposure_view()` (`Engine.book_exposure()`), no rows; only
    the assets in `only` when given."""
    out: Exposure = {}
    assets = view.get("assets")
    if not isinstance(assets, Mapping):
        return out
    for name, x in assets.items():
        if only is not None and name not in only:
            continue
        net = float(x.get("net_notional_usd") or 0.0)
        gross = float(x.get("gross_notional_usd") or 0.0)
        e: dict[str, Any] = {
            "positions": int(x.get("positions") or 0),
            "price": x.get("price"),
            "net_notional_usd": net,
            "gross_notional_usd": gross,
            "long_notional_usd": max(0.0, (gross + net) / 2),
            "short_notional_usd": max(0.0, (gross - net) / 2),
        }
        for key in ("long", "short"):
            if key in x:
                e[key] = int(x[key])
        for m in MOVES:
            e[f"pnl_{m}"] = float(x.get(f"pnl_{m}") or 0.0)
        for m in MOVES:
            if f"hedged_pnl_{m}" in x:
                e[f"hedged_pnl_{m}"] = float(x[f"hedged_pnl_{m}"])
        e["priced_by"] = "tick" if x.get("price") is not None else "none"
        # The whole book's view (the book stage, D17): the net position's advice and what
        # following it saves against hedging each position alone (None: no price yet).
        for key in ("net_advice", "saving_usd"):
            if key in x:
                e[key] = x[key]
        out[str(name)] = e
    return out


def state_exposure(
    state: SidecarState, asset: str | None = None, only: Collection[str] | None = None
) -> Exposure:
    """Exposure per asset of `state`: from its `exposure_view()` when it has one (no row
    built), else from its rows. `asset`: only that asset's (case-insensitive); `only`: only
    these assets (exact names, e.g. those of a page's rows)."""
    some = None if only is None else state.asset_exposure(only)
    if some is not None:
        out = exposure_from_view({"assets": some})
    elif (view := state.exposure_view()) is not None:
        out = exposure_from_view(view, only)
    else:
        out = exposure_of(state, state.positions(None))
        if only is not None:
            out = {name: e for name, e in out.items() if name in only}
    if asset is None:
        return out
    folded = asset.casefold()
    return {name: e for name, e in out.items() if name.casefold() == folded}


__all__ = [
    "MOVES",
    "Exposure",
    "book_exposure",
    "exposure_from_rows",
    "exposure_from_view",
    "exposure_of",
    "state_exposure",
]


def book_exposure(per_asset: Exposure) -> dict[str, Any]:
    """`GET /exposure` from per-asset exposure alone (a state without `exposure_view`)."""
    book: dict[str, Any] = {
        "positions": 0,
        "net_notional_usd": 0.0,
        "gross_notional_usd": 0.0,
    }
    for m in MOVES:
        book[f"pnl_{m}"] = 0.0
    for m in MOVES:
        book[f"hedged_pnl_{m}"] = 0.0
    for e in per_asset.values():
        book["positions"] += e["positions"]
        book["net_notional_usd"] += e["net_notional_usd"]
        book["gross_notional_usd"] += e["gross_notional_usd"]
        for m in MOVES:
            book[f"pnl_{m}"] += e[f"pnl_{m}"]
            book[f"hedged_pnl_{m}"] += e.get(f"hedged_pnl_{m}", 0.0)
    return {"assets": per_asset, "book": book, "limits": {}, "breaches": []}
