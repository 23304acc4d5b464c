"""State recovery (DESIGN §4): what a processor reads back before it processes.

- At start, `risk-config` from its beginning and `market-ticks` from a look-back window
  are read to their end (the broadcast tables every instance holds).
- On assignment a `positions` partition is paused and rebuilt from its beginning (the
  compacted topic is the changelog; every version is read, the latest wins), together with
  the same partition of `risk-actions` (the last action published per position, so timers
  resume and unchanged positions are not re-published); then the group consumer continues
  from where the rebuild ended. A partition revoked and handed straight back keeps its
  state; one that moved away is dropped at the next assignment.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from stream_risk import alerting
from stream_risk.engine import StepResult
from stream_risk.kafka.base import ShellState
from stream_risk.kafka.codec import DeadLetter, decode_position_rows
from stream_risk.kafka.config import wall_ms
from stream_risk.kafka.fetch import GuardedFetch
from stream_risk.kafka.publisher import rejected_letters
from stream_risk.kafka.reader import read_to_end
from stream_risk.kafka.topics import wait_for_partitions

if TYPE_CHECKING:
    from stream_risk.kafka.app import StreamProcessor

log = logging.getLogger("stream_risk.engine")

#: `getmany` timeout of a read to the end. A read ends when a fetch has told each
#: partition's high watermark and the position reached it; a getmany with nothing to
#: return waits out its whole timeout, so a long one only delays the end (by 200 ms per
#: read of an empty topic at the reader's default).
_READ_POLL_MS = 20


@contextlib.contextmanager
def _gc_paused(active: bool) -> Iterator[None]:
    """No collections while a rebuild loads the table: it only adds long-lived objects."""
    if not active or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, proc: StreamProcessor) -> None:
        self.proc = proc

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.proc._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.proc._on_assigned(assigned)
        txns = self.proc.publisher.txns
        if txns is not None:
            # Partitions that moved away: their transactional producers go (a kept one
            # stays: nobody fenced it).
            owned = self.proc._live.keys() | self.proc._pending
            for p in list(txns.producers):
                if p not in owned:
                    await txns.release(p)


class RecoveryMixin(ShellState):
    """Start-up reads, rebalancing and the rebuild of the processor's state."""

    async def _start_config(self) -> None:
        """Assign risk-config from its beginning and read it to the end (before ready)."""
        topic = self._config_topic
        if topic is None:
            self._config_caught_up = True
            return
        consumer = self.clients.reader()
        await consumer.start()
        parts = await wait_for_partitions(consumer, topic, on_wait=self._waiting_metadata)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._config = consumer
        dead: list[DeadLetter] = []
        res = StepResult()

        def collect(tp: TopicPartition, records: Sequence[Any]) -> None:
            step = self.engine.step(self._decode_config(records, dead), wall_ms())
            # Rejected at start: a record that was already bad when first read is DLQ'd
            # again by each instance start; the DLQ says so with the same offset.
            dead.extend(rejected_letters(step.rejected, [records], -1))
            res.outputs.extend(step.outputs)

        guard = self._guard("config", consumer)
        await read_to_end(consumer, tps, collect, poll_ms=_READ_POLL_MS, guard=guard)
        async with self._lock:
            await self.publisher.produce(res, dead)
            await self._checkpoint()
        self._config_caught_up = True
        log.info("risk-config caught up: %d scopes in force", len(self.engine.scopes))

    async def _start_ticks(self) -> None:
        """Assign every ticks partition from the look-back window and catch up to the end."""
        cfg = self.cfg
        consumer = self.clients.reader()
        await consumer.start()
        parts = await wait_for_partitions(consumer, cfg.ticks_topic, on_wait=self._waiting_metadata)
        tps = [TopicPartition(cfg.ticks_topic, p) for p in parts]
        consumer.assign(tps)
        since = wall_ms() - cfg.tick_lookback_ms
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since))
        for tp in tps:
            hit = found.get(tp)
            if hit is None:
                await self._seek_no_offset_for_time(consumer, tp, since)
            else:
                # Some brokers answer 0 whatever the time (DESIGN §9): reading a little more
                # history only refines the latest-market table, it never publishes.
                consumer.seek(tp, hit.offset)
        self._ticks = consumer
        dead: list[DeadLetter] = []
        res = StepResult()

        def collect(tp: TopicPartition, records: Sequence[Any]) -> None:
            # No positions are loaded yet: this only builds the latest-market table.
            step = self.engine.step(self._decode(records, is_tick=True, dead=dead), wall_ms())
            dead.extend(rejected_letters(step.rejected, [records], -1))
            res.outputs.extend(step.outputs)
            self._tick_next[tp.partition] = records[-1].offset + 1

        guard = self._guard("ticks", consumer)
        await read_to_end(consumer, tps, collect, poll_ms=_READ_POLL_MS, guard=guard)
        async with self._lock:
            await self.publisher.produce(res, dead)
            await self._checkpoint()
        self._ticks_caught_up = True
        log.info("market ticks caught up: %d assets known", len(self.engine.table.markets))

    async def _seek_no_offset_for_time(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, since: int
    ) -> None:
        """The broker found no record at or after `since` in `tp`: start at its end, unless
        its last record says otherwise. librdkafka's mock cluster answers "none" for every
        timestamp (ListOffsets by time is not implemented there, D18): believing it would
        start with no market at all. So the last record's timestamp is read: newer than
        `since` means the answer was wrong, and the partition is read from its beginning
        (as on a broker answering 0: it only refines the latest-market table)."""
        begin = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if end <= begin:
            consumer.seek(tp, end)
            return
        consumer.seek(tp, end - 1)
        last_ts: int | None = None
        deadline = time.monotonic() + 2.0
        try:
            while last_ts is None and time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=100, max_records=1)
                for records in batch.values():
                    if records:
                        last_ts = records[-1].timestamp
        except Exception as exc:  # a batch it cannot read: the guarded read will say so
            log.info("%s[%d]: the last record could not be read (%r)", tp.topic, tp.partition, exc)
        if last_ts is not None and last_ts < since:
            consumer.seek(tp, end)
            return
        log.info(
            "%s[%d]: the broker gave no offset for the look-back's start while its last record "
            "is %s: reading it from its beginning (offset %d)",
            tp.topic,
            tp.partition,
            "newer" if last_ts is not None else "unreadable",
            begin,
        )
        consumer.seek(tp, begin)

    # ------------------------------------------------------------------ rebalancing
    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Keep what we held before the rebalance and still own; rebuild the rest.

        Kafka's eager rebalancing revokes every partition before each assignment. A
        partition revoked and handed straight back was owned by nobody else in between, so
        its table, timers and next offset are still exact: it resumes without a rebuild.
        """
        self._joined = True
        owned = {tp.partition for tp in assigned}
        kept = {p: off for p, off in self._held.items() if p in owned}
        for p in set(self._held) - owned:
            dropped = self._drop_partition(p)
            log.info("partition %d moved away: dropped %d positions", p, dropped)
        self._held.clear()
        consumer = self._positions
        for tp in assigned:
            off = kept.get(tp.partition)
            if off is not None:
                self._live[tp.partition] = off
                if consumer is not None:
                    consumer.seek(tp, off)
        new = [tp for tp in assigned if tp.partition not in self._live]
        if new and consumer is not None:
            consumer.pause(*new)
        self._pending.update(tp.partition for tp in new)
        log.info(
            "assigned positions partitions %s (kept %s, to rebuild %s)",
            sorted(owned),
            sorted(kept),
            sorted(tp.partition for tp in new),
        )

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Checkpoint, then stop processing the revoked partitions; their state waits for
        the assignment.

        The checkpoint commits what was processed before the partitions go (the next owner
        starts there). If it cannot be acknowledged in time (the broker is failing) nothing
        of theirs is committed: the next owner re-reads from the last commit, and if they
        come back here they are rebuilt rather than resumed, since what this instance
        believes it published may not be in `risk-actions`.

        Partitions *lost* rather than revoked (the group dropped this member: its session
        expired while it was paused or cut off, so another member may have owned them
        since, D19) are neither checkpointed nor kept: what was pending is dropped, their
        state too, and they are rebuilt if they come back (Kafka's `onPartitionsLost`)."""
        async with self._lock:
            if revoked and self._membership_lost():
                await self._drop_lost({tp.partition for tp in revoked})
                return
            give_up = max(1.0, self.cfg.session_timeout_ms / 2000)
            flushed = await self._checkpoint(give_up_s=give_up)
            parts = {tp.partition for tp in revoked}
            if not flushed:
                self.publisher.drop_offsets(parts)
                log.warning(
                    "partitions %s revoked before their actions were acknowledged: nothing "
                    "of theirs committed (the next owner re-reads them)",
                    sorted(parts),
                )
            for tp in revoked:
                self._pending.discard(tp.partition)
                off = self._live.pop(tp.partition, None)
                if off is not None and flushed:
                    self._held[tp.partition] = off
                elif off is not None:
                    self._drop_partition(tp.partition)

    def _membership_lost(self) -> bool:
        """Whether the group dropped this member before this revocation (its generation
        was reset: a heartbeat or a sync answered "unknown member" / "illegal
        generation"). aiokafka has no `on_partitions_lost`; its coordinator's generation
        is -1 then, and a revocation of a normal rebalance keeps the last generation."""
        coordinator = getattr(self._positions, "_coordinator", None)
        generation = getattr(coordinator, "generation", 0)
        return isinstance(generation, int) and generation < 0

    async def _drop_lost(self, parts: set[int]) -> None:
        parts = parts & (set(self._live) | self._pending | set(self._held))
        if not parts:
            return
        log.warning(
            "the consumer group dropped this instance (its session of %d ms expired: it was "
            "paused or cut off), so partitions %s may have had another owner since: their "
            "state and pending records are dropped, never published from here; they are "
            "rebuilt if they come back",
            self.cfg.session_timeout_ms,
            sorted(parts),
        )
        self.metrics.partitions_lost.inc(len(parts))
        await self._lose(parts)

    async def _rebuild(self) -> None:
        """Rebuild every pending partition from its changelog, then resume it."""
        cfg = self.cfg
        assert self._positions is not None
        parts = sorted(self._pending)
        t0 = time.perf_counter()
        txns = self.publisher.txns
        if txns is not None:
            # Fence the previous owner and abort its open transaction before reading: the
            # rebuild (read_committed) then sees exactly what was committed (D19).
            for p in parts:
                await txns.own(p)
        reader = self.clients.reader("-rebuild")
        await reader.start()
        guard = GuardedFetch(reader, self.unreadable)
        # No collections while the table loads: it only adds long-lived objects.
        with _gc_paused(cfg.tune_gc):
            try:
                pos_tps = [TopicPartition(cfg.positions_topic, p) for p in parts]
                committed: dict[int, int] = {}
                for tp in pos_tps:
                    c = await self._positions.committed(tp)
                    committed[tp.partition] = -1 if c is None else c
                dead: list[DeadLetter] = []
                loaded = 0
                consumed = self.metrics.records_consumed.labels(topic=cfg.positions_topic)

                def load(tp: TopicPartition, records: Sequence[Any]) -> None:
                    nonlocal loaded
                    # Records before the committed offset were DLQ'd when first consumed.
                    bad: list[DeadLetter] = []
                    consumed.inc(len(records))
                    # Decoded once, straight into the rows the table loads (no event each).
                    rows = decode_position_rows(records, bad)
                    first_new = committed[tp.partition]
                    dead.extend(d for d in bad if d.lineage.offset >= first_new)
                    rejected = self.engine.load_rows(tp.topic, tp.partition, rows, wall_ms())
                    dead.extend(rejected_letters(rejected, [records], first_new))
                    loaded += len(records)

                reader.assign(pos_tps)
                await reader.seek_to_beginning(*pos_tps)
                ends = await read_to_end(reader, pos_tps, load, poll_ms=_READ_POLL_MS, guard=guard)
                if self.publisher.co_partitioned:
                    act_tps = [TopicPartition(cfg.actions_topic, p) for p in parts]

                    def restore(tp: TopicPartition, records: Sequence[Any]) -> None:
                        self.engine.restore_batch(tp.partition, records)

                    reader.assign(act_tps)
                    await reader.seek_to_beginning(*act_tps)
                    await read_to_end(reader, act_tps, restore, poll_ms=_READ_POLL_MS, guard=guard)
            finally:
                guard.close()
                await reader.stop()
        async with self._lock:
            now = wall_ms()
            res = StepResult()
            commits: dict[TopicPartition, int] = {}
            for tp in pos_tps:
                p = tp.partition
                if p not in self._pending:  # revoked meanwhile
                    self._drop_partition(p)
                    continue
                # The LIQUIDATE alerts the previous owner fired stay fired: not again here.
                alerting.adopt_liquidations(
                    self.publisher.alerts.tracker, self.engine.restored_actions(p)
                )
                settled = self.engine.settle(p, now)
                res.outputs.extend(settled.outputs)
                res.assessments += settled.assessments
                self._positions.seek(tp, ends[tp])
                commits[tp] = ends[tp]
            # The rebuilt partitions' contributions to the book, published again (D17).
            await self.publisher.produce(res, dead, commits, extra=self.book_partials())
            await self._checkpoint()
            for tp in commits:
                self._pending.discard(tp.partition)
                self._live[tp.partition] = ends[tp]
            self._positions.resume(*commits)
        if cfg.tune_gc:
            # The table is long-lived from here: keep the collector's full passes off it.
            gc.freeze()
        took = time.perf_counter() - t0
        self.metrics.rebuild_seconds.observe(took)
        log.info(
            "rebuilt partitions %s: %d records, %d positions, %d actions in %.3fs",
            parts,
            loaded,
            len(self.engine.table.positions),
            len(res.outputs),
            took,
        )
