"""The `stream-risk demo` subcommand: `add_arguments(parser)` and `handler(args) -> int`.

Registered in `stream_risk.cli`; `python -m stream_risk.demo` runs it standalone (`main`).
Cheap to import: the demo's modules load only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream_risk.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: The demo marks market data stale sooner than production (60 s), so feed gaps show.
DEMO_MAX_TICK_AGE_S = 5.0
#: The demo's hysteresis (DESIGN §12): its simulated scores wander across band edges
#: within seconds; 2 points keeps the advice from flapping (0, the reference's behaviour,
#: when a flag, env or the config file sets `risk.hysteresis_points`).
DEMO_HYSTERESIS_POINTS = 2.0


def _positive(
    kind: type[float] | type[int], low: float, high: float | None = None
) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from stream_risk.demo.market import ASSETS

    p.add_argument(
        "--duration",
        type=_positive(float, 0.1),
        default=None,
        metavar="SECONDS",
        help="stop by itself after this many seconds (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--http-port",
        type=_positive(int, 0, 65535),
        default=None,
        help="sidecar and dashboard port (default 8080; 0 = any free port)",
    )
    p.add_argument("--http-host", default=None, help="sidecar listen address (default 127.0.0.1)")
    p.add_argument(
        "--assets",
        type=_positive(int, 1, len(ASSETS)),
        default=5,
        metavar="N",
        help=f"number of simulated assets, 1..{len(ASSETS)} "
        f"({', '.join(a.symbol for a in ASSETS)}; default 5)",
    )
    p.add_argument(
        "--positions",
        type=_positive(int, 1, 5000),
        default=20,
        metavar="N",
        help="open positions the simulated book hovers around (default 20)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (a reproducible market)")
    p.add_argument(
        "--tick-interval",
        type=_positive(float, 0.01, 60),
        default=0.25,
        metavar="SECONDS",
        help="seconds between market updates (default 0.25)",
    )
    p.add_argument(
        "--max-tick-age",
        type=_positive(float, 0.1),
        default=None,
        metavar="SECONDS",
        help=f"a tick older than this is stale (default in the demo {DEMO_MAX_TICK_AGE_S:g} s, "
        "so the simulated feed gaps show; production default 60)",
    )
    p.add_argument(
        "--emit",
        choices=["changed", "all"],
        default=None,
        help="publish on a material change (default) or every assessment",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="log lines instead of the live view (the default when stdout is not a terminal)",
    )
    from stream_risk.cli import add_common_options

    add_common_options(p)  # --config FILE, --log-level (of the demo's log file)


class _UsageError(Exception):
    pass


def _settings(args: argparse.Namespace, **flags: object) -> Settings:
    from pydantic import ValidationError

    from stream_risk.api import field_errors
    from stream_risk.settings import ConfigError, Settings

    try:
        settings = Settings.load(config_file=args.config, log_level=args.log_level, **flags)
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    except ValidationError as exc:
        lines = [f"  {e['field']}: {e['message']}" for e in field_errors(exc)]
        raise _UsageError(
            "invalid settings (from flags, env STREAM_RISK_* or the config file):\n"
            + "\n".join(lines)
        ) from None
    if "max_tick_age_s" not in settings.model_fields_set:  # not from a flag, env or file
        settings = settings.model_copy(update={"max_tick_age_s": DEMO_MAX_TICK_AGE_S})
    if "hysteresis_points" not in settings.risk.model_fields_set:
        risk = settings.risk.merged({"hysteresis_points": DEMO_HYSTERESIS_POINTS})
        settings = settings.model_copy(update={"risk": risk})
    return settings


def handler(args: argparse.Namespace) -> int:
    """Run the demo; the exit code (0 ok, 1 failure, 2 bad settings)."""
    import asyncio

    from stream_risk.demo.options import DemoOptions
    from stream_risk.demo.runner import run_demo

    try:
        settings = _settings(
            args,
            http_host=args.http_host,
            http_port=args.http_port,
            emit=args.emit,
            max_tick_age_s=args.max_tick_age,
        )
    except _UsageError as exc:
        print(f"stream-risk demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    opts = DemoOptions.from_args(args, plain=True if args.plain else None)
    try:
        return asyncio.run(run_demo(opts, settings))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stream-risk demo",
        description="The engine on an embedded broker with a simulated market and book, "
        "a live terminal view and the dashboard.",
    )
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return handler(args)
