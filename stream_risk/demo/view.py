"""What the demo shows and how: `DemoContext` (the state the views read), the text formatting
of amounts and actions, and `PlainView` (log lines, when stdout is not a terminal or with
`--plain`). The live terminal view is `rich_view.RichView`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Final, TextIO

from stream_risk.demo.desk import AlertWatcher, DeskLimit, alert_line
from stream_risk.demo.feed import Feeder
from stream_risk.demo.options import DemoOptions
from stream_risk.demo.stopping import wait_stop
from stream_risk.demo.watcher import ActionEvent, ActionWatcher
from stream_risk.rules import ACTIONS

ACTION_ORDER: Final = ACTIONS  # safest first (stream_risk.rules)


def fmt_usd(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    a = abs(x)
    sign = "-" if x < 0 else ("+" if signed and x > 0 else "")
    if a >= 1e9:
        v = f"{a / 1e9:.2f}B"
    elif a >= 1e6:
        v = f"{a / 1e6:.2f}M"
    elif a >= 1e4:
        v = f"{a / 1e3:.1f}k"
    else:
        v = f"{a:,.0f}"
    return f"{sign}${v}"


def fmt_qty(x: float) -> str:
    a = abs(x)
    digits = 0 if a >= 1000 else 2 if a >= 10 else 3 if a >= 1 else 4
    return f"{x:,.{digits}f}"


def fmt_price(x: float) -> str:
    if x >= 1000:
        return f"{x:,.1f}"
    if x >= 1:
        return f"{x:,.3f}"
    return f"{x:.5f}"


def hedge_text(action: dict[str, Any]) -> str:
    h = action.get("suggested_hedge")
    if not isinstance(h, dict):
        return "too expensive" if action.get("reason_code") == "HEDGE_TOO_EXPENSIVE" else "-"
    return f"{h['instrument']} {fmt_qty(float(h['size']))} ({float(h['total_cost_bps']):.1f} bps)"


def action_line(ev: ActionEvent) -> str:
    """A plain log line for one action event."""
    t = time.strftime("%H:%M:%S")
    if ev.action is None:
        was = ev.prev.get("action") if ev.prev else "?"
        return f"{t} CLOSED  {ev.position_id:<10} (was {was})"
    a = ev.action
    prev = ev.prev.get("action") if ev.prev else None
    change = f"{prev} -> {a['action']}" if prev and prev != a["action"] else str(a["action"])
    stale = " STALE" if a.get("stale_market_data") else ""
    return (
        f"{t} ACTION  {ev.position_id:<10} {change:<28} score {float(a['risk_score']):5.1f}  "
        f"hedge {hedge_text(a)}  [{a.get('trigger')}]{stale}"
    )


# ---------------------------------------------------------------------- views
class DemoContext:
    """What the views show: the feed, the watcher, the engine's address and timings."""

    def __init__(self, opts: DemoOptions, feeder: Feeder, watcher: ActionWatcher) -> None:
        self.opts = opts
        self.feeder = feeder
        self.watcher = watcher
        self.t0 = time.monotonic()
        self.broker = ""
        self.urls: list[str] = []
        self.ready: bool | None = None
        self.ready_at: float | None = None
        self.reasons: list[str] = []
        self.log_file: Path | None = None
        self.stopping = False
        #: The demo's limit (risk-config), the alerts read back, the latest GET /exposure.
        self.limit: DeskLimit | None = None
        self.alerts: AlertWatcher | None = None
        self.exposure: dict[str, Any] | None = None

    def breaches(self) -> list[dict[str, Any]]:
        """The limits broken now (GET /exposure's `breaches`)."""
        found = (self.exposure or {}).get("breaches")
        return [b for b in found if isinstance(b, dict)] if isinstance(found, list) else []

    def limit_status(self) -> str | None:
        """`BTC net $6.1M / limit $5.0M BREACHED` (None: no limit, or no figure yet)."""
        lim = self.limit
        if lim is None:
            return None
        e = ((self.exposure or {}).get("assets") or {}).get(lim.asset)
        net = e.get("net_notional_usd") if isinstance(e, dict) else None
        if not isinstance(net, (int, float)):
            return f"{lim.asset} net limit {fmt_usd(lim.limit_usd)}"
        over = abs(net) > lim.limit_usd
        return f"{lim.asset} net {fmt_usd(net)} / limit {fmt_usd(lim.limit_usd)} " + (
            "BREACHED" if over else "ok"
        )

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def first_action_s(self) -> float | None:
        first = self.watcher.first_at
        return None if first is None else first - self.t0

    @property
    def dashboard(self) -> str:
        return (self.urls[0] + "/") if self.urls else "(starting)"


class PlainView:
    """Log lines: milestones, every change of advice, a status line every 5 s."""

    STATUS_EVERY: Final = 5.0

    def __init__(self, ctx: DemoContext, out: TextIO) -> None:
        self.ctx = ctx
        self.out = out
        self._next_status = self.STATUS_EVERY
        self._announced_first = False

    def say(self, text: str) -> None:
        print(f"stream-risk demo: {text}", file=self.out, flush=True)

    def on_alert(self, alert: dict[str, Any]) -> None:
        print(alert_line(alert), file=self.out, flush=True)

    def on_event(self, ev: ActionEvent) -> None:
        ctx = self.ctx
        if not self._announced_first and ctx.watcher.first_at is not None:
            self._announced_first = True
            self.say(f"first action after {ctx.first_action_s():.1f} s")
        prev = ev.prev.get("action") if ev.prev else None
        if ev.action is None or prev != ev.action.get("action"):
            print(action_line(ev), file=self.out, flush=True)

    def tick(self) -> None:
        ctx = self.ctx
        if ctx.elapsed() < self._next_status:
            return
        self._next_status += self.STATUS_EVERY
        w, f = ctx.watcher, ctx.feeder
        by = " ".join(f"{a} {w.counts[a]}" for a in ACTION_ORDER if w.counts[a])
        print(
            f"{time.strftime('%H:%M:%S')} STATUS  t+{ctx.elapsed():.0f}s "
            f"regime {f.market.regime} | {len(f.book.positions)} positions | "
            f"{f.ticks_sent} ticks, {f.position_updates} position updates, {f.closes} closes "
            f"| {w.received} actions ({by})" + (f" | {lim}" if (lim := ctx.limit_status()) else ""),
            file=self.out,
            flush=True,
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.tick()
            await wait_stop(stop, 0.5)

    def close(self) -> None:
        pass
