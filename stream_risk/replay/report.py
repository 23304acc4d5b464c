"""The backtest report's figures: what the engine said, and what following it would have done.

From a replay's timeline and action log (`summarize`, no file I/O): counts by action and
trigger; time in each band / action, from each published action to the position's next
one, its close, or the end of the replay; hedge cost; turnover; and per position and for
the book, the P&L figures of its path (`pnl`: the path, its costs and max drawdown).

Turnover counts, besides the hedge changes of the paths, the changes of the advised
`hedge_pct` between a position's consecutive published actions (what `hysteresis_points`
damps, docs/design.md D11). The worst move survived is the interval of the unhedged path's
max drawdown: the asset's price move over it, and what it cost unhedged and hedged.

Three paths side by side (issue 16, `paths`): unhedged, following the advice, and the
static benchmark hedging `STATIC_H` (50 %) of every position throughout under the same cost
rules (spread and funding, `pnl`), each with its final P&L, costs split into spread and
funding, turnover, max drawdown and when, time under water, daily volatility and
return/risk (`metrics`); and the daily P&L table (UTC days) of the three, with the hedge
costs paid each day.

Net hedging (`net_pnl`, issue 14): when given, `net_hedging` sets beside the book's path
following each position's advice ("each position hedged on its own") the path hedging each
asset's net position by the net advice, their costs, and the saving.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stream_risk.replay.metrics import daily_pnl, daily_sums, day_of, days, path_risk
from stream_risk.replay.net_pnl import NetHedging, comparison
from stream_risk.replay.pnl import PnlPath, book_path, max_drawdown, position_paths
from stream_risk.replay.runner import TRIGGERS, ActionLog, Timeline
from stream_risk.replay.timestamps import ms_to_iso
from stream_risk.rules import ACTIONS, BAND_NAMES

HOUR_MS = 3_600_000
#: The static benchmark's hedge fraction.
STATIC_H = 0.5
PATH_NAMES = {
    "unhedged": "unhedged",
    "advice": "following the advice",
    "static": "static 50 % hedge",
}


def three_paths(
    book: PnlPath, static_book: PnlPath, until: int
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The `paths` and `daily` sections: the three paths' figures and the daily table."""
    end = max(until, int(book.ts[-1]) if len(book.ts) else 0)
    all_ts = np.concatenate((book.ts, static_book.ts))
    midnights = days(np.sort(all_ts)) if len(all_ts) else days(all_ts)
    lines: dict[str, tuple[NDArray[np.int64], NDArray[np.float64], PnlPath | None]] = {
        "unhedged": (book.ts, book.unhedged, None),
        "advice": (book.ts, book.hedged, book),
        "static": (static_book.ts, static_book.hedged, static_book),
    }
    out: dict[str, dict[str, Any]] = {}
    for key, (ts, values, p) in lines.items():
        f = path_risk(ts, values, end, midnights)
        cost = funding = traded = 0.0
        changes = 0
        if p is not None:
            cost, funding = float(p.cost.sum()), float(p.funding.sum())
            traded, changes = float(p.traded.sum()), int(p.changes.sum())
        f.update(
            {
                "hedge_cost_usd": cost,
                "spread_cost_usd": cost - funding,
                "funding_cost_usd": funding,
                "hedge_changes": changes,
                "traded_notional_usd": traded,
            }
        )
        out[key] = {"name": PATH_NAMES[key], **f}
    daily_rows: list[dict[str, Any]] = []
    cols = {k: daily_pnl(ts, v, midnights) for k, (ts, v, _) in lines.items()}
    sp = daily_sums(book.ts, book.spread, midnights)
    fu = daily_sums(book.ts, book.funding, midnights)
    ssp = daily_sums(static_book.ts, static_book.spread, midnights)
    sfu = daily_sums(static_book.ts, static_book.funding, midnights)
    for i, m in enumerate(midnights.tolist()):
        daily_rows.append(
            {
                "day": day_of(m),
                "unhedged_usd": float(cols["unhedged"][i]),
                "advice_usd": float(cols["advice"][i]),
                "static_usd": float(cols["static"][i]),
                "advice_spread_usd": float(sp[i]),
                "advice_funding_usd": float(fu[i]),
                "static_spread_usd": float(ssp[i]),
                "static_funding_usd": float(sfu[i]),
            }
        )
    return out, daily_rows


def _path_summary(p: PnlPath) -> dict[str, Any]:
    mdd_u, pu, tu = max_drawdown(p.unhedged)
    mdd_h, _, _ = max_drawdown(p.hedged)
    out: dict[str, Any] = {
        "final_pnl_unhedged": float(p.unhedged[-1]) if len(p.ts) else 0.0,
        "final_pnl_hedged": float(p.hedged[-1]) if len(p.ts) else 0.0,
        "max_drawdown_unhedged": mdd_u,
        "max_drawdown_hedged": mdd_h,
        "drawdown_saved": mdd_u - mdd_h,
        "hedge_cost_usd": float(p.cost.sum()),
        "hedge_changes": int(p.changes.sum()),
        "traded_notional_usd": float(p.traded.sum()),
    }
    worst: dict[str, Any] | None = None
    if tu >= 0:
        i0 = pu
        u0 = float(p.unhedged[i0]) if i0 >= 0 else 0.0
        h0 = float(p.hedged[i0]) if i0 >= 0 else 0.0
        t0 = int(p.ts[i0]) if i0 >= 0 else int(p.ts[0])
        px0 = float(p.price[i0]) if i0 >= 0 else float(p.price[0])
        px1 = float(p.price[tu])
        worst = {
            "from": ms_to_iso(t0),
            "to": ms_to_iso(int(p.ts[tu])),
            "price_from": px0,
            "price_to": px1,
            "move_pct": (px1 / px0 - 1.0) * 100.0 if px0 == px0 and px0 > 0 else None,
            "pnl_unhedged": float(p.unhedged[tu]) - u0,
            "pnl_hedged": float(p.hedged[tu]) - h0,
        }
    out["worst_move_survived"] = worst
    return out


