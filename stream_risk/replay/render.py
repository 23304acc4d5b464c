"""The backtest report as files: report.json, report.html, chart.png (the P&L paths on a
UTC date axis) and, for a sweep, sweep.png. Every figure has its unit: USD amounts as `$`,
hours, bps, %; no table cell is a Python repr (dicts and lists are joined as text)."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from stream_risk.replay.pnl import PnlPath, book_path
from stream_risk.replay.runner import ActionLog


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def _dates(ts: NDArray[np.int64]) -> NDArray[np.datetime64]:
    """Epoch ms as datetime64 (UTC), which matplotlib puts on a date axis."""
    return np.asarray(ts, dtype="datetime64[ms]")


def _date_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(tz=dt.UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=dt.UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)


def _usd_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: usd(v, 0)))


def write_chart(
    path: Path,
    paths: Mapping[str, PnlPath],
    log: ActionLog,
    title: str,
    net: PnlPath | None = None,
    static: PnlPath | None = None,
) -> None:
    """The report's main chart, on a UTC date axis: the book's P&L (USD) unhedged, following
    the advice (each position hedged on its own), the static 50 % hedge and, given `net`
    (`net_pnl.NetHedging.book`), hedging each asset's net position; P&L per position; each
    position's hedge (%); the hedge notional traded so far (USD)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    book = book_path(paths)
    fig, (ax1, ax3, ax2, ax4) = plt.subplots(
        4, 1, figsize=(11, 11), sharex=True, gridspec_kw={"height_ratios": [3, 2.2, 1.4, 1.4]}
    )
    try:
        if len(book.ts):
            x = _sample(book.ts)
            ax1.plot(_dates(book.ts[x]), book.unhedged[x], label="unhedged", color="#c0392b")
            ax1.plot(
                _dates(book.ts[x]),
                book.hedged[x],
                label="following the advice (each position hedged on its own)",
                color="#2471a3",
                lw=1.2,
            )
            if static is not None and len(static.ts):
                xs_ = _sample(static.ts)
                ax1.plot(
                    _dates(static.ts[xs_]),
                    static.hedged[xs_],
                    label="static 50 % hedge (benchmark)",
                    color="#7d3c98",
                    lw=1.1,
                    ls="--",
                )
            if net is not None and len(net.ts):
                xn = _sample(net.ts)
                ax1.plot(
                    _dates(net.ts[xn]),
                    net.hedged[xn],
                    label="net hedging (each asset's net position)",
                    color="#1e8449",
                    lw=1.2,
                    ls="-.",
                )
            ax1.axhline(0, color="#888", lw=0.6)
            ax1.legend(loc="best", fontsize=8)
            colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
            for n, (pid, p) in enumerate(sorted(paths.items())[:8]):
                if not len(p.ts):
                    continue
                xi = _sample(p.ts)
                c = colors[n % len(colors)]
                ax3.plot(_dates(p.ts[xi]), p.unhedged[xi], color=c, lw=0.8, ls="--")
                ax3.plot(_dates(p.ts[xi]), p.hedged[xi], color=c, lw=1.0, label=pid)
            ax3.axhline(0, color="#888", lw=0.6)
            if paths:
                ax3.legend(
                    loc="upper left",
                    fontsize=7,
                    ncol=4,
                    title="solid: advice, dashed: unhedged",
                    title_fontsize=7,
                )
            per_pid: dict[str, tuple[list[int], list[float]]] = {}
            for i in range(len(log)):
                if log.action[i] < 0:
                    continue
                xs, ys = per_pid.setdefault(log.pid[i], ([], []))
                xs.append(log.now[i])
                ys.append(log.hedge_pct[i] * 100)
            end = int(book.ts[-1])
            for pid, (xs, ys) in sorted(per_pid.items())[:8]:
                t = np.array([*xs, max(end, xs[-1])], dtype=np.int64)
                ax2.step(_dates(t), [*ys, ys[-1]], where="post", label=pid, lw=1)
            if per_pid:
                ax2.legend(loc="upper left", fontsize=7, ncol=4)
            ax4.plot(
                _dates(book.ts[x]),
                np.cumsum(book.traded)[x],
                color="#2471a3",
                label="following the advice",
            )
            if static is not None and len(static.ts):
                ax4.plot(
                    _dates(static.ts),
                    np.cumsum(static.traded),
                    color="#7d3c98",
                    ls="--",
                    label="static 50 % hedge",
                )
            ax4.legend(loc="upper left", fontsize=7)
        ax1.set_title(title)
        ax1.set_ylabel("book P&L (USD)")
        ax3.set_ylabel("P&L per position (USD)")
        ax2.set_ylabel("hedged (%)")
        ax2.set_ylim(-5, 105)
        ax4.set_ylabel("hedge traded,\nnotional (USD)")
        for ax in (ax1, ax3, ax4):
            _usd_axis(ax)
        _date_axis(ax4)
        ax4.set_xlabel("time (UTC)")
        fig.tight_layout()
        fig.savefig(path, dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)


