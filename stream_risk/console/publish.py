"""`stream-risk publish TOPIC [FILE|-]`: JSON or JSONL records onto `positions`,
`market-ticks` or `risk-config`, keyed as the engine expects, each one validated with the
engine's own decoders first (`stream_risk.kafka.codec`): one bad record and nothing is sent.

Input: one JSON object, a JSON array of objects, or JSONL (one object a line; blank lines
skipped). Keys and values:

- positions: key = `position_id` (else the `asset`, as the engine defaults it); the value is
  the position without `position_id` (the key carries it). `{"position_id": ID, "close":
  true}` closes the position: a null value (tombstone) keyed ID.
- market-ticks: key = `asset`.
- risk-config: `{"scope": "asset:BTC", "value": {...} | null, "ts": MS}` a record (replay's
  `--risk-config` form; `key` accepted for `scope`, `ts` optional), or with `--key SCOPE`
  every record is the partial config itself (`null` removes the scope).

`ts` (positions, ticks) defaults to now, epoch ms.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import ValidationError

from stream_risk.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, load_settings
from stream_risk.config import SCOPE_FORMS, RiskConfigPatch, is_scope
from stream_risk.console.logs import client_logs_off
from stream_risk.settings import ConfigError, Settings

POSITIONS: Final = "positions"
MARKET_TICKS: Final = "market-ticks"
RISK_CONFIG: Final = "risk-config"
KINDS: Final = (POSITIONS, MARKET_TICKS, RISK_CONFIG)
#: Most bad records named in one run (the rest counted).
MAX_REPORTED: Final = 20


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record ready to send."""

    key: bytes
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class BadRecord:
    where: str  # "FILE, line N" or "FILE, record N"
    field: str  # "" when the record as a whole is bad
    message: str

    def __str__(self) -> str:
        what = f"field {self.field}: " if self.field else ""
        return f"{self.where}: {what}{self.message}"


