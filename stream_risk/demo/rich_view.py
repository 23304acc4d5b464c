"""The live terminal view (rich): the market, the positions by risk and a ticker of new
actions, redrawn 4 times a second from a `DemoContext`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

from stream_risk.demo.desk import alert_line
from stream_risk.demo.view import (
    DemoContext,
    fmt_price,
    fmt_qty,
    fmt_usd,
    hedge_text,
)
from stream_risk.demo.watcher import ActionEvent

if TYPE_CHECKING:
    from rich.console import JustifyMethod
    from rich.table import Table

#: (header, justify, the console width from which it shows): the columns that matter first
#: show at 80 columns, the rest when the terminal is wider.
Column = tuple[str, "JustifyMethod", int]
_MARKET_COLUMNS: Final[tuple[Column, ...]] = (
    ("asset", "left", 0),
    ("price", "right", 0),
    ("chg", "right", 0),
    ("vol 1d", "right", 0),
    ("spread", "right", 110),
    ("funding", "right", 110),
    ("depth bid/ask", "right", 110),
    ("feed", "left", 0),
)
_POSITION_COLUMNS: Final[tuple[Column, ...]] = (
    ("position", "left", 0),
    ("size", "right", 100),
    ("notional", "right", 100),
    ("action", "left", 0),
    ("score", "right", 0),
    ("loss/age/vol/liq", "right", 140),
    ("hedge", "left", 0),
    ("P&L -5% / +5%", "right", 120),
    ("stale", "left", 0),
)
#: Below this height the market table and the ticker of actions give way to the positions.
TALL: Final = 40
#: Alert lines shown (the latest first).
ALERT_LINES: Final = 3


class RichView:
    """A live terminal view: market, positions by risk, and a ticker of new actions."""

    def __init__(self, ctx: DemoContext, console: Any) -> None:
        from rich.live import Live

        self.ctx = ctx
        self.console = console
        self.live = Live(
            console=console, refresh_per_second=4, transient=False, get_renderable=self.render
        )

    def say(self, text: str) -> None:
        self.console.print(f"[bold]stream-risk demo:[/] {text}")

    def on_event(self, ev: ActionEvent) -> None:
        pass

    def on_alert(self, alert: dict[str, Any]) -> None:
        pass  # drawn from `ctx.alerts` at the next refresh

    async def run(self, stop: asyncio.Event) -> None:
        self.live.start()
        try:
            await stop.wait()
        finally:
            self.live.refresh()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.live.stop()

    # ------------------------------------------------------------------ rendering
    def render(self) -> Any:
        """The view for the console's size: at 80×24 the header, the limit, the positions
        by risk (position, action, score, hedge, stale) and the latest alerts; wider and
        taller terminals get the market, more columns and the ticker of actions."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        ctx = self.ctx
        f, w = ctx.feeder, ctx.watcher
        width, height = self.console.size
        tall = height >= TALL
        # header: two lines, cut (never wrapped) to the width
        up = ctx.elapsed()
        of = f" of {ctx.opts.duration:.0f}s" if ctx.opts.duration else ""
        first = ctx.first_action_s()
        engine = (
            "[green]ready[/]"
            if ctx.ready
            else ("[yellow]starting[/]" if ctx.ready is None else "[red]not ready[/]")
        )
        regime_style = {"calm": "green", "normal": "cyan", "stress": "bold red"}[f.market.regime]
        head = [
            _line(
                f"[bold]stream-risk demo[/]  engine {engine} · up {up:.0f}s{of} · first action "
                + (f"{first:.1f}s" if first is not None else "…")
                + f" · regime [{regime_style}]{f.market.regime}[/]"
                + ("  [yellow]stopping…[/]" if ctx.stopping else "")
            ),
            _line(
                f"[bold]dashboard[/] [link={ctx.dashboard}]{ctx.dashboard}[/link] · "
                f"broker {ctx.broker} (embedded)"
            ),
        ]
        # the desk: the limit, whether it is broken, the active alerts
        desk = Text(no_wrap=True, overflow="ellipsis")
        status = ctx.limit_status()
        desk.append("limit ", style="bold")
        if status is None:
            desk.append("none set", style="dim")
        else:
            desk.append(status, style="bold white on red" if status.endswith("BREACHED") else "")
        active = len(ctx.alerts.active) if ctx.alerts is not None else 0
        desk.append(f" · {active} active alert{'' if active == 1 else 's'}")
        parts: list[Any] = [*head, desk]
        # market (tall terminals)
        if tall:
            mt = _columns_table(f"market · regime {f.market.regime}", _MARKET_COLUMNS, width)
            for sym, a in f.market.assets.items():
                open_px = f.opening_prices.get(sym) or a.spec.price
                chg = (a.price / open_px - 1) * 100
                _add(
                    mt,
                    _MARKET_COLUMNS,
                    width,
                    sym,
                    fmt_price(a.price),
                    Text(f"{chg:+.2f}%", style="green" if chg >= 0 else "red"),
                    Text(f"{a.vol * 100:.1f}%", style="red" if a.vol >= 0.08 else ""),
                    f"{a.spread_bps:.1f} bps",
                    Text(f"{a.funding * 100:+.1f}%", style="green" if a.funding >= 0 else "red"),
                    f"{fmt_usd(a.bid_depth_usd)} / {fmt_usd(a.ask_depth_usd)}",
                    Text("DOWN", style="bold red")
                    if f.market.in_outage(sym)
                    else Text("live", "dim"),
                )
            parts += [Text(""), mt]
        # alerts (the latest first)
        alerts = list(ctx.alerts.recent)[-ALERT_LINES:][::-1] if ctx.alerts is not None else []
        alert_lines: list[Any] = [Text("alerts", style="bold")]
        for al in alerts:
            style = "red" if al.get("state") == "fired" else "green"
            alert_lines.append(Text(alert_line(al), style=style, no_wrap=True, overflow="ellipsis"))
        if not alerts:
            alert_lines.append(Text("none yet", style="dim"))
        # ticker of actions (tall terminals)
        ticker: list[Any] = []
        if tall:
            ticker = [Text(""), self._ticker(Table)]
        foot = _line(
            f"[dim]{f.ticks_sent} ticks · {f.position_updates} position updates · "
            f"{f.closes} closes · {w.received} actions · Ctrl-C to stop · logs: "
            f"{ctx.log_file}[/]"
        )
        # positions: what the other parts leave of the height
        used = sum(_height(p) for p in parts) + len(alert_lines) + sum(map(_height, ticker)) + 1
        budget = max(3, height - used - 4)  # blank, title, header, "… more"
        rows = sorted(w.latest.items(), key=lambda kv: -float(kv[1].get("risk_score") or 0))
        pt = _columns_table(
            f"positions by risk ({len(w.latest)} with actions)", _POSITION_COLUMNS, width
        )
        shown = rows if len(rows) <= budget + 1 else rows[:budget]
        for pid, act in shown:
            pos = f.book.positions.get(pid)
            size = pos.size if pos is not None else 0.0
            b = act.get("risk_breakdown") or {}
            p = act.get("pnl_scenarios") or {}
            _add(
                pt,
                _POSITION_COLUMNS,
                width,
                pid,
                Text(fmt_qty(size), style="green" if size > 0 else "red"),
                fmt_usd(act.get("position_notional_usd")),
                _action_text(str(act.get("action"))),
                f"{float(act.get('risk_score') or 0):.1f}",
                "/".join(
                    f"{float(b.get(k) or 0):.0f}"
                    for k in (
                        "loss_severity",
                        "position_age",
                        "volatility_regime",
                        "size_vs_liquidity",
                    )
                ),
                hedge_text(act),
                f"{fmt_usd(p.get('move_down_5pct'), True)} / "
                f"{fmt_usd(p.get('move_up_5pct'), True)}",
                Text("STALE", style="bold red") if act.get("stale_market_data") else "",
            )
        more = Text(f"… {len(rows) - len(shown)} more on the dashboard", style="dim")
        tail = [more] if len(rows) > len(shown) else []
        return Group(*parts, Text(""), pt, *tail, *alert_lines, *ticker, foot)

    def _ticker(self, table_type: type[Table]) -> Table:
        from rich.text import Text

        w = self.ctx.watcher
        tt = table_type(
            title="new actions", title_justify="left", expand=True, box=None, show_header=False
        )
        tt.add_column("t", style="dim", width=8, no_wrap=True)
        tt.add_column("position", width=10, no_wrap=True)
        tt.add_column("action", width=30, no_wrap=True)
        tt.add_column("detail", no_wrap=True, overflow="ellipsis")
        for ev in list(w.ticker)[-8:][::-1]:
            at = time.time() - (time.monotonic() - ev.received_at)
            t = time.strftime("%H:%M:%S", time.localtime(at))
            if ev.action is None:
                tt.add_row(t, ev.position_id, Text("closed", style="dim"), "")
                continue
            prev = ev.prev.get("action") if ev.prev else None
            label = Text()
            if prev and prev != ev.action.get("action"):
                label.append_text(_action_text(prev))
                label.append(" → ")
            label.append_text(_action_text(str(ev.action.get("action"))))
            tt.add_row(
                t,
                ev.position_id,
                label,
                f"score {float(ev.action.get('risk_score') or 0):.1f} · {hedge_text(ev.action)}"
                f" · {ev.action.get('trigger')}"
                + (" · STALE" if ev.action.get("stale_market_data") else ""),
            )
        return tt


