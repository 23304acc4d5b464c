"""`stream-risk run` and `stream-risk topics create` (DESIGN §7)."""

from __future__ import annotations

import argparse
import asyncio

from stream_risk.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_common_options,
    add_http_token_arguments,  # D22
    load_settings,
)
from stream_risk.settings import ConfigError, Settings


def _kafka_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT",
        help="Kafka brokers (default: env STREAM_RISK_BOOTSTRAP_SERVERS, else localhost:9092)",
    )
    p.add_argument("--security-protocol", default=None, help="PLAINTEXT, SSL, SASL_PLAINTEXT…")
    p.add_argument("--sasl-mechanism", default=None, help="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    p.add_argument("--sasl-username", default=None)
    p.add_argument(
        "--sasl-password-file",
        default=None,
        metavar="FILE",
        help="file holding the SASL password (or env STREAM_RISK_SASL_PASSWORD; never a flag)",
    )
    # Named, so that argparse never takes it for an abbreviation of --sasl-password-file
    # (and prints the password in the error about the file it cannot read).
    p.add_argument(
        "--sasl-password",
        action=_RefusedSecretFlag,
        default=None,
        help=argparse.SUPPRESS,
    )
    p.add_argument("--ssl-cafile", default=None, metavar="FILE")
    p.add_argument("--ssl-certfile", default=None, metavar="FILE")
    p.add_argument("--ssl-keyfile", default=None, metavar="FILE")
    add_common_options(p)


class _RefusedSecretFlag(argparse.Action):
    """A password given as a flag: refused, without repeating it."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        parser.error(
            "--sasl-password is not accepted (a flag shows in the process list): set env "
            "STREAM_RISK_SASL_PASSWORD or --sasl-password-file FILE"
        )


def _kafka_flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        "bootstrap_servers": args.bootstrap_servers,
        "security_protocol": args.security_protocol,
        "sasl_mechanism": args.sasl_mechanism,
        "sasl_username": args.sasl_username,
        "sasl_password_file": args.sasl_password_file,
        "ssl_cafile": args.ssl_cafile,
        "ssl_certfile": args.ssl_certfile,
        "ssl_keyfile": args.ssl_keyfile,
    }


# ---------------------------------------------------------------------- run
def run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-host", default=None, help="sidecar address (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=None, help="sidecar port (default 8080)")
    add_http_token_arguments(p)
    p.add_argument("--group-id", default=None, help="positions consumer group (stream-risk)")
    p.add_argument(
        "--emit",
        default=None,
        choices=["changed", "all"],
        help="publish on a material change (default) or every assessment",
    )
    p.add_argument(
        "--create-topics",
        action="store_true",
        default=None,
        help="create missing topics (positions/risk-actions compacted, 6 partitions)",
    )
    p.add_argument(
        "--compression",
        default=None,
        type=str.lower,
        choices=["none", "gzip", "snappy", "lz4", "zstd"],
        help="compression of the batches the engine produces (default: env "
        "STREAM_RISK_COMPRESSION, else zstd); batches in any codec are read",
    )
    p.add_argument(
        "--commit-interval-ms",
        type=int,
        default=None,
        metavar="MS",
        help="checkpoint every MS ms: await the acks of what was produced, then commit the "
        "positions offsets (default: env STREAM_RISK_COMMIT_INTERVAL_MS, else 100)",
    )
    p.add_argument(
        "--processing-guarantee",
        default=None,
        choices=["exactly-once", "at-least-once", "auto"],
        help="exactly-once (Kafka transactions; exits 2 if the broker has none), "
        "at-least-once, or auto: exactly-once where the broker supports transactions "
        "(default: env STREAM_RISK_PROCESSING_GUARANTEE, else auto)",
    )
    p.add_argument(
        "--alert-webhook",
        default=None,
        metavar="URL",
        help="also POST every alert (JSON) to URL: 2 s timeout, 3 attempts, never blocking",
    )
    _kafka_arguments(p)


def run_handler(args: argparse.Namespace) -> int:
    settings = load_settings(
        args,
        http_host=args.http_host,
        http_port=args.http_port,
        http_token_file=args.http_token_file,
        group_id=args.group_id,
        emit=args.emit,
        create_topics=args.create_topics,
        compression=args.compression,
        commit_interval_ms=args.commit_interval_ms,
        processing_guarantee=args.processing_guarantee,
        alert_webhook=args.alert_webhook,
        **_kafka_flags(args),
    )
    from stream_risk.kafka.topics import MissingTopicsError
    from stream_risk.service import run_service

    def listening(urls: list[str]) -> None:
        for url in urls:
            print(f"stream-risk engine: sidecar on {url}  (Ctrl-C to stop)", flush=True)

    try:
        return asyncio.run(run_service(settings, on_listening=listening))
    except MissingTopicsError as exc:
        raise CliError(str(exc)) from None
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(
            f"cannot listen on {settings.http_host}:{settings.http_port}: "
            f"{exc.strerror or exc}; choose another --http-host/--http-port",
            EXIT_FAILURE,
        ) from None


# ---------------------------------------------------------------------- topics
def topics_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "list"], help="create the missing topics")
    p.add_argument("--partitions", type=int, default=6, help="partitions of each topic (6)")
    _kafka_arguments(p)


def topics_handler(args: argparse.Namespace) -> int:
    settings = load_settings(args, **_kafka_flags(args))
    try:
        return asyncio.run(_topics(settings, args.action, args.partitions))
    except ConfigError as exc:
        raise CliError(str(exc)) from None


async def _topics(settings: Settings, action: str, partitions: int) -> int:
    from aiokafka.errors import KafkaError

    from stream_risk.kafka import topics as t

    names = t.TopicNames(
        positions=settings.topic_positions,
        market_ticks=settings.topic_market_ticks,
        risk_actions=settings.topic_actions,
        risk_dlq=settings.topic_dlq,
        risk_config=settings.topic_config,
        risk_alerts=settings.topic_alerts,
        risk_book_partials=settings.topic_book_partials,
        risk_book=settings.topic_book,
    )
    kw = settings.kafka_security_kwargs()
    # The core topics and risk-config / risk-alerts (docs/design.md D9).
    specs = t.topic_specs(names, partitions=partitions)
    try:
        if action == "list":
            missing = set(
                await t.missing_topics(settings.bootstrap_servers, [s.name for s in specs], **kw)
            )
            for s in specs:
                print(f"{s.name}: {'MISSING' if s.name in missing else 'present'}")
            return EXIT_OK
        created = await t.create_topics(settings.bootstrap_servers, specs, **kw)
    except KafkaError as exc:
        raise CliError(
            f"cannot reach the broker at {settings.bootstrap_servers}: {exc}; "
            "check --bootstrap-servers",
            EXIT_FAILURE,
        ) from None
    for s in specs:
        state = "created" if s.name in created else "already there"
        print(f"{s.name}: {state} ({s.partitions} partitions, {s.configs or 'defaults'})")
    return EXIT_OK
