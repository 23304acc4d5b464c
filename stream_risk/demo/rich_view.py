"""The live terminal view (rich): the market, the positions by risk and a ticker of new
actions, redrawn 4 times a second from a `DemoContext`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

from stream_risk.demo.view import (
    ACTION_ORDER,
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

_MARKET_COLUMNS: Final[tuple[tuple[str, JustifyMethod], ...]] = (
    ("asset", "left"),
    ("price", "right"),
    ("chg", "right"),
    ("vol 1d", "right"),
    ("spread", "right"),
    ("funding", "right"),
    ("depth bid/ask", "right"),
    ("feed", "left"),
)
_POSITION_COLUMNS: Final[tuple[tuple[str, JustifyMethod], ...]] = (
    ("position", "left"),
    ("size", "right"),
    ("notional", "right"),
    ("action", "left"),
    ("score", "right"),
    ("loss/age/vol/liq", "right"),
    ("hedge", "left"),
    ("P&L -5% / +5%", "right"),
    ("", "left"),
)


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
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        ctx = self.ctx
        f, w = ctx.feeder, ctx.watcher
        height = self.console.size.height
        # header
        up = ctx.elapsed()
        of = f" of {ctx.opts.duration:.0f}s" if ctx.opts.duration else ""
        first = ctx.first_action_s()
        engine = (
            "[green]ready[/]"
            if ctx.ready
            else ("[yellow]starting[/]" if ctx.ready is None else "[red]not ready[/]")
        )
        head = Text.from_markup(
            f"[bold]dashboard[/] [link={ctx.dashboard}]{ctx.dashboard}[/link]   "
            f"[bold]engine[/] {engine}   [bold]broker[/] {ctx.broker} (embedded)   "
            f"[bold]up[/] {up:.0f}s{of}   [bold]first action[/] "
            + (f"{first:.1f}s" if first is not None else "…")
            + ("   [yellow]stopping…[/]" if ctx.stopping else "")
        )
        # market
        regime_style = {"calm": "green", "normal": "cyan", "stress": "bold red"}[f.market.regime]
        mt = _columns_table(
            f"market · regime [{regime_style}]{f.market.regime}[/]", _MARKET_COLUMNS
        )
        for sym, a in f.market.assets.items():
            open_px = f.opening_prices.get(sym) or a.spec.price
            chg = (a.price / open_px - 1) * 100
            mt.add_row(
                sym,
                fmt_price(a.price),
                Text(f"{chg:+.2f}%", style="green" if chg >= 0 else "red"),
                Text(f"{a.vol * 100:.1f}%", style="red" if a.vol >= 0.08 else ""),
                f"{a.spread_bps:.1f} bps",
                Text(f"{a.funding * 100:+.1f}%", style="green" if a.funding >= 0 else "red"),
                f"{fmt_usd(a.bid_depth_usd)} / {fmt_usd(a.ask_depth_usd)}",
                Text("DOWN", style="bold red") if f.market.in_outage(sym) else Text("live", "dim"),
            )
        # positions
        budget = max(4, height - len(f.market.assets) - 24)
        rows = sorted(w.latest.items(), key=lambda kv: -float(kv[1].get("risk_score") or 0))
        pt = _columns_table(f"positions by risk ({len(w.latest)} with actions)", _POSITION_COLUMNS)
        for pid, act in rows[:budget]:
            pos = f.book.positions.get(pid)
            size = pos.size if pos is not None else 0.0
            b = act.get("risk_breakdown") or {}
            p = act.get("pnl_scenarios") or {}
            pt.add_row(
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
        if len(rows) > budget:
            pt.add_row(f"… {len(rows) - budget} more on the dashboard", *[""] * 8)
        # ticker
        tt = Table(
            title="new actions", title_justify="left", expand=True, box=None, show_header=False
        )
        tt.add_column("t", style="dim", width=8)
        tt.add_column("position", width=10)
        tt.add_column("action", width=30)
        tt.add_column("detail")
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
        by = "  ".join(f"{a} {w.counts[a]}" for a in ACTION_ORDER if w.counts[a])
        foot = Text.from_markup(
            f"[dim]{f.ticks_sent} ticks · {f.position_updates} position updates · "
            f"{f.closes} closes · {w.received} actions ({by})   "
            f"logs: {ctx.log_file}   Ctrl-C to stop[/]"
        )
        return Group(
            Panel(head, title="[bold]stream-risk demo[/]", title_align="left"),
            mt,
            Text(""),
            pt,
            Text(""),
            tt,
            foot,
        )


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


def _columns_table(title: str, columns: tuple[tuple[str, JustifyMethod], ...]) -> Table:
    """A full-width, borderless table titled on the left, with dim bold headers."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", expand=True, box=None, header_style="bold dim")
    for col, just in columns:
        table.add_column(col, justify=just)
    return table
