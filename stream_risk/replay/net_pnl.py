"""The net-hedging P&L path (issue 14, docs/design.md D17b): each asset's whole position
hedged as one, beside "each position hedged on its own" (`pnl.py`).

The rule (the net advice is `book.net`'s, the sums are the engine's):

- The net position of an asset at event time `t` is the `Partial` of every replayed
  position of that asset after the records at `t` (`Engine.asset_totals` of an engine fed
  the replay's position and risk-config records, `EngineConfig(book_partials=True)`), with
  the asset's effective config (`Engine.asset_config`).
- It is assessed with `book.net.NetBook.of` at `t` on the asset's market at its latest tick
  at or before `t` (the replay's completed columns: the values the engine holds, vol
  estimated as the engine does). Points: every tick time of the asset, every time its
  positions or config change, and every time one of its positions' actions is published
  (timer re-evaluations included), up to the end of the replay. While the market is not
  complete (vol warming up) there is no new advice: the fraction held stays.
- The hedge held is the net advice's suggested hedge: size `|Q|·h_net`, opposite to `Q`
  (none for HOLD, or when the asset's book is flat: it is then unwound).
- Its P&L accrues exactly as the per-position path's (`pnl.py`): each move of the price
  into a tick is under the hedge held after every change strictly before that tick; each
  change of the hedge held pays `|Δ held| × price × spot_spread_bps / 10⁴` at the latest
  tick's price and spread; hedges open at the end are not unwound; a perp hedge (the net
  advice's instrument) pays or receives funding over each move as in `pnl.py`. A change
  is a hedge change; its traded notional is `|Δ held| × price`.
- The net path of the book = the book's unhedged path + each asset's net hedge P&L − its
  costs (the same unhedged path as the other two lines).

The net assessment has no hysteresis and no stale-market policy (it is stateless, as the
`risk-book` record); the per-position path follows the published actions, which have both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stream_risk.book.net import MarketInputs, NetBook
from stream_risk.book.partial import Partial
from stream_risk.config import RiskConfig
from stream_risk.engine import Engine, EngineConfig
from stream_risk.engine.events import Event
from stream_risk.replay.pnl import PnlPath, book_path, funding_cost, max_drawdown
from stream_risk.replay.runner import ActionLog, Timeline

#: (event time, the asset's sums after the records at that time, its effective config).
TotalsChange = tuple[int, Partial, RiskConfig]


@dataclass(slots=True)
class AssetMarket:
    """One asset's market at each distinct tick time (the last tick at that time)."""

    ts: NDArray[np.int64]
    price: NDArray[np.float64]
    vol: NDArray[np.float64]  # NaN while the market is not complete
    spread: NDArray[np.float64]
    funding: NDArray[np.float64]
    bid: NDArray[np.float64]
    ask: NDArray[np.float64]

    def inputs(self, k: int) -> MarketInputs | None:
        """The market of distinct time `k` as the model reads it (None: not complete)."""
        vol = float(self.vol[k])
        if vol != vol:
            return None
        return MarketInputs(
            int(self.ts[k]),
            float(self.price[k]),
            vol,
            float(self.spread[k]),
            float(self.funding[k]),
            float(self.bid[k]),
            float(self.ask[k]),
        )


def asset_markets(tl: Timeline) -> dict[str, AssetMarket]:
    t = tl.ticks
    out: dict[str, AssetMarket] = {}
    if len(t) == 0:
        return out
    order = np.argsort(t.asset, kind="stable")
    codes = t.asset[order]
    for rows in np.split(order, np.flatnonzero(np.diff(codes)) + 1):
        ts = t.ts[rows]
        last = np.ones(len(rows), dtype=bool)
        last[:-1] = ts[1:] != ts[:-1]
        r = rows[last]
        out[t.assets[int(t.asset[rows[0]])]] = AssetMarket(
            ts[last], t.price[r], t.vol[r], t.spread[r], t.funding[r], t.bid[r], t.ask[r]
        )
    return out


def totals_over_time(tl: Timeline, config: EngineConfig) -> dict[str, list[TotalsChange]]:
    """Each asset's sums and effective config after every time its positions or the
    risk-config change: the replay's position and risk-config records through an engine
    that keeps the sums (the engine's own rule for them, the same records it accepts)."""
    engine = Engine(dataclasses.replace(config, book_partials=True))
    configs = tl.config_events()
    by_time: dict[int, list[Event]] = {}
    for ts, ev in configs:
        by_time.setdefault(ts, []).append(ev)
    for rec in tl.positions:
        by_time.setdefault(rec.ts, []).append(tl.position_event(rec))
    assets = {r.asset for r in tl.positions} | set(tl.ticks.assets)
    out: dict[str, list[TotalsChange]] = {}
    for t in sorted(by_time):
        engine.step(by_time[t], t)
        for asset in assets:
            tot = engine.asset_totals(asset)
            cfg = engine.asset_config(asset)
            seen = out.get(asset)
            if seen and seen[-1][1] == tot and seen[-1][2] == cfg:
                continue
            if not seen and tot.empty:
                continue
            out.setdefault(asset, []).append((t, tot, cfg))
    return out


