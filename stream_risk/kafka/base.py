"""`ShellState`: the processor's state and the helpers its parts share.

`StreamProcessor` (kafka/app.py) is made of `RecoveryMixin` (kafka/recovery.py) and
`HealthMixin` (kafka/health.py) over this base, with a `Publisher` (kafka/publisher.py)
for everything it produces. The attributes are set in `StreamProcessor.__init__`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from stream_risk import alerting
from stream_risk.engine import Engine
from stream_risk.engine.events import Event
from stream_risk.kafka.clients import Clients
from stream_risk.kafka.codec import DeadLetter, decode_config, decode_position, decode_tick
from stream_risk.kafka.config import ProcessorConfig
from stream_risk.kafka.fetch import GuardedFetch, UnreadableTracker
from stream_risk.kafka.publisher import Publisher
from stream_risk.metrics import Metrics

if TYPE_CHECKING:
    from stream_risk.kafka.book import BookStage, Extra

log = logging.getLogger("stream_risk.engine")


def refused_config(dead: DeadLetter, headers: Any = ()) -> dict[str, Any]:
    """A `GET /config` history entry for a risk-config record refused before the engine
    saw it (not JSON, unknown field, out of range, no scope): dead-lettered, `applied`
    false, the reason as the dead letter's `error` header says it."""
    lin = dead.lineage
    key = None if dead.key is None else dead.key.decode(errors="replace")
    changed_by = next(
        (v.decode(errors="replace") for k, v in headers or () if k == "changed-by" and v), None
    )
    return {
        "scope": key,
        "value": None if dead.value is None else dead.value.decode(errors="replace"),
        "offset": lin.offset,
        "partition": lin.partition,
        "ts": lin.timestamp_ms,
        "changed_by": changed_by,
        "status": "rejected",
        "applied": False,
        "error": dead.reason,
    }


