"""The backtest report: what the engine said, and what following it would have done.

P&L path (per position, and the book as their sum), marked to market at each tick of the
position's asset from its first valuation in the replay (its P&L before that is not
counted):

- unhedged: `U += size × Δprice`;
- following the advice: `H += size × (1 − h) × Δprice − costs`, where `h` is the
  `hedge_pct` of the latest *published* action (what a hedging bot following the topic
  holds; 0 before the first) and each change of the hedge held, `size × h`, pays the spread
  on the traded notional: `|Δ(size × h)| × price × spot_spread_bps / 10,000` at the latest
  tick's price and spread. Closing a position unwinds its hedge (paid); at the end of the
  data hedges stay open (not paid). Funding is not counted.
- A change at time `c` (a new size, a new action) applies to the price moves after it: the
  move into a tick at exactly `c` is still under the previous size and hedge.
- Turnover: every change of the hedge held is a hedge change; its traded notional is
  `|Δ(size × h)| × price` (the same trades the cost above is paid on). Changes of the
  advised `hedge_pct` between a position's consecutive published actions are counted too
  (what `hysteresis_points` damps, docs/design.md D11).

Max drawdown = the largest fall from a running peak (the start, 0, counts as a peak). The
worst move survived is the interval of the unhedged path's max drawdown: the asset's price
move over it, and what it cost unhedged and hedged. Time in each band / action runs from
each published action to the position's next one, its close, or the end of the replay.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from stream_risk.replay.runner import TRIGGERS, ActionLog, Timeline
from stream_risk.rules import ACTIONS, BAND_NAMES

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@dataclass(slots=True)
class PnlPath:
    """A P&L path: values after each point, in time order."""

    ts: NDArray[np.int64]
    unhedged: NDArray[np.float64]
    hedged: NDArray[np.float64]
    price: NDArray[np.float64]
    cost: NDArray[np.float64]  # hedge cost paid at each point
    traded: NDArray[np.float64]  # hedge notional traded at each point (USD)
    changes: NDArray[np.int64]  # hedge changes at each point (0/1 per position; summed in a book)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


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


class _AssetPrices:
    """Distinct-time prices and spreads of each asset (the last tick at each time)."""

    def __init__(self, tl: Timeline) -> None:
        t = tl.ticks
        self.data: dict[str, tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]]
        self.data = {}
        if len(t) == 0:
            return
        order = np.argsort(t.asset, kind="stable")
        codes = t.asset[order]
        for rows in np.split(order, np.flatnonzero(np.diff(codes)) + 1):
            ts = t.ts[rows]
            last = np.ones(len(rows), dtype=bool)
            last[:-1] = ts[1:] != ts[:-1]
            r = rows[last]
            self.data[t.assets[int(t.asset[rows[0]])]] = (ts[last], t.price[r], t.spread[r])

    def at(self, asset: str, t: int) -> tuple[float, float] | None:
        """(price, spread) of the latest tick at or before t, else the first one after."""
        d = self.data.get(asset)
        if d is None or len(d[0]) == 0:
            return None
        i = int(np.searchsorted(d[0], t, "right")) - 1
        i = max(i, 0)
        return float(d[1][i]), float(d[2][i])


def position_paths(tl: Timeline, log: ActionLog) -> dict[str, PnlPath]:
    """The P&L path of every position (see the module doc)."""
    prices = _AssetPrices(tl)
    # Changes per position: (time, order, kind, payload); positions before actions at a time.
    changes: dict[str, list[tuple[int, int, int, Any]]] = {}
    n = 0
    for rec in tl.positions:
        n += 1
        payload = None if rec.message is None else (rec.message.asset, rec.message.size)
        changes.setdefault(rec.position_id, []).append((rec.ts, 0, n, payload))
    for i in range(len(log)):
        if log.action[i] < 0:
            continue
        n += 1
        changes.setdefault(log.pid[i], []).append((log.now[i], 1, n, log.hedge_pct[i]))
    out: dict[str, PnlPath] = {}
    for pid, evs in changes.items():
        evs.sort(key=lambda e: (e[0], e[1], e[2]))
        path = _one_path(evs, prices, tl.until)
        if path is not None:
            out[pid] = path
    return out


def _one_path(
    evs: Sequence[tuple[int, int, int, Any]], prices: _AssetPrices, until: int
) -> PnlPath | None:
    # Walk the changes into legs of constant asset: [(asset, start, end, [(t, size, h)])].
    legs: list[tuple[str, int, int, list[tuple[int, float, float]]]] = []
    asset: str | None = None
    size = 0.0
    h = 0.0
    start = 0
    states: list[tuple[int, float, float]] = []
    for t, kind, _, payload in evs:
        if kind == 1:
            h = float(payload)
            if asset is not None:
                states.append((t, size, h))
            continue
        if payload is None:  # close
            if asset is not None:
                states.append((t, 0.0, 0.0))
                legs.append((asset, start, t, states))
            asset, states, h = None, [], 0.0
            continue
        new_asset, new_size = payload
        if asset is not None and new_asset != asset:
            states.append((t, 0.0, 0.0))
            legs.append((asset, start, t, states))
            asset = None
        if asset is None:
            asset, start, states = new_asset, t, []
        size = float(new_size)
        states.append((t, size, h))
    if asset is not None:
        legs.append((asset, start, until, states))
    parts: list[tuple[NDArray[Any], ...]] = []
    for leg_asset, t0, t1, leg_states in legs:
        part = _leg(leg_asset, t0, t1, leg_states, prices)
        if part is not None:
            parts.append(part)
    if not parts:
        return None
    ts = np.concatenate([p[0] for p in parts])
    order_key = np.concatenate([p[1] for p in parts])
    du = np.concatenate([p[2] for p in parts])
    dh = np.concatenate([p[3] for p in parts])
    px = np.concatenate([p[4] for p in parts])
    cost = np.concatenate([p[5] for p in parts])
    traded = np.concatenate([p[6] for p in parts])
    order = np.lexsort((order_key, ts))
    ts, du, dh, px, cost = ts[order], du[order], dh[order], px[order], cost[order]
    traded = traded[order]
    changes = (traded > 0).astype(np.int64)
    return PnlPath(ts, np.cumsum(du), np.cumsum(dh - cost), px, cost, traded, changes)


def _leg(
    asset: str,
    t0: int,
    t1: int,
    states: list[tuple[int, float, float]],
    prices: _AssetPrices,
) -> tuple[NDArray[Any], ...] | None:
    d = prices.data.get(asset)
    if d is None or len(d[0]) == 0 or not states:
        return None
    gts, gpx, gsp = d
    # Valuation starts at the latest price at or before t0 (else the first tick after it).
    k0 = int(np.searchsorted(gts, t0, "right")) - 1
    if k0 < 0:
        k0 = 0
    k1 = int(np.searchsorted(gts, t1, "right"))  # ticks up to and including t1
    ks = np.arange(k0 + 1, k1)
    st_t = np.array([s[0] for s in states], dtype=np.int64)
    st_size = np.array([s[1] for s in states])
    st_h = np.array([s[2] for s in states])
    # Increment into tick k is under the state after every change strictly before it.
    tk = gts[ks]
    idx = np.searchsorted(st_t, tk, "left") - 1
    valid = idx >= 0
    s_k = np.where(valid, st_size[np.maximum(idx, 0)], 0.0)
    h_k = np.where(valid, st_h[np.maximum(idx, 0)], 0.0)
    dp = gpx[ks] - gpx[ks - 1] if len(ks) else np.empty(0)
    du = s_k * dp
    dh = s_k * (1.0 - h_k) * dp
    # Hedge trades: every change of size × h, at the latest price and spread.
    held = st_size * st_h
    prev = np.concatenate(([0.0], held[:-1]))
    traded = np.abs(held - prev)
    ci = np.maximum(np.searchsorted(gts, st_t, "right") - 1, 0)
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
        np.concatenate((np.zeros(len(tk)), cost)),
        np.concatenate((np.zeros(len(tk)), notional)),
    )


def book_path(paths: Mapping[str, PnlPath]) -> PnlPath:
    """The sum of every position's path, on the union of their times."""
    if not paths:
        e = np.empty(0)
        n = np.empty(0, dtype=np.int64)
        return PnlPath(n, e, e, e, e, e, n)
    ts = np.concatenate([p.ts for p in paths.values()])
    du = np.concatenate([np.diff(p.unhedged, prepend=0.0) for p in paths.values()])
    dh = np.concatenate([np.diff(p.hedged, prepend=0.0) for p in paths.values()])
    cost = np.concatenate([p.cost for p in paths.values()])
    traded = np.concatenate([p.traded for p in paths.values()])
    changes = np.concatenate([p.changes for p in paths.values()])
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    u = np.cumsum(du[order])
    h = np.cumsum(dh[order])
    # One point per distinct time (the value after everything at that time).
    last = np.ones(len(ts), dtype=bool)
    last[:-1] = ts[1:] != ts[:-1]

    def per_time(x: NDArray[Any]) -> NDArray[Any]:
        return np.diff(np.cumsum(x[order])[last], prepend=x.dtype.type(0))

    return PnlPath(
        ts[last],
        u[last],
        h[last],
        np.full(int(last.sum()), np.nan),
        per_time(cost),
        per_time(traded),
        per_time(changes),
    )


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
            "from": _iso(t0),
            "to": _iso(int(p.ts[tu])),
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
    tl: Timeline, log: ActionLog, paths: Mapping[str, PnlPath] | None = None
) -> dict[str, Any]:
    """Counts, time in band, hedge cost and P&L of one replay (no file I/O)."""
    if paths is None:
        paths = position_paths(tl, log)
    book = book_path(paths)
    by_action = Counter(log.action)
    by_trigger = Counter(log.trigger)
    bands, actions = time_in(log, tl)
    per_day: dict[str, float] = {}
    for p in paths.values():
        paid = p.cost > 0
        for t, c in zip(p.ts[paid].tolist(), p.cost[paid].tolist(), strict=True):
            day = dt.datetime.fromtimestamp(t / 1000, dt.UTC).strftime("%Y-%m-%d")
            per_day[day] = per_day.get(day, 0.0) + c
    trades = int(sum(int((p.cost > 0).sum()) for p in paths.values()))
    total_cost = float(sum(float(p.cost.sum()) for p in paths.values()))
    return {
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
            "trades": trades,
            "per_day_usd": dict(sorted(per_day.items())),
        },
        "turnover": {
            "hedge_changes": int(sum(int(p.changes.sum()) for p in paths.values())),
            "traded_notional_usd": float(sum(float(p.traded.sum()) for p in paths.values())),
            "cost_usd": total_cost,
            "hedge_pct_changes": hedge_pct_changes(log),
        },
        "pnl": {
            "book": _path_summary(book),
            "positions": {pid: _path_summary(p) for pid, p in sorted(paths.items())},
        },
    }