def write_sweep_chart(path: Path, rows: Sequence[Mapping[str, Any]], rank_by: str) -> None:
    """The runs of a sweep side by side, best first (`rows` ranked): final P&L following
    the advice and max drawdown (USD), and the hedge cost split into spread and funding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    labels = [str(r["label"]) for r in rows][::-1]
    s = [r["summary"] for r in rows][::-1]
    y = np.arange(len(rows))
    height = max(3.0, 0.35 * len(rows) + 1.5)
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, height), sharey=True)
    try:
        a1.barh(y, [v["final_pnl_hedged"] for v in s], color="#2471a3")
        if s:
            a1.axvline(s[0]["final_pnl_unhedged"], color="#c0392b", ls="--", label="unhedged")
            a1.legend(loc="lower right", fontsize=7)
        a1.set_xlabel("final P&L following the advice (USD)")
        a2.barh(y, [v["max_drawdown_hedged"] for v in s], color="#b9770e")
        a2.set_xlabel("max drawdown following the advice (USD)")
        a3.barh(y + 0.2, [v["spread_cost_usd"] for v in s], 0.4, color="#566573", label="spread")
        a3.barh(
            y - 0.2,
            [v["funding_cost_usd"] for v in s],
            0.4,
            color="#48c9b0",
            label="funding (< 0: received)",
        )
        a3.legend(loc="lower right", fontsize=7)
        a3.set_xlabel("hedge cost (USD)")
        a1.set_yticks(y, labels, fontsize=8)
        for ax in (a1, a2, a3):
            ax.axvline(0, color="#888", lw=0.6)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: usd(v, 0)))
            ax.xaxis.set_major_locator(MaxNLocator(4))
        fig.suptitle(f"policy sweep, best first by {rank_by}")
        fig.tight_layout()
        fig.savefig(path, dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)


def _sample(ts: NDArray[np.int64], limit: int = 4000) -> NDArray[np.int64]:
    n = len(ts)
    if n <= limit:
        return np.arange(n)
    return np.unique(np.concatenate((np.linspace(0, n - 1, limit).astype(np.int64), [n - 1])))


def usd(v: float | None, decimals: int = 2) -> str:
    """`$1,234.56`, `−$12.00`; `–` for none."""
    if v is None or v != v:
        return "–"
    sign = "−" if round(v, decimals) < 0 else ""  # no "−$0.00"
    return f"{sign}${abs(v):,.{decimals}f}"


def _num(v: float | None, fmt: str = ",.2f", unit: str = "") -> str:
    if v is None or v != v:
        return "–"
    return f"{v:{fmt}}{unit}"


#: Keys whose values are USD amounts, beside those ending in `_usd`.
_USD_KEYS = ("final_pnl", "max_drawdown", "drawdown_saved", "pnl_", "price_", "net_final")


def _is_usd(key: str) -> bool:
    return key.endswith("_usd") or key.startswith(_USD_KEYS)


def _label(key: str) -> str:
    """A column key as a header with its unit: `hedge_cost_usd` -> `hedge cost ($)`."""
    unit = ""
    k = key
    if k.endswith("_usd"):
        k, unit = k[: -len("_usd")], " ($)"
    elif _is_usd(k):
        unit = " ($)"
    elif k.endswith("_pct"):
        k, unit = k[: -len("_pct")], " (%)"
    elif k.endswith("_hours"):
        k, unit = k[: -len("_hours")], " (h)"
    elif k.endswith("_bps"):
        k, unit = k[: -len("_bps")], " (bps)"
    return k.replace("_", " ").replace("pnl", "P&L") + unit


def _fmt(v: Any, key: str = "") -> str:
    """A cell: USD amounts as `$`, other numbers with separators, never a Python repr of
    a dict or list (those are joined as `k v, ...`)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return usd(v) if _is_usd(key) else _num(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, Mapping):
        return html.escape(", ".join(f"{k} {_plain(x)}" for k, x in v.items()))
    if isinstance(v, list | tuple):
        return html.escape(", ".join(_plain(x) for x in v))
    return html.escape(str(v))


