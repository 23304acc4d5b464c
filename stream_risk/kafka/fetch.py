"""Fetching that never stalls silently on a record batch the engine cannot read.

aiokafka decodes a fetched batch inside `getmany`, and raises from it when it cannot: a
codec whose library is missing (`UnsupportedCodecError`), a CRC that does not match
(`CorruptRecordException`), a compressed payload that does not decompress
(`cramjam.DecompressionError`, `zlib.error`, ...: not even a `KafkaError`). It raises again
on every fetch of that partition, so a plain loop around `getmany` either floods its log
retrying the same offset for ever or dies. Worse, a `getmany` over several partitions that
raises has already consumed the records it drained from the partitions before the bad one:
their positions moved, and the records are gone with the exception.

`GuardedFetch.getmany` is `AIOKafkaConsumer.getmany` with that handled:

- a failed multi-partition call is rewound: every partition is sought back to where it
  stood before the call, so nothing drained in it is lost;
- the partition at fault is then found by reading the partitions one by one, and is held:
  it is left out of the normal calls (the others go on at full speed) and retried every
  `retry_s`; the records before the bad batch are delivered one by one, so the partition
  stops exactly at the batch;
- nothing is skipped: the partition stays at that offset until the batch reads (e.g. the
  codec is installed and the engine restarted, or the records are deleted on the broker);
- every failed read is reported to an `UnreadableTracker`, which feeds `/readyz` (partition,
  offset, error), the `stream_risk_unreadable_batches_total{topic,partition}` counter, and
  the log (one line per partition per `log_interval_s`).

Errors that are not about a batch (coordinator, authorisation, a stopped consumer) are
raised as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    ConsumerStoppedError,
    CorruptRecordException,
    KafkaError,
    UnsupportedCodecError,
)

from stream_risk.metrics import Metrics

log = logging.getLogger("stream_risk.engine")

#: A held partition is read again this often (a failed read costs one fetch).
RETRY_S = 1.0
#: After an error no one partition could be blamed for, partitions are read one by one
#: for this long (long enough for the bad one to be fetched again and raise).
ISOLATE_S = 2.0
#: A held partition whose reads succeed again for this long (and got past its stuck
#: offset) is released.
RELEASE_AFTER_S = 2.0
#: The log says a partition is unreadable at most once per this many seconds.
LOG_INTERVAL_S = 60.0
#: While reading partitions one by one and none has records, wait this long between reads.
_IDLE_S = 0.02
#: A held partition that read without an error is read again after this long.
_SOON_S = 0.1
#: Records read one at a time from a held partition per read (`creep` mode).
_CREEP_MAX = 1000


def missing_codecs() -> list[str]:
    """The codecs Kafka defines that aiokafka cannot decode (nor encode) here."""
    from aiokafka import codec

    checks = {
        "gzip": codec.has_gzip,
        "snappy": codec.has_snappy,
        "lz4": codec.has_lz4,
        "zstd": codec.has_zstd,
    }
    return [name for name, has in checks.items() if not has()]


def unreadable_error(exc: BaseException) -> bool:
    """Whether `getmany` raised `exc` because a fetched record batch cannot be decoded.

    aiokafka raises `UnsupportedCodecError` / `CorruptRecordException` for what it checks,
    and whatever the decompressor or the record parser raises for the rest (never a
    `KafkaError`). Every other `KafkaError` is about the consumer, not a batch.
    """
    if isinstance(exc, (UnsupportedCodecError, CorruptRecordException)):
        return True
    return isinstance(exc, Exception) and not isinstance(
        exc, (KafkaError, ConsumerStoppedError, asyncio.CancelledError)
    )


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if name in text:  # aiokafka's broker errors name themselves: "[Error 2] Corrupt...: ..."
        return text
    return f"{name}: {text}" if text else name


@dataclass
class Unreadable:
    """A partition held at a batch it cannot read."""

    topic: str
    partition: int
    offset: int | None
    error: str
    since: float
    failures: int = 0
    #: Failures already counted in a log line.
    logged_failures: int = 0


class UnreadableTracker:
    """Which partitions are held at an unreadable batch: for `/readyz`, the metric, the log.

    Shared by every consumer of a processor (a partition is keyed by topic and number).
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        log_interval_s: float = LOG_INTERVAL_S,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.log_interval_s = log_interval_s
        self.retry_s = retry_s
        self.clock = clock
        self.entries: dict[tuple[str, int], Unreadable] = {}
        #: Last log line per partition: kept after a release, so a partition that flaps
        #: between readable and not still logs at most once per interval.
        self._last_log: dict[tuple[str, int], float] = {}

    def failed(self, tp: TopicPartition, offset: int | None, exc: BaseException) -> None:
        """A read of `tp` failed on a batch at (or after) `offset`."""
        now = self.clock()
        key = (tp.topic, tp.partition)
        error = describe_error(exc)
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = Unreadable(tp.topic, tp.partition, offset, error, now)
        e.failures += 1
        e.offset = offset
        e.error = error
        if self.metrics is not None:
            self.metrics.unreadable_batches.labels(
                topic=tp.topic, partition=str(tp.partition)
            ).inc()
        last = self._last_log.get(key)
        if last is not None and now - last < self.log_interval_s:
            return
        self._last_log[key] = now
        if e.logged_failures == 0:
            log.warning(
                "%s[%d] at offset %s: cannot read a record batch (%s). The partition is "
                "held at this offset and read again every %gs; no record is skipped. "
                "See 'Unreadable record batches' in docs/operations.md.",
                tp.topic,
                tp.partition,
                offset,
                error,
                self.retry_s,
            )
        else:
            log.warning(
                "%s[%d] at offset %s: still cannot read a record batch after %.0fs (%s); "
                "%d failed reads since the last report",
                tp.topic,
                tp.partition,
                offset,
                now - e.since,
                error,
                e.failures - e.logged_failures,
            )
        e.logged_failures = e.failures

    def readable(self, tp: TopicPartition) -> None:
        """`tp` reads again (past the batch it was held at)."""
        e = self.entries.pop((tp.topic, tp.partition), None)
        if e is not None:
            log.warning(
                "%s[%d] reads again after %.0fs held at offset %s (%d failed reads)",
                tp.topic,
                tp.partition,
                self.clock() - e.since,
                e.offset,
                e.failures,
            )

    def forget(self, tp: TopicPartition) -> None:
        """`tp` is no longer read here (revoked, or its reader closed)."""
        self.entries.pop((tp.topic, tp.partition), None)

    def held(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self.entries

    def reasons(self) -> list[str]:
        """One `/readyz` reason per held partition."""
        now = self.clock()
        return [
            f"cannot read a record batch on {e.topic}[{e.partition}] at offset {e.offset} "
            f"for {now - e.since:.0f}s ({e.error}); the partition is held there and read "
            f"again every {self.retry_s:g}s, nothing skipped"
            for e in sorted(self.entries.values(), key=lambda e: (e.topic, e.partition))
        ]


@dataclass
class _Held:
    offset: int | None
    next_read: float
    last_error: float
    #: Read the partition one record at a time (to stop exactly at the bad batch).
    creep: bool = True


def _positions_now(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """The consumer's position on each assigned partition that has one, read without
    waiting (aiokafka 0.14's subscription state: `position()` would wait for a reset)."""
    sub = getattr(consumer._subscription, "subscription", None)
    assignment = getattr(sub, "assignment", None)
    if assignment is None:
        return {}
    out: dict[TopicPartition, int] = {}
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if state is not None and state.has_valid_position:
            out[tp] = state.position
    return out


class GuardedFetch:
    """`getmany` on one consumer, holding partitions at batches it cannot read."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        tracker: UnreadableTracker,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.tracker = tracker
        self.retry_s = retry_s
        self.clock = clock
        self._held: dict[TopicPartition, _Held] = {}
        self._isolate_until = 0.0

    @property
    def held(self) -> set[TopicPartition]:
        return set(self._held)

    def close(self) -> None:
        """Forget this consumer's held partitions (the consumer is being stopped)."""
        for tp in self._held:
            self.tracker.forget(tp)
        self._held.clear()

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        """`consumer.getmany(*partitions, ...)`, minus the partitions held at a bad batch
        (each read again every `retry_s`, its readable records delivered)."""
        c = self.consumer
        now = self.clock()
        if not self._held and now >= self._isolate_until:
            before = _positions_now(c)
            try:
                got: dict[TopicPartition, list[Any]] = await c.getmany(
                    *partitions, timeout_ms=timeout_ms, max_records=max_records
                )
                return got
            except Exception as exc:
                if not unreadable_error(exc):
                    raise
                self._failed_call(list(partitions) or list(before), before, exc)
                return {}
        assigned = c.assignment()
        for tp in [tp for tp in self._held if tp not in assigned]:
            del self._held[tp]
            self.tracker.forget(tp)
        wanted = [tp for tp in (partitions or assigned) if tp in assigned]
        out: dict[TopicPartition, list[Any]] = {}
        limit = max_records or getattr(c, "_max_poll_records", None) or 10_000
        for tp in wanted:
            held = self._held.get(tp)
            if held is not None and now >= held.next_read:
                await self._read_held(tp, held, out, limit)
        healthy = [tp for tp in wanted if tp not in self._held]
        if healthy and now < self._isolate_until:
            for tp in healthy:
                await self._read_one(tp, out, limit)
            if not out and timeout_ms:
                await asyncio.sleep(min(_IDLE_S, timeout_ms / 1000))
            return out
        if healthy:
            before = _positions_now(c)
            try:
                got = await c.getmany(
                    *healthy, timeout_ms=0 if out else timeout_ms, max_records=max_records
                )
            except Exception as exc:
                if not unreadable_error(exc):
                    raise
                self._failed_call(healthy, before, exc)
                return out
            out.update(got)
            return out
        if not out and timeout_ms:
            # Nothing else to read: wait for the next read of a held partition (at most
            # the timeout), never spin.
            due = min((h.next_read for h in self._held.values()), default=now + _IDLE_S)
            await asyncio.sleep(max(_IDLE_S, min(due - now, timeout_ms / 1000)))
        return out

    # ------------------------------------------------------------------ internals
    def _failed_call(
        self, tps: list[TopicPartition], before: dict[TopicPartition, int], exc: BaseException
    ) -> None:
        """A getmany over `tps` raised on a batch: blame the partition if it was alone,
        else rewind them all (records drained before the raise were consumed and lost
        with it) and read them one by one until the bad one shows itself."""
        if len(tps) == 1:
            self._hold(tps[0], exc)
            return
        assigned = self.consumer.assignment()
        for tp, pos in before.items():
            if tp in assigned and (not tps or tp in tps):
                self.consumer.seek(tp, pos)
        self._isolate_until = self.clock() + ISOLATE_S
        log.debug("a fetch over %d partitions failed (%s): reading them one by one", len(tps), exc)

    def _hold(self, tp: TopicPartition, exc: BaseException) -> None:
        now = self.clock()
        offset = _positions_now(self.consumer).get(tp)
        held = self._held.get(tp)
        if held is None:
            held = self._held[tp] = _Held(offset, now + self.retry_s, now)
            # Found it: the others go back to one call for all.
            self._isolate_until = 0.0
        else:
            held.offset = offset
            held.next_read = now + self.retry_s
            held.last_error = now
        self.tracker.failed(tp, offset, exc)

    async def _read_one(
        self, tp: TopicPartition, out: dict[TopicPartition, list[Any]], limit: int
    ) -> None:
        """Read one healthy partition alone (while looking for the bad one)."""
        try:
            got = await self.consumer.getmany(tp, timeout_ms=0, max_records=limit)
        except Exception as exc:
            if not unreadable_error(exc):
                raise
            self._hold(tp, exc)
            return
        records = got.get(tp)
        if records:
            out[tp] = records

    async def _read_held(
        self, tp: TopicPartition, held: _Held, out: dict[TopicPartition, list[Any]], limit: int
    ) -> None:
        """Read a held partition: its records up to the bad batch are delivered (one at a
        time in `creep` mode, so the position stops exactly at the batch); released once it
        reads past its stuck offset for `RELEASE_AFTER_S` without an error."""
        c = self.consumer
        records: list[Any] = []
        step = 1 if held.creep else limit
        most = min(limit, _CREEP_MAX) if held.creep else limit
        try:
            while len(records) < most:
                got = await c.getmany(tp, timeout_ms=0, max_records=min(step, most - len(records)))
                batch = got.get(tp)
                if not batch:
                    break
                records.extend(batch)
        except Exception as exc:
            if records:
                out[tp] = records
            if not unreadable_error(exc):
                raise
            held.creep = True
            self._hold(tp, exc)
            return
        now = self.clock()
        if records:
            out[tp] = records
            held.creep = False  # read whole batches again while it reads
        pos = _positions_now(c).get(tp)
        moved = pos is not None and held.offset is not None and pos > held.offset
        if moved and now - held.last_error >= RELEASE_AFTER_S:
            del self._held[tp]
            self.tracker.readable(tp)
            return
        held.next_read = now + _SOON_S
