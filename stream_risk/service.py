"""`stream-risk run`: the stream processor and its sidecar in one process.

The sidecar starts first, so `/healthz` answers and `/readyz` explains what the engine is
waiting for while it connects, catches up and rebuilds. A broker that cannot be reached at
start is retried (the process stays up, 503 on `/readyz`); missing topics are a clear error
unless `--create-topics`. SIGTERM / Ctrl-C: stop consuming, flush, commit, leave the group,
exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from stream_risk.engine import EngineConfig
from stream_risk.kafka.app import ProcessorConfig, StreamProcessor
from stream_risk.kafka.topics import MissingTopicsError
from stream_risk.metrics import Metrics
from stream_risk.settings import Settings
from stream_risk.sidecar import create_app
from stream_risk.sidecar.auth import HttpAuth, describe_auth

log = logging.getLogger("stream_risk.run")


def processor_config(settings: Settings) -> ProcessorConfig:
    return ProcessorConfig(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        client_id=settings.client_id,
        positions_topic=settings.topic_positions,
        ticks_topic=settings.topic_market_ticks,
        actions_topic=settings.topic_actions,
        dlq_topic=settings.topic_dlq,
        config_topic=settings.topic_config,
        alerts_topic=settings.topic_alerts,
        book_partials_topic=settings.topic_book_partials,
        book_topic=settings.topic_book,
        alert_webhook=settings.alert_webhook,
        alert_dlq_per_minute=settings.alert_dlq_per_minute,
        create_topics=settings.create_topics,
        compression=settings.compression,
        commit_interval_ms=settings.commit_interval_ms,
        processing_guarantee=settings.processing_guarantee,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.session_timeout_ms // 10),
        tick_lookback_ms=int(settings.tick_lookback_s * 1000),
        client_kwargs=settings.kafka_security_kwargs(),
    )


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        risk=settings.risk,
        emit=settings.emit,
        max_tick_age_ms=int(settings.max_tick_age_s * 1000),
        market_defaults=settings.market_defaults(),
        vol=settings.vol_estimator(),
    )


async def run_service(
    settings: Settings,
    *,
    on_listening: Callable[[list[str]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the exit code."""
    stop = stop or asyncio.Event()
    # The sidecar's token first: a bad token file ends the start here (ConfigError, exit 2).
    auth = HttpAuth.of(settings.http_token_value(), metrics_auth=settings.http_metrics_auth)
    registry = CollectorRegistry()
    metrics = Metrics.for_registry(registry)
    proc = StreamProcessor(processor_config(settings), engine_config(settings), metrics)
    app = create_app(proc, registry, auth=auth)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        urls = [f"http://{a[0]}:{a[1]}" for a in runner.addresses if isinstance(a, tuple)]
        if on_listening is not None:
            on_listening(urls)
        log.info("sidecar on %s (%s)", ", ".join(urls), describe_auth(auth))
        started = await _start_with_retry(proc, stop)
        if not started:
            return 0
        run = asyncio.create_task(proc.run())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
        proc.request_stop()
        waiter.cancel()
        await run  # raises if the loop died: the process exits non-zero
        log.info("stopping: flushing, committing, leaving the group")
        return 0
    finally:
        await proc.stop()
        await runner.cleanup()
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _start_with_retry(proc: StreamProcessor, stop: asyncio.Event) -> bool:
    """Start the processor, retrying while the broker is unreachable. False if stopped."""
    delay = 0.5
    while not stop.is_set():
        # Raced against `stop`: a start held at a batch it cannot read (docs/operations.md
        # "Unreadable record batches") must not keep SIGTERM from ending the process.
        starting = asyncio.create_task(proc.start(), name="start")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return False
        try:
            starting.result()
            return True
        except MissingTopicsError:
            raise
        except (KafkaError, OSError) as exc:
            log.warning(
                "cannot reach the broker at %s (%s); retrying in %.1fs",
                proc.cfg.bootstrap_servers,
                exc,
                delay,
            )
            await proc.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)
    return False
