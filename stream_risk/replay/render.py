"""The backtest report as files: report.json, report.html and chart.png (the P&L paths)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from stream_risk.replay.pnl import PnlPath, book_path
from stream_risk.replay.runner import ActionLog

DAY_MS = 86_400_000


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def write_chart(
    path: Path,
    paths: Mapping[str, PnlPath],
    log: ActionLog,
    title: str,
    net: PnlPath | None = None,
) -> None:
    """P&L of the book unhedged vs following the advice (each position hedged on its own)
    and, given `net` (`net_pnl.NetHedging.book`), vs hedging each asset's net position;
    each position's hedge."""
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
            ax1.plot(
                days,
                book.hedged[x],
                label="following the advice (each position hedged on its own)",
                color="#2471a3",
                lw=1.2,
            )
            if net is not None and len(net.ts):
                xn = _sample(net.ts)
                ax1.plot(
                    (net.ts[xn] - book.ts[0]) / DAY_MS,
                    net.hedged[xn],
                    label="net hedging (each asset's net position)",
                    color="#1e8449",
                    lw=1.2,
                    ls="-.",
                )
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
            + f"<p>Net hedging saves ${nh['saving_usd']:,.2f}{pct} of hedge cost. "
            "Funding is not counted on either path (spread only).</p>"
            + _table([{"asset": a, **v} for a, v in nh["net_by_asset"].items()])
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
