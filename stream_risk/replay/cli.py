"""`stream-risk replay`: history through the same core, offline or onto the topics (§6).

    stream-risk replay --ticks FILE [--positions FILE | --position [ID=]ASSET:SIZE@ENTRY ...]
                       [--map FIELD=COLUMN,...] [--config FILE] [--emit changed|all]
                       [--out DIR] [--sweep FIELD=V1,V2 ...] [--rank-by METRIC] [--skip-bad]
    stream-risk replay --ticks FILE ... --publish --bootstrap-servers HOST:PORT [--speed X]

`add_arguments(parser)` and `handler(args) -> exit code` are what `stream_risk.cli`
registers. Exit codes: 0 ok; 1 a runtime failure (the broker); 2 bad usage or input.
What the command then does is `command.run`.
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from stream_risk.replay.command import EXIT_FAILURE, EXIT_USAGE, UsageError, err, run
from stream_risk.replay.ranking import DEFAULT_RANK_BY, RANK_BY

HELP = "replay history (JSONL/CSV/Parquet) through the engine offline, or onto the topics"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("inputs")
    src.add_argument(
        "--ticks",
        required=True,
        metavar="FILE",
        help="ticks: .jsonl, .csv, .parquet, or - to read them from standard input",
    )
    src.add_argument(
        "--positions", metavar="FILE", help="position records (same formats; - for stdin)"
    )
    src.add_argument(
        "--risk-config",
        metavar="FILE",
        help='risk-config records, JSONL: {"scope": "asset:BTC", "ts": MS, "value": {...}|null}',
    )
    src.add_argument(
        "--position",
        action="append",
        metavar="[ID=]ASSET:SIZE@ENTRY",
        help="a position opened at the first tick of its asset, e.g. BTC:10@2509.17 (repeatable)",
    )
    src.add_argument(
        "--map",
        action="append",
        metavar="FIELD=COLUMN,...",
        help="tick fields from other columns, e.g. current_price=close,ts=timestamp,asset=symbol",
    )
    src.add_argument(
        "--positions-map", action="append", metavar="FIELD=COLUMN,...", help="same, for positions"
    )
    src.add_argument(
        "--asset", metavar="NAME", help="the asset of a ticks file with no asset column"
    )
    src.add_argument(
        "--ts-unit",
        choices=["auto", "ms", "s"],
        default="auto",
        help="numeric timestamps: epoch ms or s (auto: below 1e11 is seconds)",
    )
    src.add_argument(
        "--skip-bad", action="store_true", help="count and skip bad records instead of stopping"
    )
    mk = p.add_argument_group("market fields the data lacks")
    # Defaults None: the settings of the same names (flags > env > file), as `run` uses.
    mk.add_argument(
        "--vol-window",
        type=float,
        default=None,
        metavar="N",
        help="EWMA span, in returns, of the vol estimate (default: settings, 60)",
    )
    mk.add_argument(
        "--vol-min-obs",
        type=int,
        default=None,
        metavar="N",
        help="returns needed before the estimate is used (default: settings, 20)",
    )
    mk.add_argument(
        "--estimate-vol",
        action="store_true",
        help="estimate volatility_1d from prices even when the data has it",
    )
    mk.add_argument("--default-spread-bps", type=float, default=None, metavar="BPS")
    mk.add_argument("--default-funding", type=float, default=None, metavar="RATE")
    mk.add_argument("--default-depth-usd", type=float, default=None, metavar="USD")
    eng = p.add_argument_group("engine")
    eng.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="settings file (TOML/JSON) as for `run`; its [risk] table is the policy",
    )
    eng.add_argument("--emit", choices=["changed", "all"], default=None)
    eng.add_argument(
        "--until", metavar="TS", help="keep firing timers up to this time (epoch ms or ISO-8601)"
    )
    eng.add_argument(
        "--path",
        choices=["fast", "scalar"],
        default="fast",
        help="fast (vectorised, default) or scalar (one step per event); same output",
    )
    eng.add_argument(
        "--sweep",
        action="append",
        metavar="FIELD=V1,V2,...",
        help="also replay every combination of these risk config values (repeatable)",
    )
    eng.add_argument(
        "--rank-by",
        choices=list(RANK_BY),
        default=DEFAULT_RANK_BY,
        help=f"order the --sweep runs best first by (default {DEFAULT_RANK_BY}: final P&L "
        "following the advice, after hedge costs)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--out",
        default="replay-out",
        metavar="DIR",
        help="actions.jsonl, report.json, report.html, chart.png (default replay-out)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    pub = p.add_argument_group("publish instead (--publish)")
    pub.add_argument(
        "--publish",
        action="store_true",
        help="write ticks and positions to the topics instead of replaying offline",
    )
    pub.add_argument("--bootstrap-servers", metavar="HOST:PORT")
    pub.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="X times real time (default 1; 0 = as fast as possible)",
    )
    pub.add_argument("--create-topics", action="store_true", help="create missing topics")
    pub.add_argument("--positions-topic", metavar="NAME")
    pub.add_argument("--ticks-topic", metavar="NAME")


def handler(args: argparse.Namespace) -> int:
    from stream_risk.kafka.topics import MissingTopicsError, TopicCreationError
    from stream_risk.replay.errors import SourceError
    from stream_risk.settings import ConfigError

    try:
        return run(args)
    except (SourceError, ConfigError, UsageError) as exc:
        err(str(exc))
        return EXIT_USAGE
    except ValidationError as exc:
        lines = []
        for e in exc.errors(include_url=False):
            loc = ".".join(str(x) for x in e["loc"]) or "value"
            lines.append(f"  {loc}: {e['msg']}")
        err("invalid settings (flags, env STREAM_RISK_* or the config file):\n" + "\n".join(lines))
        return EXIT_USAGE
    except MissingTopicsError as exc:
        err(f"{exc} (or pass --create-topics)")
        return EXIT_USAGE
    except TopicCreationError as exc:
        err(str(exc))
        return EXIT_FAILURE
    except OSError as exc:
        err(f"{exc.strerror or exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stream-risk replay", description=HELP)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return handler(args)