class ShellState:
    """State shared by the parts of the processor (see the module doc)."""

    cfg: ProcessorConfig
    engine: Engine
    metrics: Metrics
    clients: Clients
    publisher: Publisher
    unreadable: UnreadableTracker
    _guards: dict[str, GuardedFetch]
    _lock: asyncio.Lock
    _ticks: AIOKafkaConsumer | None
    _positions: AIOKafkaConsumer | None
    _config: AIOKafkaConsumer | None
    #: Assigned positions partitions awaiting rebuild.
    _pending: set[int]
    #: Rebuilt positions partition -> next offset to process.
    _live: dict[int, int]
    #: Revoked partitions whose state is kept until the next assignment.
    _held: dict[int, int]
    #: Ticks partition -> next offset to process.
    _tick_next: dict[int, int]
    _config_topic: str | None
    _config_caught_up: bool
    _ticks_caught_up: bool
    _joined: bool
    _connected: bool
    _missing_topics: list[str]
    #: Offsets a failed commit left (retried by the next one), and why it failed.
    _uncommitted: dict[TopicPartition, int]
    _commit_failing: str | None
    #: Consumer name -> why its fetches fail now (the consumer reconnects by itself).
    _fetch_failing: dict[str, str]
    _fetch_errors_logged: dict[str, float]
    #: The book stage (D17) when its topics exist.
    book: BookStage | None
    #: What the start waits for in the broker's metadata (a topic's partitions not known
    #: yet), for `/readyz`; None when nothing (`topics.wait_for_partitions`, D18).
    _metadata_wait: str | None = None

    def _waiting_metadata(self, reason: str | None) -> None:
        self._metadata_wait = reason

    def book_partials(self) -> list[Extra]:
        raise NotImplementedError

    def exposure_view(self) -> dict[str, Any]:
        raise NotImplementedError

    def _guard(self, name: str, consumer: AIOKafkaConsumer) -> GuardedFetch:
        guard = self._guards[name] = GuardedFetch(consumer, self.unreadable)
        return guard

    def _decode(
        self, records: Sequence[ConsumerRecord[Any, Any]], is_tick: bool, dead: list[DeadLetter]
    ) -> list[Event]:
        out: list[Event] = []
        topic = self.cfg.ticks_topic if is_tick else self.cfg.positions_topic
        self.metrics.records_consumed.labels(topic=topic).inc(len(records))
        decode = decode_tick if is_tick else decode_position
        for rec in records:
            ev = decode(rec)
            if isinstance(ev, DeadLetter):
                dead.append(ev)
            else:
                out.append(ev)
        return out

    def _decode_config(self, records: Sequence[Any], dead: list[DeadLetter]) -> list[Event]:
        out: list[Event] = []
        if self._config_topic is not None:
            self.metrics.records_consumed.labels(topic=self._config_topic).inc(len(records))
        for rec in records:
            ev = decode_config(rec, rec.headers)
            if isinstance(ev, DeadLetter):
                dead.append(ev)
                # GET /config's history lists refused records too (issue 16), not only
                # those the engine weighed: why the desk's change did not take.
                self.engine.config_history.append(refused_config(ev, rec.headers))
            else:
                out.append(ev)
        return out

    async def _checkpoint(self, give_up_s: float | None = None) -> bool:
        """A checkpoint (the lock held): every record produced since the last one is
        acknowledged (re-sent with backoff until it is), then the positions offsets those
        records came from are committed. False if `give_up_s` passed before the acks (the
        records stay pending, nothing is committed)."""
        offsets = await self.publisher.flush(give_up_s)
        if offsets is None:
            return False
        await self._commit(offsets)
        fenced = self.publisher.take_fenced()
        if fenced:
            await self._lose(fenced)
        return True

    def _drop_partition(self, partition: int) -> int:
        """Forget a positions partition here (it moved away, was lost or fenced): its
        positions and timers, and its positions' LIQUIDATE alerts, neither cleared nor
        kept (the next owner adopts them from the actions it reads back). Returns how
        many positions went."""
        alerting.forget_liquidations(
            self.publisher.alerts.tracker, self.engine.table.by_partition.get(partition, ())
        )
        return self.engine.drop_partition(partition)

    async def _lose(self, partitions: set[int]) -> None:
        """Partitions another instance owns now (exactly-once: our producer was fenced):
        their state and pending records are dropped, never published; the consumer group
        moves them away at its next rebalance."""
        self.publisher.drop_partitions(partitions)
        for p in partitions:
            self._live.pop(p, None)
            self._pending.discard(p)
            self._held.pop(p, None)
            self._drop_partition(p)
            if self.publisher.txns is not None:
                await self.publisher.txns.release(p)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit `offsets` (with any a failed commit left, for partitions still ours).

        A failed commit is not fatal: its offsets are retried at the next checkpoint and
        `/readyz` says so meanwhile; if a rebalance took the partition, its new owner
        re-reads from the last commit (at-least-once)."""
        owned = self._live.keys() | self._pending
        todo = {tp: o for tp, o in self._uncommitted.items() if tp.partition in owned}
        todo.update(offsets)
        if not todo or self._positions is None:
            return
        try:
            await self._positions.commit(todo)
        except KafkaError as exc:
            self._uncommitted = todo
            self._commit_failing = (
                "committing offsets is failing (retried at the next checkpoint): "
                f"{type(exc).__name__}: {exc}"
            )
            log.warning("commit failed (retried at the next checkpoint): %s", exc)
            return
        if self._commit_failing is not None:
            log.info("committing offsets works again")
        self._uncommitted = {}
        self._commit_failing = None

    def _task_result(
        self, name: str, task: asyncio.Task[tuple[float, dict[TopicPartition, list[Any]]]]
    ) -> tuple[float, dict[TopicPartition, list[Any]]]:
        """(when the fetch returned, its records); a failed fetch is retried by the next
        one (the consumer reconnects by itself), and `/readyz` says so until one works."""
        try:
            result = task.result()
        except KafkaError as exc:
            # Once a minute per kind of error: a lasting one is retried by every fetch.
            now = time.monotonic()
            kind = type(exc).__name__
            self._fetch_failing[name] = (
                f"fetching {name} from the broker is failing (retried by every fetch): "
                f"{kind}: {exc}"
            )
            if now - self._fetch_errors_logged.get(kind, -1e9) >= 60.0:
                self._fetch_errors_logged[kind] = now
                log.warning("fetch failed (the consumer reconnects by itself): %s", exc)
            return math.inf, {}
        self._fetch_failing.pop(name, None)
        return result


async def timed(
    fetch: Coroutine[Any, Any, dict[TopicPartition, list[Any]]],
) -> tuple[float, dict[TopicPartition, list[Any]]]:
    """A fetch, and when it returned (time.monotonic(): the start of engine latency)."""
    records = await fetch
    return time.monotonic(), records
