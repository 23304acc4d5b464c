"""Shared pieces of the benchmarks: the broker, topics, fast bulk produce, clocks, stats.

A benchmark that needs Kafka starts its own embedded Tansu broker (``EmbeddedBroker``:
memory storage, a fresh one per benchmark, so no benchmark sees another's data), unless
``STREAM_RISK_BENCH_BOOTSTRAP`` names a broker to use instead (every benchmark then
creates uniquely named topics on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from stream_risk.kafka.embedded import EmbeddedBroker
from stream_risk.kafka.topics import TopicNames, TopicSpec, create_topics, topic_specs

#: Every engine benchmark uses the engine's default partition count (6).
PARTITIONS = 6
BOOTSTRAP_ENV = "STREAM_RISK_BENCH_BOOTSTRAP"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    path = f"/proc/{pid or 'self'}/statm"
    with open(path) as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


@contextlib.asynccontextmanager
async def broker() -> AsyncIterator[str]:
    """A bootstrap address: `$STREAM_RISK_BENCH_BOOTSTRAP`, else a fresh embedded broker."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external
        return
    async with EmbeddedBroker(silent=True) as b:
        yield b.bootstrap_servers


async def make_topics(bootstrap: str, partitions: int = PARTITIONS) -> TopicNames:
    """The engine's four topics under a unique prefix, with the engine's specs."""
    names = TopicNames.with_prefix(f"bench-{uuid.uuid4().hex[:8]}-")
    specs = topic_specs(names, partitions=partitions, include_controls=False)
    await create_topics(bootstrap, specs)
    return names


async def make_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> str:
    await create_topics(bootstrap, [TopicSpec(name, partitions)])
    return name


@dataclass(frozen=True, slots=True)
class Rec:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class BulkProducer:
    """Produce many records fast: per-partition `create_batch` / `send_batch`, keyed records
    placed by the Java-compatible murmur2 partitioner (as `send(key=...)` would place them),
    up to `in_flight` batches outstanding. For loading benchmark inputs, not for the engine.
    """

    def __init__(self, bootstrap: str, *, linger_ms: int = 5, acks: Any = 1) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks=acks,
            linger_ms=linger_ms,
            max_batch_size=1 << 20,
            max_request_size=4 << 20,
        )
        self._partitioner = DefaultPartitioner()

    async def __aenter__(self) -> BulkProducer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    @property
    def producer(self) -> AIOKafkaProducer:
        return self._producer

    async def partitions(self, topic: str) -> list[int]:
        return sorted(await self._producer.partitions_for(topic))

    async def produce(
        self, topic: str, records: Iterable[Rec], *, in_flight: int = 24, chunk: int = 2000
    ) -> int:
        """Send every record (grouped into batches per partition); wait for all acks."""
        parts = await self.partitions(topic)
        pending: set[asyncio.Future[Any]] = set()
        builders: dict[int, Any] = {}
        counts: dict[int, int] = {}
        sent = 0

        async def flush(p: int) -> None:
            nonlocal pending
            b = builders.pop(p, None)
            counts.pop(p, None)
            if b is None:
                return
            fut = await self._producer.send_batch(b, topic, partition=p)
            pending.add(fut)
            if len(pending) >= in_flight:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for f in done:
                    f.result()

        for rec in records:
            if rec.key is None:
                p = parts[sent % len(parts)]
            else:
                p = self._partitioner(rec.key, parts, parts)
            b = builders.get(p)
            if b is None:
                b = builders[p] = self._producer.create_batch()
            ts = rec.timestamp_ms  # BatchBuilder.append takes epoch ms, as send(timestamp_ms=)
            if b.append(timestamp=ts, key=rec.key, value=rec.value) is None:
                await flush(p)
                b = builders[p] = self._producer.create_batch()
                b.append(timestamp=ts, key=rec.key, value=rec.value)
            counts[p] = counts.get(p, 0) + 1
            if counts[p] >= chunk:
                await flush(p)
            sent += 1
        for p in list(builders):
            await flush(p)
        if pending:
            await asyncio.gather(*pending)
        return sent


def fmt_rate(x: float) -> str:
    """12,345/s style."""
    if x != x:  # NaN
        return "n/a"
    return f"{x:,.0f}/s"


def fmt_ms(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:.2f} ms" if x < 100 else f"{x:,.0f} ms"


def fmt_s(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:.2f} s"


@dataclass(slots=True)
class Row:
    """One line of the results table."""

    num: str  # the benchmark number
    name: str  # what is measured
    figure: str
    baseline: str = "–"
    ratio: str = "–"
    target: str = "–"
    #: True / False against the target; None for a line without a target of its own.
    met: bool | None = None