# ---------------------------------------------------------------------- files
def write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def write_chart(path: Path, paths: Mapping[str, PnlPath], log: ActionLog, title: str) -> None:
    """P&L of the book unhedged vs following the advice, and each position's hedge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    book = book_path(paths)
    fig, (ax1, ax3, ax2) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2.2, 1.4]}
    )
    try:
        if len(book.ts):
            x = _sample(book.ts)
            days = (book.ts[x] - book.ts[0]) / DAY_MS
            ax1.plot(days, book.unhedged[x], label="unhedged", color="#c0392b", lw=1.2)
            ax1.plot(days, book.hedged[x], label="following the advice", color="#2471a3", lw=1.2)
            ax1.axhline(0, color="#888", lw=0.6)
            ax1.legend(loc="best")
            t_first = int(book.ts[0])
            colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
            for n, (pid, p) in enumerate(sorted(paths.items())[:8]):
                if not len(p.ts):
                    continue
                xi = _sample(p.ts)
                d = (p.ts[xi] - t_first) / DAY_MS
                c = colors[n % len(colors)]
                ax3.plot(d, p.unhedged[xi], color=c, lw=0.8, ls="--")
                ax3.plot(d, p.hedged[xi], color=c, lw=1.0, label=pid)
            ax3.axhline(0, color="#888", lw=0.6)
            if paths:
                ax3.legend(
                    loc="upper left",
                    fontsize=7,
                    ncol=4,
                    title="solid: advice, dashed: unhedged",
                    title_fontsize=7,
                )
            per_pid: dict[str, tuple[list[float], list[float]]] = {}
            for i in range(len(log)):
                if log.action[i] < 0:
                    continue
                xs, ys = per_pid.setdefault(log.pid[i], ([], []))
                xs.append((log.now[i] - t_first) / DAY_MS)
                ys.append(log.hedge_pct[i] * 100)
            for pid, (xs, ys) in sorted(per_pid.items())[:8]:
                end = (int(book.ts[-1]) - t_first) / DAY_MS
                ax2.step([*xs, end], [*ys, ys[-1]], where="post", label=pid, lw=1)
            if per_pid:
                ax2.legend(loc="upper left", fontsize=7, ncol=4)
        ax1.set_title(title)
        ax1.set_ylabel("book P&L, USD")
        ax3.set_ylabel("P&L per position")
        ax2.set_ylabel("hedged %")
        ax2.set_ylim(-5, 105)
        ax2.set_xlabel("days since the start")
        fig.tight_layout()
        fig.savefig(path, dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)


def _sample(ts: NDArray[np.int64], limit: int = 4000) -> NDArray[np.int64]:
    n = len(ts)
    if n <= limit:
        return np.arange(n)
    return np.unique(np.concatenate((np.linspace(0, n - 1, limit).astype(np.int64), [n - 1])))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    if v is None:
        return "–"
    return html.escape(str(v))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(path: Path, report: Mapping[str, Any], chart_name: str) -> None:
    r = report
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>stream-risk replay</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
        "</style></head><body>",
        "<h1>stream-risk replay</h1>",
    ]
    inputs = r.get("inputs", {})
    parts.append("<h2>Inputs</h2>" + _table([{"what": k, "value": v} for k, v in inputs.items()]))
    if r.get("assumptions"):
        parts.append(
            "<h2>Assumptions</h2><ul>"
            + "".join(f"<li>{html.escape(a)}</li>" for a in r["assumptions"])
            + "</ul>"
        )
    parts.append(f"<h2>P&amp;L</h2><img src='{html.escape(chart_name)}' style='max-width:100%'>")
    book = r["pnl"]["book"]
    parts.append(
        _table(
            [
                {"": "book", **{k: v for k, v in book.items() if k != "worst_move_survived"}},
                *(
                    {"": pid, **{k: v for k, v in p.items() if k != "worst_move_survived"}}
                    for pid, p in r["pnl"]["positions"].items()
                ),
            ]
        )
    )
    worst = [
        {"position": pid, **p["worst_move_survived"]}
        for pid, p in r["pnl"]["positions"].items()
        if p["worst_move_survived"]
    ]
    parts.append("<h3>Worst move survived</h3>" + _table(worst))
    acts = r["actions"]
    parts.append(
        "<h2>Actions</h2>"
        + _table([{"action": a, "published": n} for a, n in acts["by_action"].items()])
        + _table([{"trigger": t, "published": n} for t, n in acts["by_trigger"].items()])
        + f"<p>{acts['published']} actions published, {acts['tombstones']} tombstones.</p>"
    )
    parts.append(
        "<h2>Time in each risk band</h2>"
        + _table([{"band": b, "hours": h} for b, h in r["time_in_band_hours"].items()])
    )
    hc = r["hedge_cost"]
    parts.append(
        f"<h2>Hedge cost</h2><p>Total ${hc['total_usd']:,.2f} over {hc['trades']} trades.</p>"
        + _table([{"day": d, "usd": v} for d, v in hc["per_day_usd"].items()])
    )
    to = r.get("turnover")
    if to:
        parts.append(
            f"<h2>Turnover</h2><p>{to['hedge_changes']} hedge changes trading "
            f"${to['traded_notional_usd']:,.2f} of notional for ${to['cost_usd']:,.2f}; "
            f"the advised hedge fraction changed {to['hedge_pct_changes']} times.</p>"
        )
    if r.get("sweep"):
        rows = [{"policy": s["label"], **s["summary"]} for s in r["sweep"]]
        parts.append("<h2>Policy sweep</h2>" + _table(rows))
    parts.append(
        "<h2>Engine</h2>" + _table([{"counter": k, "value": v} for k, v in r["engine"].items()])
    )
    parts.append("</body></html>\n")
    path.write_text("".join(parts), encoding="utf-8")