@dataclass(frozen=True, slots=True)
class _Rec:
    """The parts of a Kafka record the engine's decoders read (codec.Record)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = 0
    offset: int = 0
    timestamp: int = 0


# ---------------------------------------------------------------------- parsing
def split_records(text: bytes, source: str) -> tuple[list[tuple[str, Any]], list[BadRecord]]:
    """(where, parsed JSON) of each record: the whole input as one JSON object or array,
    else one JSON document a line (JSONL). Unparseable lines are BadRecords."""
    if not text.strip():
        return [], []
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = _NOT_JSON
    if isinstance(whole, list):
        return [(f"{source}, record {i}", item) for i, item in enumerate(whole, 1)], []
    if whole is not _NOT_JSON:
        return [(f"{source}, line 1", whole)], []
    records: list[tuple[str, Any]] = []
    bad: list[BadRecord] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}, line {n}"
        try:
            records.append((where, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            bad.append(BadRecord(where, "", f"not JSON ({exc})"))
    return records, bad


_NOT_JSON: Final = object()


def _field_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        out.append((prefix + loc if loc else prefix.rstrip(".") or "value", err["msg"]))
    return out


# ---------------------------------------------------------------------- per topic
def prepare(
    kind: str,
    topic: str,
    records: Sequence[tuple[str, Any]],
    *,
    now_ms: int,
    key: str | None = None,
) -> tuple[list[Outgoing], list[BadRecord]]:
    """Validate every record as the engine would and make the Kafka records to send."""
    out: list[Outgoing] = []
    bad: list[BadRecord] = []
    for where, body in records:
        if kind == POSITIONS:
            got = _position(topic, where, body, now_ms)
        elif kind == MARKET_TICKS:
            got = _tick(topic, where, body, now_ms)
        else:
            got = _config(topic, where, body, key)
        if isinstance(got, Outgoing):
            out.append(got)
        else:
            bad.extend(got)
    return out, bad


def _object(where: str, body: Any, what: str) -> list[BadRecord] | None:
    if isinstance(body, dict):
        return None
    return [BadRecord(where, "", f"a {what} is a JSON object, got {type(body).__name__}")]


def _position(topic: str, where: str, body: Any, now_ms: int) -> Outgoing | list[BadRecord]:
    from stream_risk.kafka.codec import DeadLetter, decode_position
    from stream_risk.models import PositionMessage

    if (err := _object(where, body, "position")) is not None:
        return err
    if "close" in body:
        pid = body.get("position_id")
        if body.get("close") is not True or set(body) != {"position_id", "close"}:
            return [
                BadRecord(
                    where,
                    "close",
                    'a close is {"position_id": ID, "close": true} and nothing else',
                )
            ]
        if not isinstance(pid, str) or not pid:
            return [BadRecord(where, "position_id", "a close needs the position_id (text)")]
        return Outgoing(pid.encode(), None)
    value = dict(body)
    value.setdefault("ts", now_ms)
    try:
        msg = PositionMessage.model_validate_json(orjson.dumps(value))
    except ValidationError as exc:
        return [BadRecord(where, f, m) for f, m in _field_errors(exc)]
    pid = msg.position_id or msg.asset
    value.pop("position_id", None)  # the key carries it
    rec = _Rec(topic, pid.encode(), orjson.dumps(value), timestamp=now_ms)
    ev = decode_position(rec)  # the engine's own decode, as the engine will do it
    if isinstance(ev, DeadLetter):
        return [BadRecord(where, "", ev.reason)]
    return Outgoing(rec.key or b"", rec.value)


def _tick(topic: str, where: str, body: Any, now_ms: int) -> Outgoing | list[BadRecord]:
    from stream_risk.kafka.codec import DeadLetter, decode_tick
    from stream_risk.models import MarketTick

    if (err := _object(where, body, "market tick")) is not None:
        return err
    value = dict(body)
    value.setdefault("ts", now_ms)
    try:
        tick = MarketTick.model_validate_json(orjson.dumps(value))
    except ValidationError as exc:
        return [BadRecord(where, f, m) for f, m in _field_errors(exc)]
    rec = _Rec(topic, tick.asset.encode(), orjson.dumps(value), timestamp=now_ms)
    ev = decode_tick(rec)
    if isinstance(ev, DeadLetter):
        return [BadRecord(where, "", ev.reason)]
    return Outgoing(rec.key or b"", rec.value)


def _config(topic: str, where: str, body: Any, key: str | None) -> Outgoing | list[BadRecord]:
    from stream_risk.kafka.codec import DeadLetter, decode_config

    ts: int | None = None
    scope: Any
    if key is not None:
        scope, patch = key, body
        if isinstance(body, dict) and ({"scope", "key"} & set(body)):
            return [
                BadRecord(
                    where,
                    "scope",
                    "--key gives the scope: each record is then the partial config alone "
                    "(or drop --key and give {scope, value} records)",
                )
            ]
    else:
        if not isinstance(body, dict) or not ({"scope", "key"} & set(body)):
            return [
                BadRecord(
                    where,
                    "scope",
                    f"missing: give {{'scope': SCOPE, 'value': {{...}}}} records, or --key "
                    f"SCOPE with the partial config as the record (scopes: {SCOPE_FORMS})",
                )
            ]
        extra = set(body) - {"scope", "key", "value", "ts"}
        if extra:
            return [
                BadRecord(
                    where,
                    sorted(extra)[0],
                    "unknown field: a record is {scope, value, ts}; the config fields go in value",
                )
            ]
        scope, patch = body.get("scope", body.get("key")), body.get("value")
        raw_ts = body.get("ts")
        if raw_ts is not None:
            from stream_risk.models import MAX_TS_MS

            if isinstance(raw_ts, bool) or not isinstance(raw_ts, int):
                return [BadRecord(where, "ts", "epoch milliseconds (an integer)")]
            if not 0 <= raw_ts <= MAX_TS_MS:
                return [BadRecord(where, "ts", f"out of range 0..{MAX_TS_MS} (epoch ms)")]
            ts = raw_ts
    if not isinstance(scope, str) or not is_scope(scope):
        return [BadRecord(where, "scope", f"{scope!r} is no scope: use {SCOPE_FORMS}")]
    if patch is not None:
        if not isinstance(patch, dict):
            return [BadRecord(where, "value", "the partial config is a JSON object (or null)")]
        try:
            RiskConfigPatch.model_validate_json(orjson.dumps(patch))
        except ValidationError as exc:
            prefix = "" if key is not None else "value."
            return [BadRecord(where, f, m) for f, m in _field_errors(exc, prefix)]
    value = None if patch is None else orjson.dumps(patch)
    rec = _Rec(topic, scope.encode(), value, timestamp=ts or 0)
    ev = decode_config(rec)
    if isinstance(ev, DeadLetter):
        return [BadRecord(where, "", ev.reason)]
    return Outgoing(scope.encode(), value, ts)


# ---------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    from stream_risk.commands import _kafka_arguments

    p.add_argument(
        "topic",
        metavar="TOPIC",
        help="positions, market-ticks or risk-config (or the names set by --config / env)",
    )
    p.add_argument(
        "file",
        nargs="?",
        default="-",
        metavar="FILE",
        help="JSON (an object or an array) or JSONL (one object a line); '-' or none = stdin",
    )
    p.add_argument(
        "--key",
        default=None,
        metavar="SCOPE",
        help="risk-config only: the scope (global, asset:X, position:ID) of every record, "
        "each record then being the partial config (null removes it)",
    )
    _kafka_arguments(p)


def topic_kinds(settings: Settings) -> dict[str, tuple[str, str]]:
    """Name the user may type -> (kind, topic name on the broker)."""
    out = {
        POSITIONS: (POSITIONS, settings.topic_positions),
        MARKET_TICKS: (MARKET_TICKS, settings.topic_market_ticks),
        RISK_CONFIG: (RISK_CONFIG, settings.topic_config),
    }
    for kind, name in list(out.values()):
        out[name] = (kind, name)
    return out


def handler(args: argparse.Namespace) -> int:
    from stream_risk.commands import _kafka_flags

    settings = load_settings(args, **_kafka_flags(args))
    client_logs_off(logging.getLogger().getEffectiveLevel())
    kinds = topic_kinds(settings)
    if args.topic not in kinds:
        valid = ", ".join(dict.fromkeys(name for _, name in kinds.values()))
        raise CliError(f"cannot publish to {args.topic!r}: the topics are {valid}")
    kind, topic = kinds[args.topic]
    if args.key is not None:
        if kind != RISK_CONFIG:
            raise CliError(f"--key is for risk-config only ({kind} records carry their key)")
        if not is_scope(args.key):
            raise CliError(f"--key {args.key!r} is no scope: use {SCOPE_FORMS}")
    source = "stdin" if args.file == "-" else args.file
    text = _read(args.file)
    records, unparsed = split_records(text, source)
    total = len(records) + len(unparsed)
    if not total:
        raise CliError(f"no records in {source}: nothing published")
    out, invalid = prepare(kind, topic, records, now_ms=time.time_ns() // 1_000_000, key=args.key)
    bad = unparsed + invalid
    if bad:
        for b in bad[:MAX_REPORTED]:
            print(b, file=sys.stderr)
        more = len(bad) - MAX_REPORTED
        if more > 0:
            print(f"... and {more} more error(s)", file=sys.stderr)
        n_bad = len({b.where for b in bad})
        print(
            f"stream-risk publish: {n_bad} bad record(s) of {total}: nothing published to "
            f"{topic}; fix them and run again",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        asyncio.run(_send(settings, topic, out))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    print(f"published {len(out)} record{'s' if len(out) != 1 else ''} to {topic}")
    return EXIT_OK


def _read(name: str) -> bytes:
    if name == "-":
        if sys.stdin.isatty():
            print("reading records from stdin (end with Ctrl-D)...", file=sys.stderr)
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(
            f"cannot read {name}: {exc.strerror or exc}; pass a JSON/JSONL file or '-' for stdin"
        ) from None


def _changed_by() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the passwd file
        user = "unknown"
    return f"{user} (stream-risk publish)"


async def _send(settings: Settings, topic: str, records: Sequence[Outgoing]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    kw: Mapping[str, Any] = settings.kafka_client_kwargs()
    where = settings.bootstrap_servers
    producer = AIOKafkaProducer(**kw, acks="all", linger_ms=5, request_timeout_ms=15_000)
    try:
        try:
            await producer.start()
            metadata = await producer.client.fetch_all_metadata()
        except (KafkaError, OSError) as exc:
            raise CliError(_unreachable(where, exc), EXIT_FAILURE) from None
        if topic not in metadata.topics():
            raise CliError(
                f"topic {topic} does not exist on {where}: create the topics with "
                "`stream-risk topics create` (`stream-risk broker` creates them)",
                EXIT_FAILURE,
            )
        headers = (
            [("changed-by", _changed_by().encode())] if topic == settings.topic_config else None
        )
        try:
            futures = [
                await producer.send(
                    topic, key=r.key, value=r.value, timestamp_ms=r.timestamp_ms, headers=headers
                )
                for r in records
            ]
            await producer.flush()
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise CliError(
                f"publishing to {topic} on {where} failed: {exc}; some records may have been "
                "sent: check the engine's GET /positions before publishing again",
                EXIT_FAILURE,
            ) from None
    finally:
        await producer.stop()


def _unreachable(where: str, exc: BaseException) -> str:
    return (
        f"cannot reach the broker at {where} ({exc}): start one with `stream-risk broker` "
        "or pass --bootstrap-servers HOST:PORT"
    )