def time_in(log: ActionLog, tl: Timeline) -> tuple[dict[str, float], dict[str, float]]:
    """Hours spent in each risk band and each action (from each published action on)."""
    closes: dict[str, list[int]] = {}
    for rec in tl.positions:
        if rec.message is None:
            closes.setdefault(rec.position_id, []).append(rec.ts)
    per_pid: dict[str, list[int]] = {}
    for i in range(len(log)):
        per_pid.setdefault(log.pid[i], []).append(i)
    band_ms: Counter[int] = Counter()
    action_ms: Counter[int] = Counter()
    for _pid, idxs in per_pid.items():
        for j, i in enumerate(idxs):
            if log.action[i] < 0:
                continue
            end = log.now[idxs[j + 1]] if j + 1 < len(idxs) else tl.until
            span = max(0, end - log.now[i])
            band_ms[log.band[i]] += span
            action_ms[log.action[i]] += span
    bands = {b: band_ms.get(i, 0) / HOUR_MS for i, b in enumerate(BAND_NAMES)}
    actions = {a: action_ms.get(i, 0) / HOUR_MS for i, a in enumerate(ACTIONS)}
    return bands, actions


def hedge_pct_changes(log: ActionLog) -> int:
    """Published actions whose `hedge_pct` differs from their position's previous published
    action (0 before the first; a close resets it to 0): how often the advice moved."""
    held: dict[str, float] = {}
    n = 0
    for i in range(len(log)):
        pid = log.pid[i]
        if log.action[i] < 0:
            held.pop(pid, None)
            continue
        h = log.hedge_pct[i]
        if h != held.get(pid, 0.0):
            n += 1
        held[pid] = h
    return n


def summarize(
    tl: Timeline,
    log: ActionLog,
    paths: Mapping[str, PnlPath] | None = None,
    net: NetHedging | None = None,
    static: Mapping[str, PnlPath] | None = None,
    funding_threshold: float = 0.02,
) -> dict[str, Any]:
    """Counts, time in band, hedge cost and P&L of one replay (no file I/O); with `net`
    (`net_pnl.net_hedging`), the net-hedging comparison too. `static`: the static
    benchmark's position paths (computed when not given; they do not depend on the advice)."""
    if paths is None:
        paths = position_paths(tl, log)
    if static is None:
        static = position_paths(tl, log, STATIC_H, funding_threshold)
    book = book_path(paths)
    static_book = book_path(static)
    three, daily = three_paths(book, static_book, tl.until)
    by_action = Counter(log.action)
    by_trigger = Counter(log.trigger)
    bands, actions = time_in(log, tl)
    per_day: dict[str, float] = {}
    for p in paths.values():
        paid = p.cost != 0
        for t, c in zip(p.ts[paid].tolist(), p.cost[paid].tolist(), strict=True):
            day = dt.datetime.fromtimestamp(t / 1000, dt.UTC).strftime("%Y-%m-%d")
            per_day[day] = per_day.get(day, 0.0) + c
    trades = int(sum(int((p.traded > 0).sum()) for p in paths.values()))
    # The book's sums: the same numbers as the paths' (`three_paths`), to the cent.
    total_cost = float(book.cost.sum())
    total_funding = float(book.funding.sum())
    out: dict[str, Any] = {
        "actions": {
            "published": sum(v for k, v in by_action.items() if k >= 0),
            "tombstones": by_action.get(-1, 0),
            "by_action": {a: by_action.get(i, 0) for i, a in enumerate(ACTIONS)},
            "by_trigger": {tr: by_trigger.get(i, 0) for i, tr in enumerate(TRIGGERS)},
        },
        "time_in_band_hours": bands,
        "time_in_action_hours": actions,
        "hedge_cost": {
            "total_usd": total_cost,
            "spread_usd": total_cost - total_funding,
            "funding_usd": total_funding,
            "trades": trades,
            "per_day_usd": dict(sorted(per_day.items())),
        },
        "turnover": {
            "hedge_changes": int(book.changes.sum()),
            "traded_notional_usd": float(book.traded.sum()),
            "cost_usd": total_cost,
            "hedge_pct_changes": hedge_pct_changes(log),
        },
        "static_hedge_pct": STATIC_H,
        "paths": three,
        "daily": daily,
        "pnl": {
            "book": _path_summary(book),
            "positions": {pid: _path_summary(p) for pid, p in sorted(paths.items())},
        },
    }
    if net is not None:
        out["net_hedging"] = comparison(book, net)
    return out