@dataclass(slots=True)
class NetLeg:
    """One asset's net hedge: what it holds after each change, and its P&L overlay."""

    asset: str
    #: Times of each change of the hedge held and the signed size held after it
    #: (positive: the hedge sells, against a long net position).
    change_ts: NDArray[np.int64]
    held: NDArray[np.float64]
    #: The overlay on the unhedged path: the hedge's P&L and its costs, per point.
    path: PnlPath
    assessments: int


def net_held(
    asset: str,
    changes: Sequence[TotalsChange],
    market: AssetMarket,
    extra_points: Sequence[int],
    until: int,
    perp_out: list[float] | None = None,
) -> tuple[list[int], list[float], int]:
    """The hedge the net advice holds: (times of each change, signed size held after it,
    number of assessments); `perp_out` gets, for each change, 1.0 when the hedge held
    after it is a perp (funding is paid on it), else 0.0."""
    points = set(market.ts[market.ts <= until].tolist())
    points.update(t for t, _, _ in changes if t <= until)
    points.update(t for t in extra_points if t <= until)
    ch_ts = [t for t, _, _ in changes]
    held_ts: list[int] = []
    held_v: list[float] = []
    cur = 0.0
    h = 0.0
    perp = cur_perp = 0.0
    n = 0
    mts: list[int] = market.ts.tolist()
    i = k = -1  # the latest change and the latest tick at or before t
    for t in sorted(points):
        while i + 1 < len(ch_ts) and ch_ts[i + 1] <= t:
            i += 1
        while k + 1 < len(mts) and mts[k + 1] <= t:
            k += 1
        if i < 0:
            continue
        _, tot, cfg = changes[i]
        if tot.empty or tot.net_size == 0:
            new = 0.0
        else:
            m = market.inputs(k) if k >= 0 else None
            if m is None:
                new = tot.net_size * h  # no new advice: the fraction held stays
            else:
                nb = NetBook.of(asset, tot, m, cfg, t)
                a = nb.assessment
                assert a is not None
                n += 1
                h = a.hedge_pct
                hedge = a.suggested_hedge
                new = 0.0 if hedge is None else float(np.copysign(hedge.size, tot.net_size))
                perp = 0.0 if hedge is None else float(hedge.instrument.startswith("perp"))
        if new != cur or (new != 0.0 and perp != cur_perp):
            held_ts.append(t)
            held_v.append(new)
            if perp_out is not None:
                perp_out.append(perp)
            cur, cur_perp = new, perp
    return held_ts, held_v, n


def net_leg(
    asset: str,
    changes: Sequence[TotalsChange],
    market: AssetMarket,
    extra_points: Sequence[int],
    until: int,
) -> NetLeg:
    """One asset's net hedge and its P&L overlay (hedge P&L − costs, in `hedged`)."""
    perps: list[float] = []
    held_ts, held_v, n = net_held(asset, changes, market, extra_points, until, perps)
    st_t = np.array(held_ts, dtype=np.int64)
    held = np.array(held_v, dtype=np.float64)
    st_perp = np.array(perps, dtype=np.float64)
    gts, gpx, gsp = market.ts, market.price, market.spread
    k1 = int(np.searchsorted(gts, until, "right"))
    ks = np.arange(1, k1)
    tk = gts[ks]
    idx = np.searchsorted(st_t, tk, "left") - 1
    held_k = np.where(idx >= 0, held[np.maximum(idx, 0)] if len(held) else 0.0, 0.0)
    perp_k = np.where(idx >= 0, st_perp[np.maximum(idx, 0)] if len(held) else 0.0, 0.0)
    dp = gpx[ks] - gpx[ks - 1]
    dpnl = -held_k * dp
    fund = funding_cost(held_k, perp_k, gpx[ks - 1], market.funding[ks - 1], gts[ks] - gts[ks - 1])
    prev = np.concatenate(([0.0], held[:-1]))
    traded = np.abs(held - prev)
    ci = np.maximum(np.searchsorted(gts, st_t, "right") - 1, 0)
    notional = traded * gpx[ci] if len(st_t) else np.empty(0)
    cost = notional * gsp[ci] / 10000.0 if len(st_t) else np.empty(0)
    ts = np.concatenate((tk, st_t))
    key = np.concatenate((np.zeros(len(tk), dtype=np.int64), np.ones(len(st_t), dtype=np.int64)))
    order = np.lexsort((key, ts))
    zeros_k = np.zeros(len(tk))
    d = np.concatenate((dpnl - fund, -cost))[order]
    c = np.concatenate((fund, cost))[order]
    f = np.concatenate((fund, np.zeros(len(st_t))))[order]
    tr = np.concatenate((zeros_k, notional))[order]
    path = PnlPath(
        ts[order],
        np.zeros(len(ts)),
        np.cumsum(d),
        np.concatenate((gpx[ks], gpx[ci] if len(st_t) else np.empty(0)))[order],
        c,
        tr,
        (tr > 0).astype(np.int64),
        f,
    )
    return NetLeg(asset, st_t, held, path, n)


