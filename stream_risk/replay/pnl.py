"""The P&L path of each position and of the book: what following the engine would have done.

P&L path (per position, and the book as their sum), marked to market at each tick of the
position's asset from its first valuation in the replay (its P&L before that is not
counted):

- unhedged: `U += size × Δprice`;
- following the advice: `H += size × (1 − h) × Δprice − costs`, where `h` is the
  `hedge_pct` of the latest *published* action (what a hedging bot following the topic
  holds; 0 before the first) and each change of the hedge held, `size × h`, pays the spread
  on the traded notional: `|Δ(size × h)| × price × spot_spread_bps / 10,000` at the latest
  tick's price and spread. Closing a position unwinds its hedge (paid); at the end of the
  data hedges stay open (not paid).
- Funding on the hedge (issue 16): while a perp hedge is held, each price move into a tick
  (from the tick before, `Δt` ms later) also pays
  `−(size × h) × price_before × funding_before × Δt / (365 days)`: the hedge's notional ×
  the annual funding rate × the elapsed fraction of a year, the model's sign (a short hedge,
  of a long position, receives positive funding; a long hedge pays it: the core's 1-day
  funding, `assessor.hedge_at`, over `Δt` instead of a day). The hedge held over the move
  is the one the price move is under (below). A spot hedge pays none. The instrument is the
  advice's (`suggested_hedge.instrument` of the latest action); for the static benchmark it
  is the model's rule at each trade (a long hedges with a perp when funding >
  `funding_threshold`, a short when funding < −threshold). Negative cost is income.
- Static benchmark (`static_h`, e.g. 0.5): the same rules with `h` fixed from the opening
  of each position, whatever the advice (its hedge changes only with the position's size).
- A change at time `c` (a new size, a new action) applies to the price moves after it: the
  move into a tick at exactly `c` is still under the previous size and hedge.
- Turnover: every change of the hedge held is a hedge change; its traded notional is
  `|Δ(size × h)| × price` (the same trades the cost above is paid on).

Max drawdown = the largest fall from a running peak (the start, 0, counts as a peak).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stream_risk.replay.runner import ActionLog, Timeline


@dataclass(slots=True)
class PnlPath:
    """A P&L path: values after each point, in time order."""

    ts: NDArray[np.int64]
    unhedged: NDArray[np.float64]
    hedged: NDArray[np.float64]
    price: NDArray[np.float64]
    cost: NDArray[np.float64]  # hedge cost paid at each point: spread + funding (USD)
    traded: NDArray[np.float64]  # hedge notional traded at each point (USD)
    changes: NDArray[np.int64]  # hedge changes at each point (0/1 per position; summed in a book)
    funding: NDArray[np.float64]  # the funding part of `cost` at each point (USD; < 0: income)

    @property
    def spread(self) -> NDArray[np.float64]:
        """The spread part of `cost` at each point (USD)."""
        return np.asarray(self.cost - self.funding, dtype=np.float64)


def max_drawdown(values: NDArray[np.float64]) -> tuple[float, int, int]:
    """(largest fall from a running peak, index of that peak or -1 for the start, trough)."""
    if len(values) == 0:
        return 0.0, -1, -1
    v = np.concatenate(([0.0], values))
    peak = np.maximum.accumulate(v)
    dd = peak - v
    trough = int(np.argmax(dd))
    if dd[trough] <= 0:
        return 0.0, -1, -1
    peak_i = int(np.argmax(v[: trough + 1] == peak[trough]))  # first time at that peak
    return float(dd[trough]), peak_i - 1, trough - 1


YEAR_MS = 365 * 86_400_000


def funding_cost(
    held: NDArray[np.float64],
    perp: NDArray[np.float64],
    price: NDArray[np.float64],
    funding: NDArray[np.float64],
    dt_ms: NDArray[np.int64],
) -> NDArray[np.float64]:
    """Funding paid (USD, < 0 received) over `dt_ms` on a hedge of `held` (= size × h: > 0
    a short hedge of a long position), a perp where `perp` is 1, at `price` and annual
    `funding` rate: `−held × price × funding × dt / 365 days` (the module doc)."""
    return np.asarray(-held * perp * price * funding * (dt_ms / YEAR_MS), dtype=np.float64)


def _last_at_each_time(ts: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Of sorted times, the last of each run of equal times."""
    last = np.ones(len(ts), dtype=bool)
    last[:-1] = ts[1:] != ts[:-1]
    return last


