"""The demo's simulated market and book, alone, against a Kafka you run.

    python -m stream_risk.demo.simulate [--assets N] [--positions N] [--seed S] [--duration S]

Publishes to the `market-ticks` and `positions` topics of `STREAM_RISK_BOOTSTRAP_SERVERS`
(and the other `STREAM_RISK_*` settings: topic names, security), waiting for the topics to
exist. docker-compose runs it as the optional `simulator` service
(`docker compose --profile simulator up`), so the engine and Grafana have something to show.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TextIO

from aiokafka.errors import KafkaError

from stream_risk.demo.cli import _positive
from stream_risk.demo.feed import Feeder
from stream_risk.demo.market import ASSETS
from stream_risk.demo.options import DemoOptions
from stream_risk.demo.stopping import add_stop_signals, remove_stop_signals, wait_stop
from stream_risk.settings import Settings


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
    add_stop_signals(loop, stop.set, installed)
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
            await wait_stop(stop, 1.0)
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
        remove_stop_signals(loop, installed)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stream_risk.demo.simulate",
        description="Publish a simulated market and market-maker book to Kafka.",
    )
    p.add_argument("--assets", type=_positive(int, 1, len(ASSETS)), default=5, metavar="N")
    p.add_argument("--positions", type=_positive(int, 1, 5000), default=20, metavar="N")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--tick-interval", type=_positive(float, 0.01, 60), default=0.25)
    p.add_argument("--duration", type=_positive(float, 0.1), default=None, metavar="SECONDS")
    args = p.parse_args(argv)
    opts = DemoOptions.from_args(args, plain=True)
    try:
        return asyncio.run(run_simulator(opts, Settings.load()))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