@dataclass(slots=True)
class NetHedging:
    """The net-hedging path of the book, and each asset's leg."""

    book: PnlPath  # unhedged: the book's; hedged: following the net advice
    legs: dict[str, NetLeg]


def net_hedging(
    tl: Timeline, log: ActionLog, config: EngineConfig, paths: Mapping[str, PnlPath]
) -> NetHedging:
    """The net-hedging path of a replay (see the module doc); `paths` the per-position
    paths (`pnl.position_paths`), whose sum is the unhedged path it starts from."""
    markets = asset_markets(tl)
    totals = totals_over_time(tl, config)
    # Published actions' times per asset (timer re-evaluations included).
    asset_of: dict[str, list[tuple[int, str | None]]] = {}
    for rec in tl.positions:
        asset_of.setdefault(rec.position_id, []).append(
            (rec.ts, None if rec.message is None else rec.message.asset)
        )
    published: dict[str, list[int]] = {}
    for i in range(len(log)):
        if log.action[i] < 0:
            continue
        hist = asset_of.get(log.pid[i])
        if not hist:
            continue
        j = max(0, int(np.searchsorted([t for t, _ in hist], log.now[i], "right")) - 1)
        asset = hist[j][1]
        if asset is not None:
            published.setdefault(asset, []).append(log.now[i])
    legs: dict[str, NetLeg] = {}
    for asset, changes in sorted(totals.items()):
        market = markets.get(asset)
        if market is None or len(market.ts) == 0:
            continue
        legs[asset] = net_leg(asset, changes, market, published.get(asset, []), tl.until)
    per_position = book_path(paths)
    base = PnlPath(
        per_position.ts,
        per_position.unhedged,
        per_position.unhedged,
        per_position.price,
        np.zeros(len(per_position.ts)),
        np.zeros(len(per_position.ts)),
        np.zeros(len(per_position.ts), dtype=np.int64),
        np.zeros(len(per_position.ts)),
    )
    parts: dict[str, PnlPath] = {"": base}
    parts.update({f"net:{a}": leg.path for a, leg in legs.items()})
    book = book_path(parts)
    return NetHedging(book, legs)


def path_figures(p: PnlPath) -> dict[str, Any]:
    """The figures of a hedging path compared side by side (its `hedged` line)."""
    cost = float(p.cost.sum())
    funding = float(p.funding.sum())
    mdd, _, _ = max_drawdown(p.hedged)
    return {
        "hedge_cost_usd": cost,
        "spread_cost_usd": cost - funding,
        "funding_cost_usd": funding,
        "hedge_changes": int(p.changes.sum()),
        "traded_notional_usd": float(p.traded.sum()),
        "final_pnl": float(p.hedged[-1]) if len(p.ts) else 0.0,
        "max_drawdown": mdd,
    }


def comparison(per_position_book: PnlPath, net: NetHedging) -> dict[str, Any]:
    """The report's section: each position hedged on its own vs net hedging, and the
    saving (per-position cost − net cost)."""
    each = path_figures(per_position_book)
    net_f = path_figures(net.book)
    saving = each["hedge_cost_usd"] - net_f["hedge_cost_usd"]
    pct = saving / each["hedge_cost_usd"] * 100.0 if each["hedge_cost_usd"] > 0 else None
    by_asset = {
        a: {
            "hedge_cost_usd": float(leg.path.cost.sum()),
            "hedge_changes": int(leg.path.changes.sum()),
            "traded_notional_usd": float(leg.path.traded.sum()),
            "hedge_pnl_usd": float(leg.path.hedged[-1] + leg.path.cost.sum())
            if len(leg.path.ts)
            else 0.0,
            "held_at_end": float(leg.held[-1]) if len(leg.held) else 0.0,
            "assessments": leg.assessments,
        }
        for a, leg in net.legs.items()
    }
    return {
        "per_position": each,
        "net": net_f,
        "saving_usd": saving,
        "saving_pct": pct,
        "funding_counted": True,
        "net_by_asset": by_asset,
    }