#: An asset's distinct tick times, prices, spreads (bps) and funding rates.
_Series = tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


class _AssetPrices:
    """Distinct-time prices, spreads and funding of each asset (the last tick at each time)."""

    def __init__(self, tl: Timeline) -> None:
        t = tl.ticks
        self.data: dict[str, _Series] = {}
        if len(t) == 0:
            return
        order = np.argsort(t.asset, kind="stable")
        codes = t.asset[order]
        for rows in np.split(order, np.flatnonzero(np.diff(codes)) + 1):
            ts = t.ts[rows]
            last = _last_at_each_time(ts)
            r = rows[last]
            self.data[t.assets[int(t.asset[rows[0]])]] = (
                ts[last],
                t.price[r],
                t.spread[r],
                t.funding[r],
            )


def position_paths(
    tl: Timeline,
    log: ActionLog,
    static_h: float | None = None,
    funding_threshold: float = 0.02,
) -> dict[str, PnlPath]:
    """The P&L path of every position following the advice in `log`, or with `static_h`
    the static benchmark hedging that fraction throughout (see the module doc)."""
    prices = _AssetPrices(tl)
    # Changes per position: (time, order, kind, payload); positions before actions at a time.
    changes: dict[str, list[tuple[int, int, int, Any]]] = {}
    n = 0
    for rec in tl.positions:
        n += 1
        payload = None if rec.message is None else (rec.message.asset, rec.message.size)
        changes.setdefault(rec.position_id, []).append((rec.ts, 0, n, payload))
    for i in range(len(log) if static_h is None else 0):
        if log.action[i] < 0:
            continue
        n += 1
        perp = log.perp[i] if i < len(log.perp) else False
        changes.setdefault(log.pid[i], []).append(
            (log.now[i], 1, n, (log.hedge_pct[i], 1.0 if perp else 0.0))
        )
    out: dict[str, PnlPath] = {}
    for pid, evs in changes.items():
        evs.sort(key=lambda e: (e[0], e[1], e[2]))
        path = _one_path(evs, prices, tl.until, static_h, funding_threshold)
        if path is not None:
            out[pid] = path
    return out


#: A state of a position from time t: (t, size, hedge fraction h, perp: 1.0 perp, 0.0 spot,
#: NaN the model's rule at t).
State = tuple[int, float, float, float]


def _one_path(
    evs: Sequence[tuple[int, int, int, Any]],
    prices: _AssetPrices,
    until: int,
    static_h: float | None = None,
    funding_threshold: float = 0.02,
) -> PnlPath | None:
    # Walk the changes into legs of constant asset: [(asset, start, end, [states])].
    legs: list[tuple[str, int, int, list[State]]] = []
    asset: str | None = None
    size = 0.0
    h0, p0 = (0.0, 0.0) if static_h is None else (static_h, math.nan)
    h, perp = h0, p0
    start = 0
    states: list[State] = []
    for t, kind, _, payload in evs:
        if kind == 1:
            h, perp = float(payload[0]), float(payload[1])
            if asset is not None:
                states.append((t, size, h, perp))
            continue
        if payload is None:  # close
            if asset is not None:
                states.append((t, 0.0, 0.0, 0.0))
                legs.append((asset, start, t, states))
            asset, states, h, perp = None, [], h0, p0
            continue
        new_asset, new_size = payload
        if asset is not None and new_asset != asset:
            states.append((t, 0.0, 0.0, 0.0))
            legs.append((asset, start, t, states))
            asset = None
        if asset is None:
            asset, start, states = new_asset, t, []
        size = float(new_size)
        states.append((t, size, h, perp))
    if asset is not None:
        legs.append((asset, start, until, states))
    parts: list[tuple[NDArray[Any], ...]] = []
    for leg_asset, t0, t1, leg_states in legs:
        part = _leg(leg_asset, t0, t1, leg_states, prices, funding_threshold)
        if part is not None:
            parts.append(part)
    if not parts:
        return None
    ts, order_key, du, dh, px, cost, traded, fund = (
        np.concatenate(c) for c in zip(*parts, strict=True)
    )
    order = np.lexsort((order_key, ts))
    ts, du, dh, px, cost = ts[order], du[order], dh[order], px[order], cost[order]
    traded, fund = traded[order], fund[order]
    changes = (traded > 0).astype(np.int64)
    return PnlPath(ts, np.cumsum(du), np.cumsum(dh - cost), px, cost, traded, changes, fund)