def _plain(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {_plain(x)}" for k, x in v.items())
    return str(v)


def _table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """An HTML table of `rows` (keys as columns, headers with units from the keys)."""
    if not rows:
        return "<p>(none)</p>"
    cols = list(columns or rows[0].keys())
    names = {c: (headers or {}).get(c, _label(c)) for c in cols}
    head = "".join(f"<th>{html.escape(names[c])}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c), c)}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rows_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table of cells already formatted (escaped here)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _span(a: str | None, b: str | None) -> str:
    if a is None or b is None:
        return "–"
    return f"{a[:16].replace('T', ' ')} → {b[:16].replace('T', ' ')}"


def paths_table(paths: Mapping[str, Mapping[str, Any]]) -> str:
    """The three paths side by side, one row per figure, units in every row."""
    keys = list(paths)
    ps = [paths[k] for k in keys]

    def bps(p: Mapping[str, Any]) -> str:
        t = p["traded_notional_usd"]
        return _num(p["hedge_cost_usd"] / t * 1e4, ",.2f", " bps") if t > 0 else "–"

    def hours(v: float) -> str:
        return _num(v, ",.1f", " h")

    rows: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
        ("final P&L, after hedge costs", lambda p: usd(p["final_pnl_usd"])),
        ("hedge cost: spread", lambda p: usd(p["spread_cost_usd"])),
        ("hedge cost: funding (− received)", lambda p: usd(p["funding_cost_usd"])),
        ("hedge cost: total", lambda p: usd(p["hedge_cost_usd"])),
        ("hedge cost per notional traded", bps),
        ("hedge changes", lambda p: f"{p['hedge_changes']:,}"),
        ("notional traded", lambda p: usd(p["traded_notional_usd"])),
        ("max drawdown", lambda p: usd(p["max_drawdown_usd"])),
        (
            "max drawdown: peak → trough (UTC)",
            lambda p: _span(p["max_drawdown_peak"], p["max_drawdown_trough"]),
        ),
        ("longest time under water", lambda p: hours(p["longest_under_water_hours"])),
        (
            "longest under water: from → to (UTC)",
            lambda p: _span(p["longest_under_water_from"], p["longest_under_water_to"]),
        ),
        ("total time under water", lambda p: hours(p["total_under_water_hours"])),
        ("daily P&L volatility (std)", lambda p: usd(p["daily_vol_usd"])),
        ("return/risk (annualised, Sharpe-like)", lambda p: _num(p["return_risk"])),
    ]
    return _rows_table(
        ["", *(str(p["name"]) for p in ps)], [[n, *(f(p) for p in ps)] for n, f in rows]
    )


def daily_table(daily: Sequence[Mapping[str, Any]]) -> str:
    header = [
        "day (UTC)",
        "unhedged ($)",
        "following the advice ($)",
        "static 50 % hedge ($)",
        "advice: spread paid ($)",
        "advice: funding paid ($)",
        "static: spread paid ($)",
        "static: funding paid ($)",
    ]
    keys = [
        "unhedged_usd",
        "advice_usd",
        "static_usd",
        "advice_spread_usd",
        "advice_funding_usd",
        "static_spread_usd",
        "static_funding_usd",
    ]
    return _rows_table(header, [[str(d["day"]), *(usd(d[k]) for k in keys)] for d in daily])


#: The sweep table's columns: (summary key, header).
SWEEP_COLUMNS = (
    ("final_pnl_hedged", "final P&L, advice ($)"),
    ("return_risk", "return/risk"),
    ("daily_vol_usd", "daily vol ($)"),
    ("max_drawdown_hedged", "max drawdown ($)"),
    ("drawdown_saved", "drawdown saved ($)"),
    ("hedge_cost_usd", "hedge cost ($)"),
    ("spread_cost_usd", "spread ($)"),
    ("funding_cost_usd", "funding ($)"),
    ("hedge_changes", "hedge changes"),
    ("traded_notional_usd", "notional traded ($)"),
    ("net_final_pnl", "net hedging: final P&L ($)"),
    ("net_hedge_cost_usd", "net hedging: cost ($)"),
    ("actions_published", "actions"),
)


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for r in rows:
        s = r["summary"]
        cells = [str(r.get("rank", "")), str(r["label"])]
        for k, _ in SWEEP_COLUMNS:
            v = s.get(k)
            if k == "return_risk":
                cells.append(_num(v))
            elif isinstance(v, int) and not isinstance(v, bool):
                cells.append(f"{v:,}")
            else:
                cells.append(usd(v))
        out.append(cells)
    return _rows_table(["rank", "policy", *(h for _, h in SWEEP_COLUMNS)], out)


def _no_worst(p: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k != "worst_move_survived"}


def write_html(
    path: Path, report: Mapping[str, Any], chart_name: str, sweep_chart: str | None = None
) -> None:
    r = report
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>stream-risk replay</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1150px}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
        ".note{color:#555;font-size:90%}</style></head><body>",
        "<h1>stream-risk replay</h1>",
    ]
    inputs = r.get("inputs", {})
    parts.append(
        "<h2>Inputs</h2>"
        + _table([{"what": k, "value": v} for k, v in inputs.items()], headers={"value": "value"})
    )
    if r.get("assumptions"):
        parts.append(
            "<h2>Assumptions</h2><ul>"
            + "".join(f"<li>{html.escape(str(a))}</li>" for a in r["assumptions"])
            + "</ul>"
        )
    parts.append(f"<h2>P&amp;L</h2><img src='{html.escape(chart_name)}' style='max-width:100%'>")
    if r.get("paths"):
        parts.append(
            "<h3>Unhedged, following the advice, and a static 50 % hedge</h3>"
            + paths_table(r["paths"])
            + "<p class='note'>All amounts in USD. Hedge cost: the spread on every hedge "
            "trade (|Δ hedge| × price × spot_spread_bps / 10,000) and funding while a perp "
            "hedge is held (hedge notional × annual funding rate × elapsed / 365 days; a "
            "short hedge receives positive funding; spot hedges pay none). Under water: "
            "below the running peak (the start, $0, counts). Volatility: the standard "
            "deviation of daily P&L (UTC days). Return/risk: mean daily P&L / its standard "
            "deviation × √365 (Sharpe-like, no risk-free rate; needs 2 days). The static "
            "benchmark hedges 50 % of every position from its opening under the same cost "
            "rules.</p>"
        )
    if r.get("daily"):
        parts.append("<h3>Daily P&amp;L (UTC days)</h3>" + daily_table(r["daily"]))
    parts.append(
        "<h3>Per position</h3>"
        + _table(
            [
                {
                    "": "book",
                    **{k: v for k, v in r["pnl"]["book"].items() if k != "worst_move_survived"},
                },
                *({"": pid, **_no_worst(p)} for pid, p in r["pnl"]["positions"].items()),
            ]
        )
    )
    worst = [
        {"position": pid, **p["worst_move_survived"]}
        for pid, p in r["pnl"]["positions"].items()
        if p["worst_move_survived"]
    ]
    parts.append("<h3>Worst move survived</h3>" + _table(worst, headers={"move_pct": "move (%)"}))
    acts = r["actions"]
    parts.append(
        "<h2>Actions</h2>"
        + _table([{"action": a, "published": n} for a, n in acts["by_action"].items()])
        + _table([{"trigger": t, "published": n} for t, n in acts["by_trigger"].items()])
        + f"<p>{acts['published']} actions published, {acts['tombstones']} tombstones.</p>"
    )
    parts.append(
        "<h2>Time in each risk band</h2>"
        + _table(
            [{"band": b, "hours": h} for b, h in r["time_in_band_hours"].items()],
            headers={"hours": "time (h)"},
        )
    )
    hc = r["hedge_cost"]
    parts.append(
        f"<h2>Hedge cost</h2><p>Total {usd(hc['total_usd'])} over {hc['trades']} trades: "
        f"spread {usd(hc.get('spread_usd', hc['total_usd']))}, funding "
        f"{usd(hc.get('funding_usd', 0.0))} (negative: received).</p>"
        + _table(
            [{"day": d, "cost_usd": v} for d, v in hc["per_day_usd"].items()],
            headers={"day": "day (UTC)", "cost_usd": "hedge cost: spread + funding ($)"},
        )
    )
    nh = r.get("net_hedging")
    if nh:
        cols = (
            "hedge_cost_usd",
            "spread_cost_usd",
            "funding_cost_usd",
            "hedge_changes",
            "traded_notional_usd",
            "final_pnl",
            "max_drawdown",
        )
        pct = "" if nh["saving_pct"] is None else f" ({nh['saving_pct']:.1f} %)"
        parts.append(
            "<h2>Net hedging vs each position hedged on its own</h2>"
            + _table(
                [
                    {"": "each position hedged on its own", **nh["per_position"]},
                    {"": "net hedging (per asset)", **nh["net"]},
                ],
                ["", *cols],
            )
            + f"<p>Net hedging saves {usd(nh['saving_usd'])}{pct} of hedge cost (spread and "
            "funding on both paths).</p>"
            + _table(
                [{"asset": a, **v} for a, v in nh["net_by_asset"].items()],
                headers={"held_at_end": "hedge held at end (asset units; + sells)"},
            )
        )
    to = r.get("turnover")
    if to:
        parts.append(
            f"<h2>Turnover</h2><p>{to['hedge_changes']} hedge changes trading "
            f"{usd(to['traded_notional_usd'])} of notional for {usd(to['cost_usd'])}; "
            f"the advised hedge fraction changed {to['hedge_pct_changes']} times.</p>"
        )
    if r.get("sweep"):
        sw = r.get("sweep_ranking") or {}
        parts.append(
            "<h2>Policy sweep</h2>"
            + (
                f"<p>Best first by {html.escape(str(sw.get('rank_by')))}: "
                f"{html.escape(str(sw.get('meaning')))}.</p>"
                if sw
                else ""
            )
            + sweep_table(r["sweep"])
        )
        for note in sw.get("notes", []):
            parts.append(f"<p class='note'><b>{html.escape(str(note))}</b></p>")
        if sweep_chart:
            parts.append(f"<img src='{html.escape(sweep_chart)}' style='max-width:100%'>")
    parts.append(
        "<h2>Engine</h2>"
        + _table(
            [{"counter": k, "value": v} for k, v in r["engine"].items()], headers={"value": "value"}
        )
    )
    parts.append("</body></html>\n")
    path.write_text("".join(parts), encoding="utf-8")
