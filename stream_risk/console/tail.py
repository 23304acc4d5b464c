"""`stream-risk tail risk-actions|risk-alerts|risk-dlq`: the engine's output as a hedging
bot sees it, one readable line a record (`--json`: the raw value a line).

Which records (docs/design.md D20):

- without `--follow`: every record in the topic now, from the beginning, then exit 0;
- `--follow`: only the records published from now on, until Ctrl-C (exit 0);
- `--follow --from-beginning`: everything there, then keep following.

No consumer group: partitions are assigned by hand and no offset is ever committed, so a
tail never disturbs the engine or a bot. Times are UTC (HH:MM:SS.mmm).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from stream_risk.cli import EXIT_FAILURE, EXIT_OK, CliError, load_settings
from stream_risk.console.logs import client_logs_off
from stream_risk.settings import ConfigError, Settings

RISK_ACTIONS: Final = "risk-actions"
RISK_ALERTS: Final = "risk-alerts"
RISK_DLQ: Final = "risk-dlq"
KINDS: Final = (RISK_ACTIONS, RISK_ALERTS, RISK_DLQ)

#: How long to wait for a topic's partitions before saying it is not there.
_METADATA_WAIT_S: Final = 10.0


# ---------------------------------------------------------------------- formatting
def clock(ms: int | None) -> str:
    """Epoch ms as `HH:MM:SS.mmm` (UTC); `--:--:--.---` when unknown."""
    if ms is None or ms < 0:
        return "--:--:--.---"
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return t.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


def usd(x: float) -> str:
    """Compact dollars: $950, $12.5k, $6.1M, $5M, $1.2B (sign kept)."""
    sign = "-" if x < 0 else ""
    a = abs(x)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= size:
            text = f"{a / size:.1f}".removesuffix(".0")
            return f"{sign}${text}{suffix}"
    return f"{sign}${a:.0f}"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) else str(x)


def format_action(key: str, value: Mapping[str, Any] | None, record_ts: int) -> str:
    """`12:00:01.234 p-17 BTC HEDGE_PARTIAL score 48.8 hedge perp_short 5 BTC ($66.00,
    3.0 bps) trigger tick`; a tombstone: `12:00:01.234 p-17 closed`."""
    if value is None:
        return f"{clock(record_ts)} {key} closed"
    asset = value.get("asset", "?")
    parts = [
        clock(value.get("event_ts", record_ts)),
        str(value.get("position_id", key)),
        str(asset),
        str(value.get("action", "?")),
    ]
    score = value.get("risk_score")
    if isinstance(score, int | float):
        parts.append(f"score {score:.1f}")
    hedge = value.get("suggested_hedge")
    if isinstance(hedge, Mapping):
        cost = hedge.get("total_cost_usd")
        bps = hedge.get("total_cost_bps")
        detail = ""
        if isinstance(cost, int | float) and isinstance(bps, int | float):
            detail = f" (${cost:,.2f}, {bps:.1f} bps)"
        parts.append(
            f"hedge {hedge.get('instrument', '?')} {_num(hedge.get('size'))} {asset}{detail}"
        )
    parts.append(f"trigger {value.get('trigger', '?')}")
    if value.get("stale_market_data"):
        parts.append("[stale market data]")
    return " ".join(parts)


_LIMIT_NAMES: Final = {
    "max_net_notional_usd": "net notional",
    "max_gross_notional_usd": "gross notional",
}


def format_alert(value: Mapping[str, Any], record_ts: int) -> str:
    """`12:00:01.234 FIRED limit asset:BTC net notional $6.1M > $5M`, one line per kind."""
    state = str(value.get("state", "?")).upper()
    kind = value.get("kind")
    d = value.get("details")
    d = d if isinstance(d, Mapping) else {}
    head = f"{clock(value.get('ts', record_ts))} {state}"
    if kind == "exposure_limit":
        name = _LIMIT_NAMES.get(str(d.get("limit")), str(d.get("limit", "limit")))
        figure = ""
        if isinstance(d.get("value_usd"), int | float) and isinstance(
            d.get("limit_usd"), int | float
        ):
            figure = f" {usd(d['value_usd'])} > {usd(d['limit_usd'])}"
            if state == "CLEARED":
                figure = f" back within {usd(d['limit_usd'])} (was{figure})"
        return f"{head} limit {d.get('scope', '?')} {name}{figure}"
    if kind == "liquidate":
        pid, asset = d.get("position_id", value.get("key", "?")), d.get("asset", "")
        where = f"{pid} {asset}".rstrip()
        if state == "CLEARED":
            now = "closed" if d.get("closed") else f"now {d.get('action', '?')}"
            return f"{head} liquidate {where} {now}"
        score = d.get("risk_score")
        s = f" score {score:.1f}" if isinstance(score, int | float) else ""
        reason = f" ({d['reason_code']})" if d.get("reason_code") else ""
        return f"{head} liquidate {where}{s}{reason}"
    if kind == "stale_market_data":
        age = d.get("max_tick_age_ms")
        older = f", older than {age / 1000:g} s" if isinstance(age, int | float) else ""
        last = clock(d.get("tick_ts"))
        return f"{head} stale market data {d.get('asset', '?')}: last tick {last}{older}"
    if kind == "dlq_rate":
        return (
            f"{head} dead letters: {_num(d.get('dlq_last_minute', '?'))} in the last minute "
            f"(threshold {_num(d.get('threshold_per_minute', '?'))}/min)"
        )
    return f"{head} {kind} {value.get('key', '')} {orjson.dumps(d).decode()}"


def format_dlq(key: bytes | None, headers: Iterable[tuple[str, bytes]], record_ts: int) -> str:
    """`12:00:01.234 key p-3: invalid position: size: ... (from positions[2]@17)`."""
    h = {k: bytes(v).decode(errors="replace") for k, v in headers or ()}
    k = "(none)" if key is None else key.decode(errors="replace")
    source = (
        f"{h.get('source_topic', '?')}[{h.get('source_partition', '?')}]"
        f"@{h.get('source_offset', '?')}"
    )
    return f"{clock(record_ts)} key {k}: {h.get('error', '(no error header)')} (from {source})"


def format_record(kind: str, rec: Any, raw: bool) -> str:
    """One line for a ConsumerRecord of topic kind `kind`."""
    if raw:
        return "null" if rec.value is None else bytes(rec.value).decode(errors="replace")
    key = "" if rec.key is None else bytes(rec.key).decode(errors="replace")
    if kind == RISK_DLQ:
        return format_dlq(rec.key, rec.headers, rec.timestamp)
    if rec.value is None:
        return (
            f"{clock(rec.timestamp)} {key} closed"
            if kind == RISK_ACTIONS
            else f"{clock(rec.timestamp)} {key} (null)"
        )
    try:
        value = orjson.loads(rec.value)
    except orjson.JSONDecodeError:
        return f"{clock(rec.timestamp)} {key} (not JSON: {bytes(rec.value)[:80]!r})"
    if not isinstance(value, dict):
        return f"{clock(rec.timestamp)} {key} {orjson.dumps(value).decode()}"
    if kind == RISK_ACTIONS:
        return format_action(key, value, rec.timestamp)
    return format_alert(value, rec.timestamp)


# ---------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    from stream_risk.commands import _kafka_arguments

    p.add_argument(
        "topic",
        metavar="TOPIC",
        help="risk-actions, risk-alerts or risk-dlq (or the names set by --config / env)",
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new records until Ctrl-C (without it: what is there now, then exit)",
    )
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="with --follow: start with what is there already (without --follow: always)",
    )
    p.add_argument("--json", action="store_true", help="the raw value of each record, a line")
    _kafka_arguments(p)


def topic_kinds(settings: Settings) -> dict[str, tuple[str, str]]:
    """Name the user may type -> (kind, topic name on the broker)."""
    out = {
        RISK_ACTIONS: (RISK_ACTIONS, settings.topic_actions),
        RISK_ALERTS: (RISK_ALERTS, settings.topic_alerts),
        RISK_DLQ: (RISK_DLQ, settings.topic_dlq),
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
        raise CliError(f"cannot tail {args.topic!r}: the topics are {valid}")
    kind, topic = kinds[args.topic]
    start_at_end = args.follow and not args.from_beginning

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        return asyncio.run(
            _until_stopped(
                _tail(
                    settings,
                    kind,
                    topic,
                    follow=args.follow,
                    at_end=start_at_end,
                    raw=args.json,
                    emit=emit,
                )
            )
        )
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    except BrokenPipeError:  # `stream-risk tail ... | head`: the reader has gone
        # Python's recipe: no second BrokenPipeError when the interpreter flushes stdout.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


async def _until_stopped(work: Any) -> int:
    """Run `work` until it ends, or until SIGINT / SIGTERM (then exit 0, quietly)."""
    loop = asyncio.get_running_loop()
    task: asyncio.Task[int] = asyncio.ensure_future(work)
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
            installed.append(sig)
    try:
        return await task
    except asyncio.CancelledError:
        return EXIT_OK
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _tail(
    settings: Settings,
    kind: str,
    topic: str,
    *,
    follow: bool,
    at_end: bool,
    raw: bool,
    emit: Callable[[str], None],
) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from stream_risk.kafka.topics import wait_for_partitions

    where = settings.bootstrap_servers
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    try:
        try:
            await consumer.start()
            # Full metadata only: naming a missing topic would create it on some brokers.
            present = await consumer.topics()
        except (KafkaError, OSError) as exc:
            raise CliError(
                f"cannot reach the broker at {where} ({exc}): start one with "
                "`stream-risk broker` or pass --bootstrap-servers HOST:PORT",
                EXIT_FAILURE,
            ) from None
        if topic not in present:
            raise CliError(
                f"topic {topic} does not exist on {where}: create the topics with "
                "`stream-risk topics create` (`stream-risk broker` creates them)",
                EXIT_FAILURE,
            )
        try:
            parts = await asyncio.wait_for(wait_for_partitions(consumer, topic), _METADATA_WAIT_S)
        except TimeoutError:
            raise CliError(
                f"no partitions of {topic} known on {where} after {_METADATA_WAIT_S:g}s",
                EXIT_FAILURE,
            ) from None
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        if at_end:
            await consumer.seek_to_end(*tps)
        else:
            await consumer.seek_to_beginning(*tps)
        ends: dict[Any, int] = {} if follow else await consumer.end_offsets(tps)
        if follow:
            for tp in tps:  # resolve the seeks now: "following" means from here on
                await consumer.position(tp)
            start = "now" if at_end else "the beginning"
            print(
                f"stream-risk tail: following {topic} on {where} from {start} (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
        while True:
            if not follow and await _caught_up(consumer, ends):
                return EXIT_OK
            batch = await consumer.getmany(*tps, timeout_ms=200, max_records=5000)
            records = sorted(
                (r for rs in batch.values() for r in rs), key=lambda r: (r.timestamp, r.offset)
            )
            for rec in records:
                emit(format_record(kind, rec, raw))
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _caught_up(consumer: Any, ends: Mapping[Any, int]) -> bool:
    """Whether every partition has been read up to its end offset of when we started."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True