def _leg(
    asset: str,
    t0: int,
    t1: int,
    states: list[State],
    prices: _AssetPrices,
    funding_threshold: float,
) -> tuple[NDArray[Any], ...] | None:
    d = prices.data.get(asset)
    if d is None or len(d[0]) == 0 or not states:
        return None
    gts, gpx, gsp, gfund = d
    # Valuation starts at the latest price at or before t0 (else the first tick after it).
    k0 = int(np.searchsorted(gts, t0, "right")) - 1
    if k0 < 0:
        k0 = 0
    k1 = int(np.searchsorted(gts, t1, "right"))  # ticks up to and including t1
    ks = np.arange(k0 + 1, k1)
    st_t = np.array([s[0] for s in states], dtype=np.int64)
    st_size = np.array([s[1] for s in states])
    st_h = np.array([s[2] for s in states])
    st_perp = np.array([s[3] for s in states])
    ci = np.maximum(np.searchsorted(gts, st_t, "right") - 1, 0)  # latest tick at each change
    rule = np.where(
        st_size > 0, gfund[ci] > funding_threshold, gfund[ci] < -funding_threshold
    ).astype(np.float64)
    st_perp = np.where(np.isnan(st_perp), rule, st_perp)
    # Increment into tick k is under the state after every change strictly before it.
    tk = gts[ks]
    idx = np.searchsorted(st_t, tk, "left") - 1
    valid = idx >= 0
    s_k = np.where(valid, st_size[np.maximum(idx, 0)], 0.0)
    h_k = np.where(valid, st_h[np.maximum(idx, 0)], 0.0)
    perp_k = np.where(valid, st_perp[np.maximum(idx, 0)], 0.0)
    dp = gpx[ks] - gpx[ks - 1] if len(ks) else np.empty(0)
    du = s_k * dp
    dh = s_k * (1.0 - h_k) * dp
    fund = (
        funding_cost(s_k * h_k, perp_k, gpx[ks - 1], gfund[ks - 1], gts[ks] - gts[ks - 1])
        if len(ks)
        else np.empty(0)
    )
    # Hedge trades: every change of size × h, at the latest price and spread.
    held = st_size * st_h
    prev = np.concatenate(([0.0], held[:-1]))
    traded = np.abs(held - prev)
    notional = traded * gpx[ci]
    cost = notional * gsp[ci] / 10000.0
    ts = np.concatenate((tk, st_t))
    key = np.concatenate((np.zeros(len(tk), dtype=np.int64), np.ones(len(st_t), dtype=np.int64)))
    zeros_c = np.zeros(len(st_t))
    return (
        ts,
        key,
        np.concatenate((du, zeros_c)),
        np.concatenate((dh, zeros_c)),
        np.concatenate((gpx[ks], gpx[ci])),
        np.concatenate((fund, cost)),
        np.concatenate((np.zeros(len(tk)), notional)),
        np.concatenate((fund, zeros_c)),
    )


def book_path(paths: Mapping[str, PnlPath]) -> PnlPath:
    """The sum of every position's path, on the union of their times."""
    if not paths:
        e = np.empty(0)
        n = np.empty(0, dtype=np.int64)
        return PnlPath(n, e, e, e, e, e, n, e)
    ts = np.concatenate([p.ts for p in paths.values()])
    du = np.concatenate([np.diff(p.unhedged, prepend=0.0) for p in paths.values()])
    dh = np.concatenate([np.diff(p.hedged, prepend=0.0) for p in paths.values()])
    cost = np.concatenate([p.cost for p in paths.values()])
    traded = np.concatenate([p.traded for p in paths.values()])
    changes = np.concatenate([p.changes for p in paths.values()])
    fund = np.concatenate([p.funding for p in paths.values()])
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    u = np.cumsum(du[order])
    h = np.cumsum(dh[order])
    last = _last_at_each_time(ts)  # one point per time: the value after everything at it

    starts = np.flatnonzero(np.concatenate(([True], ts[1:] != ts[:-1])))

    def per_time(x: NDArray[Any]) -> NDArray[Any]:
        # Summed per time (not a difference of running sums: those lose the cents).
        return np.add.reduceat(x[order], starts) if len(starts) else x[:0]

    return PnlPath(
        ts[last],
        u[last],
        h[last],
        np.full(int(last.sum()), np.nan),
        per_time(cost),
        per_time(traded),
        per_time(changes),
        per_time(fund),
    )
