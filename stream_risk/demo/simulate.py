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
import sys

from stream_risk.demo.cli import _positive


def main(argv: list[str] | None = None) -> int:
    from stream_risk.demo.market import ASSETS
    from stream_risk.demo.runner import DemoOptions, run_simulator
    from stream_risk.settings import Settings

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
    opts = DemoOptions(
        duration=args.duration,
        assets=args.assets,
        positions=args.positions,
        seed=args.seed,
        tick_interval=args.tick_interval,
        plain=True,
    )
    try:
        return asyncio.run(run_simulator(opts, Settings.load()))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
