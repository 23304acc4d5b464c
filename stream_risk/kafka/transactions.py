"""Exactly-once processing (issue 15, docs/design.md D19): Kafka transactions, one
transactional producer per owned `positions` partition.

aiokafka implements KIP-98 (transactions, `send_offsets_to_transaction`) but not KIP-447
(the consumer group's generation in the offset commit, which lets one producer per
instance be fenced safely across rebalances). So the producer is per *input partition*, as
Kafka Streams did before KIP-447: its `transactional_id` is
`<prefix>-<positions topic>-<partition>` (prefix: the group id unless set), the same on
whichever instance owns the partition. A new owner starts its producer before it rebuilds
the partition: `InitProducerId` bumps the id's epoch, which

- aborts the previous owner's open transaction (a crashed instance's half-checkpoint is
  never read by a `read_committed` reader, the rebuild included), and
- fences the previous owner: a zombie (paused by GC, SIGSTOP or a partition, resumed
  after its partition moved) gets `ProducerFenced` on its next send or commit, so it can
  never publish from stale state.

A checkpoint (D15's interval) commits one transaction per partition that produced or
consumed since the last: its records (actions, positions dead letters, book contributions,
LIQUIDATE alerts of its positions) and its `positions` offset
(`send_offsets_to_transaction`) together. What has no positions partition (dead letters
of ticks and risk-config, the book stage's records, limit alerts) is produced outside the
transactions, at-least-once (D19 says what that means for a reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from stream_risk.kafka.clients import Clients
from stream_risk.kafka.config import ProcessorConfig
from stream_risk.metrics import Metrics

log = logging.getLogger("stream_risk.engine")


class Transactions:
    """The transactional producers of the partitions this instance owns, and their
    open transactions."""

    def __init__(self, cfg: ProcessorConfig, clients: Clients, metrics: Metrics) -> None:
        self.cfg = cfg
        self.clients = clients
        self.metrics = metrics
        self.producers: dict[int, AIOKafkaProducer] = {}
        #: Partitions with a transaction begun and not yet committed or aborted.
        self.open: set[int] = set()
        #: Partitions whose producer was fenced: another instance owns them now.
        self.fenced: set[int] = set()
        self.commits = 0
        self.aborts = 0
        #: Why a producer is not started yet (a /readyz reason), None when none waits.
        self.waiting: str | None = None

    def transactional_id(self, partition: int) -> str:
        prefix = self.cfg.transactional_id_prefix or self.cfg.group_id
        return f"{prefix}-{self.cfg.positions_topic}-{partition}"

    async def own(self, partition: int) -> None:
        """Start the partition's producer (fencing any previous owner's, and aborting its
        open transaction). Call before the partition is rebuilt."""
        if partition in self.producers:
            return
        cfg = self.cfg
        delay = 0.1
        while True:
            producer = self.clients.producer(
                idempotent=True,
                compression=cfg.compression,
                linger_ms=cfg.linger_ms,
                max_request_size=cfg.max_request_size,
                transactional_id=self.transactional_id(partition),
            )
            try:
                await producer.start()
                break
            except KafkaError as exc:
                # A coordinator moving, a broker restarting: wait, and say so.
                self.waiting = (
                    f"starting the transactional producer of partition {partition} "
                    f"(retrying): {type(exc).__name__}: {exc}"
                )
                log.warning("%s", self.waiting)
                with contextlib.suppress(KafkaError):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.waiting = None
        self.producers[partition] = producer
        self.fenced.discard(partition)
        log.info("transactional producer %s started", self.transactional_id(partition))

    async def release(self, partition: int) -> None:
        """The partition moved away: abort what is open and stop its producer."""
        producer = self.producers.pop(partition, None)
        if producer is None:
            return
        if partition in self.open:
            self.open.discard(partition)
            try:
                await producer.abort_transaction()
                self.aborts += 1
                self.metrics.transactions.labels(outcome="aborted").inc()
            except KafkaError as exc:
                log.info("aborting the transaction of partition %d: %s", partition, exc)
        try:
            await producer.stop()
        except KafkaError as exc:
            log.info("stopping the producer of partition %d: %s", partition, exc)

    async def producer(self, partition: int) -> AIOKafkaProducer | None:
        """The partition's producer inside an open transaction (begun if needed); None if
        this instance does not own the partition (any more)."""
        producer = self.producers.get(partition)
        if producer is None or partition in self.fenced:
            return None
        if partition not in self.open:
            await producer.begin_transaction()
            self.open.add(partition)
        return producer

    async def commit(self, offsets: Mapping[TopicPartition, int], group_id: str) -> set[int]:
        """Commit every open transaction, each with its partition's offset; a partition
        with an offset to commit and no transaction gets one for the offset alone.
        Returns the partitions found fenced (their records are not committed). Raises
        KafkaError on any other failure, after aborting every open transaction (the
        caller re-sends what was pending)."""
        by_partition = {tp.partition: (tp, off) for tp, off in offsets.items()}
        todo = sorted(self.open | (by_partition.keys() & self.producers.keys()))
        fenced: set[int] = set()

        async def one(partition: int) -> None:
            producer = await self.producer(partition)
            if producer is None:
                return
            hit = by_partition.get(partition)
            if hit is not None:
                await producer.send_offsets_to_transaction({hit[0]: hit[1]}, group_id)
            await producer.commit_transaction()
            self.open.discard(partition)
            self.commits += 1
            self.metrics.transactions.labels(outcome="committed").inc()

        results = await asyncio.gather(*(one(p) for p in todo), return_exceptions=True)
        failure: BaseException | None = None
        for partition, result in zip(todo, results, strict=True):
            if isinstance(result, ProducerFenced):
                fenced.add(partition)
            elif isinstance(result, BaseException):
                failure = failure or result
        for partition in fenced:
            self._fenced(partition)
        if failure is not None:
            await self.abort()
            if isinstance(failure, KafkaError):
                raise failure
            raise KafkaError(f"committing the transactions failed: {failure!r}") from failure
        return fenced

    async def abort(self) -> None:
        """Abort every open transaction (their records are never read committed)."""
        for partition in sorted(self.open):
            producer = self.producers.get(partition)
            self.open.discard(partition)
            if producer is None:
                continue
            try:
                await producer.abort_transaction()
                self.aborts += 1
                self.metrics.transactions.labels(outcome="aborted").inc()
            except ProducerFenced:
                self._fenced(partition)
            except KafkaError as exc:
                log.warning("aborting the transaction of partition %d failed: %s", partition, exc)

    def _fenced(self, partition: int) -> None:
        if partition in self.fenced:
            return
        self.fenced.add(partition)
        self.open.discard(partition)
        self.metrics.fenced.inc()
        log.error(
            "partition %d: this instance was fenced (transactional id %s is used by a newer "
            "instance, which owns the partition now); its uncommitted records are aborted "
            "and its state dropped",
            partition,
            self.transactional_id(partition),
        )

    async def stop(self) -> None:
        for partition in list(self.producers):
            await self.release(partition)