def _line(markup: str) -> Any:
    """One line of markup, cut with an ellipsis at the console's width (never wrapped)."""
    from rich.text import Text

    text = Text.from_markup(markup)
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _height(part: Any) -> int:
    """Lines a part takes: 1 for a line of text; a table its rows, title and header."""
    from rich.table import Table

    if isinstance(part, Table):
        return part.row_count + (1 if part.title else 0) + (1 if part.show_header else 0)
    return 1


def _shown(columns: tuple[Column, ...], width: int) -> list[int]:
    return [i for i, (_, _, from_width) in enumerate(columns) if width >= from_width]


def _add(table: Table, columns: tuple[Column, ...], width: int, *cells: Any) -> None:
    """A row of the columns shown at this width (`cells` are every column's)."""
    table.add_row(*(cells[i] for i in _shown(columns, width)))


_ACTION_STYLES: Final = {
    "HOLD": "bold white on grey30",
    "REDUCE": "bold black on yellow",
    "HEDGE_PARTIAL": "bold black on dark_orange",
    "HEDGE_FULL": "bold white on red",
    "LIQUIDATE": "bold white on magenta",
}


def _action_text(action: str) -> Any:
    from rich.text import Text

    return Text(f" {action} ", style=_ACTION_STYLES.get(action, ""))


def _columns_table(title: str, columns: tuple[Column, ...], width: int) -> Table:
    """A full-width, borderless table titled on the left, with dim bold headers: the
    columns shown at this console width, each one line (cut, never wrapped)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", expand=True, box=None, header_style="bold dim")
    for i in _shown(columns, width):
        col, just, _ = columns[i]
        table.add_column(col, justify=just, no_wrap=True, overflow="ellipsis")
    return table
