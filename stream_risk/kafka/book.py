"""The book stage (DESIGN §13, docs/design.md D17): one book across instances, through Kafka.

A repartition, as Kafka Streams' `groupBy().aggregate()` does, in the processor's process:

- Stage 1 is the engine itself: the positions partitions it owns contribute sums per asset
  (`Engine.drain_partials`); the main loop publishes the changed ones to
  `risk-book-partials` (compacted), keyed `<partition>:<asset>`, on the partition of the
  asset (`partition_of`: Kafka's murmur2 of the asset), with the step's other records (the
  same checkpoint covers them).
- Stage 2 (`BookStage`, here) is a member of its own consumer group (`<group>.book`) on
  that topic: the partitions it is assigned are the assets it owns. On assignment it
  rebuilds them from their beginning (the compacted topic is its state, as the positions
  topic is stage 1's), then follows them; the pure `BookAggregator` sums each asset's
  contributions, assesses its net position, and says which `risk-book` records, alerts and
  state records to publish. The owner of partition 0 owns the book's limits too.
- Every instance reads all of `risk-book` (a broadcast table, as the ticks are: `BookView`),
  so each one's `/exposure`, dashboard and metrics show the whole book.

Stage 2 commits no offsets: a new owner rebuilds from the topic and publishes its assets'
records again (same values: the compacted topic keeps the latest). Its records are sent
as they are made, not held for a checkpoint: they derive from the topic, never from an
offset to commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from stream_risk.book import BookAggregator, BookView, Partial, parse_partial_key, partial_key
from stream_risk.book.aggregate import BOOK_PARTITION, BOOK_STATE_KEY, STATE_PREFIX, BookOutput
from stream_risk.kafka.config import wall_ms
from stream_risk.kafka.fetch import GuardedFetch
from stream_risk.kafka.reader import read_to_end
from stream_risk.kafka.topics import wait_for_partitions

if TYPE_CHECKING:
    from stream_risk.kafka.app import StreamProcessor

log = logging.getLogger("stream_risk.engine")

#: An extra record of a step (`publisher.Extra`): (topic, partition, key, value or None for
#: a tombstone, the positions partition it comes from).
Extra = tuple[str, int, bytes, bytes | None, int]

#: Every owned asset is evaluated at least this often (stale markets, config changes).
FULL_EVALUATION_S = 1.0
_READ_POLL_MS = 200


def partition_of(asset: str, partitions: int) -> int:
    """The partition a record keyed by `asset` goes to under Kafka's default partitioner
    (murmur2 of the key): an asset's contributions, whatever their positions partition,
    meet in one partition of the internal topic."""
    h: int = murmur2(asset.encode())
    return (h & 0x7FFFFFFF) % partitions


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: BookStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.stage.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.stage.assigned(assigned)


class BookStage:
    """Stage 2 and the broadcast view of the book, for one processor."""

    def __init__(self, proc: StreamProcessor, partials_topic: str, book_topic: str) -> None:
        self.proc = proc
        self.partials_topic = partials_topic
        self.book_topic = book_topic
        ecfg = proc.engine.config
        self.agg = BookAggregator(ecfg.score_change_points, ecfg.max_tick_age_ms)
        self.view = BookView()
        self.partitions = 0
        self.view_caught_up = False
        self.joined = False
        self._group: AIOKafkaConsumer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._pending: set[int] = set()
        self._live: set[int] = set()
        self._market_ts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Future[Any]] = set()
        self._last_full = 0.0
        #: Records the stage published (risk-book, state), and failed sends.
        self.published = 0
        self.send_failures = 0

    # ------------------------------------------------------------------ stage 1's side
    def partial_records(self, partials: Sequence[tuple[str, int, Partial | None]]) -> list[Extra]:
        """The contribution records of what `Engine.drain_partials` returned."""
        n = self.partitions
        topic = self.partials_topic
        return [
            (
                topic,
                partition_of(asset, n),
                partial_key(asset, part),
                None if p is None else p.to_json(),
                part,
            )
            for asset, part, p in partials
        ]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        proc = self.proc
        producer = proc.publisher.producer
        assert producer is not None
        self.partitions = len(await producer.partitions_for(self.partials_topic))
        reader = self._reader = proc.clients.reader("-book-view")
        await reader.start()
        parts = await wait_for_partitions(reader, self.book_topic, on_wait=proc._waiting_metadata)
        tps = [TopicPartition(self.book_topic, p) for p in parts]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        guard = proc._guard("book-view", reader)
        await read_to_end(reader, tps, self._apply_view, poll_ms=_READ_POLL_MS, guard=guard)
        self.view_caught_up = True
        log.info("risk-book read: %d assets in the whole book", len(self.view.records))
        cfg = proc.cfg
        group = self._group = proc.clients.group_consumer(
            cfg.book_group_id,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        )
        await group.start()
        proc._guard("book", group)
        group.subscribe([self.partials_topic], listener=_Rebalance(self))
        self._task = asyncio.create_task(self._loop(), name="book")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._sends:
            await asyncio.wait(self._sends, timeout=5.0)
        for c in (self._group, self._reader):
            if c is not None:
                with contextlib.suppress(KafkaError):
                    await c.stop()
        self._group = self._reader = None

    # ------------------------------------------------------------------ readiness
    def reasons(self) -> list[str]:
        out = []
        if not self.view_caught_up:
            out.append(f"{self.book_topic} (the whole book) not read to its end yet")
        if self._pending:
            out.append(f"rebuilding {self.partials_topic} partitions {sorted(self._pending)}")
        return out

    # ------------------------------------------------------------------ rebalancing
    def revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.agg.drop_partition(tp.partition)
            self._live.discard(tp.partition)
            self._pending.discard(tp.partition)
        self.agg.owns_book(self._live)

    def assigned(self, assigned: list[TopicPartition]) -> None:
        self.joined = True
        new = [tp for tp in assigned if tp.partition not in self._live]
        if new and self._group is not None:
            self._group.pause(*new)
        self._pending.update(tp.partition for tp in new)
        log.info(
            "assigned book partitions %s of %s (assets owned here: those hashing to them)",
            sorted(tp.partition for tp in assigned),
            self.partials_topic,
        )

    async def _rebuild(self) -> None:
        """Read the pending partitions from their beginning (latest record per key wins),
        then follow them with the group consumer from where the read ended."""
        group = self._group
        assert group is not None
        parts = sorted(self._pending)
        tps = [TopicPartition(self.partials_topic, p) for p in parts]
        t0 = time.perf_counter()
        reader = self.proc.clients.reader("-book-rebuild")
        await reader.start()
        guard = GuardedFetch(reader, self.proc.unreadable)
        n = 0

        def load(tp: TopicPartition, records: Sequence[Any]) -> None:
            nonlocal n
            n += len(records)
            self._apply_partials(tp.partition, records, rebuilding=True)

        try:
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await read_to_end(reader, tps, load, poll_ms=_READ_POLL_MS, guard=guard)
        finally:
            guard.close()
            await reader.stop()
        done = []
        for tp in tps:
            if tp.partition in self._pending:  # not revoked meanwhile
                group.seek(tp, ends[tp])
                self._pending.discard(tp.partition)
                self._live.add(tp.partition)
                done.append(tp)
            else:
                self.agg.drop_partition(tp.partition)
        group.resume(*done)
        self.agg.owns_book(self._live)
        log.info(
            "rebuilt book partitions %s: %d records, %d assets owned, in %.3fs",
            parts,
            n,
            len(self.agg.parts),
            time.perf_counter() - t0,
        )

    # ------------------------------------------------------------------ records in
    def _apply_view(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        view = self.view
        for r in records:
            try:
                asset = r.key.decode()
                view.apply(asset, None if r.value is None else orjson.loads(r.value))
            except (AttributeError, UnicodeDecodeError, orjson.JSONDecodeError) as exc:
                log.warning(
                    "%s[%d]@%d: not a risk-book record (%s)", tp.topic, tp.partition, r.offset, exc
                )

    def _apply_partials(self, partition: int, records: Sequence[Any], rebuilding: bool) -> None:
        agg = self.agg
        for r in records:
            key: bytes | None = r.key
            try:
                if key is None:
                    raise ValueError("no key")
                if key.startswith(STATE_PREFIX.encode()):
                    if rebuilding:  # live, the tracker here is newer than its echo
                        agg.restore_state(partition, key.decode(), r.value)
                    continue
                asset, source = parse_partial_key(key)
                partial = None if r.value is None else Partial.from_json(r.value)
                agg.apply(partition, asset, source, partial)
            except ValueError as exc:
                # Written by the engine only: a bad one is a bug or another writer. It is
                # skipped (the owner of its positions partition publishes the key again
                # when its positions change) and said.
                log.warning(
                    "%s[%d]@%d: not a book contribution (%s): skipped",
                    self.partials_topic,
                    partition,
                    r.offset,
                    exc,
                )

    # ------------------------------------------------------------------ the loop
    async def _loop(self) -> None:
        proc = self.proc
        interval = proc.cfg.book_interval_s
        group = proc._guards["book"]
        view = proc._guards["book-view"]
        t_group: asyncio.Task[Any] | None = None
        t_view: asyncio.Task[Any] | None = None
        try:
            while True:
                try:
                    if self._pending:
                        await self._rebuild()
                    if t_group is None:
                        t_group = asyncio.create_task(group.getmany(timeout_ms=500))
                    if t_view is None:
                        t_view = asyncio.create_task(view.getmany(timeout_ms=500))
                    done, _ = await asyncio.wait(
                        {t_group, t_view}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                    )
                    if t_view in done:
                        batch = t_view.result()
                        t_view = None
                        for tp, records in batch.items():
                            self._apply_view(tp, records)
                    if t_group in done:
                        batch = t_group.result()
                        t_group = None
                        for tp, records in batch.items():
                            if tp.partition in self._live:
                                self._apply_partials(tp.partition, records, rebuilding=False)
                    await self.evaluate()
                except (KafkaError, OSError) as exc:
                    log.warning("book stage: %s (retrying)", exc)
                    for t in (t_group, t_view):
                        if t is not None:
                            t.cancel()
                    t_group = t_view = None
                    await asyncio.sleep(1.0)
        finally:
            for t in (t_group, t_view):
                if t is not None:
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t

    async def evaluate(self, now_ms: int | None = None) -> BookOutput:
        """Evaluate what changed (contributions, ticks of owned assets; every owned asset
        each `FULL_EVALUATION_S`) and publish it."""
        engine = self.proc.engine
        agg = self.agg
        now = wall_ms() if now_ms is None else now_ms
        t = time.monotonic()
        if t - self._last_full >= FULL_EVALUATION_S:
            self._last_full = t
            agg.all_dirty()
        else:
            markets = engine.table.markets
            seen = self._market_ts
            moved = []
            for asset in agg.parts:
                m = markets.get(asset)
                if m is not None and seen.get(asset) != m.ts:
                    seen[asset] = m.ts
                    moved.append(asset)
            agg.market_moved(moved)
        out = agg.evaluate(engine, now, now)
        if agg.book_owner and self.view_caught_up:
            book = self.view.exposure(engine.price, {}, engine.moves())["book"]
            extra = agg.evaluate_book(book, engine.book_limits(), now)
            out.alerts.extend(extra.alerts)
            out.states.extend(extra.states)
        await self._publish(out)
        return out

    async def _publish(self, out: BookOutput) -> None:
        proc = self.proc
        producer = proc.publisher.producer
        if producer is None:
            return
        for asset, record in out.records:
            value = None if record is None else orjson.dumps(record)
            await self._send(producer.send(self.book_topic, value=value, key=asset.encode()))
        for key, value in out.states:
            owner = key[len(STATE_PREFIX) :]
            part = BOOK_PARTITION if key == BOOK_STATE_KEY else partition_of(owner, self.partitions)
            await self._send(
                producer.send(self.partials_topic, value=value, key=key.encode(), partition=part)
            )
        if out.alerts:
            proc.publisher.alerts.emit(out.alerts)

    async def _send(self, enqueue: Any) -> None:
        try:
            fut = await enqueue
        except KafkaError as exc:
            self.send_failures += 1
            log.warning("book stage: publishing failed: %s", exc)
            return
        self.published += 1
        self._sends.add(fut)
        fut.add_done_callback(self._sent)

    def _sent(self, fut: asyncio.Future[Any]) -> None:
        self._sends.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self.send_failures += 1
            log.warning("book stage: a record was not acknowledged: %s", fut.exception())

    # ------------------------------------------------------------------ reads
    def exposure_view(self) -> dict[str, Any]:
        """The whole book (`BookView.exposure`), priced at this instance's latest ticks."""
        engine = self.proc.engine
        view = self.view.exposure(engine.price, engine.limits(), engine.moves())
        view["scope"] = "book"
        view["owned_assets"] = sorted(self.agg.parts)
        return view
