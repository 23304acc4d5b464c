"""Small helpers for tests that talk to the session broker.

- ``await create_topic(bootstrap, name, partitions=3)``: create it (never rely on
  auto-creation: on Tansu it makes 4 partitions with default configs).
- ``await create_topics(bootstrap, specs)``: what tests use instead of
  ``stream_risk.kafka.topics.create_topics``: the same on a real broker; on the session's
  librdkafka mock cluster (which takes no CreateTopics) the host makes them, with their
  partition counts (``register_mock``; configs are not kept there).
- ``await produce(bootstrap, topic, records)``: send every record without awaiting
  each one, then flush (so the broker gets multi-record batches, as in production).
- ``await consume_all(bootstrap, topic)``: read every partition from its beginning
  until caught up (position >= the fetch's high watermark on every partition) and no
  new record arrived for ``idle_ms``; ``min_records=N`` waits for at least N records.
  It never uses ``end_offsets`` (wrong on Tansu when the last batch held >1 record).

Values and keys may be bytes, str (UTF-8), None (a tombstone / no key), or anything
else orjson can dump (dicts, lists, numbers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_risk.kafka import topics as _topics
from stream_risk.kafka.mock_cluster import MockCluster
from stream_risk.kafka.topics import TopicSpec

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class BrokerInfo:
    """What the session's broker is (the ``kafka_broker`` fixture)."""

    bootstrap: str
    kind: str  # "env" | "testcontainers" | "embedded" | "mock"
    is_tansu: bool
    detail: str = ""
    #: The host of librdkafka's mock cluster, when ``kind == "mock"``.
    mock: MockCluster | None = None

    @property
    def is_mock(self) -> bool:
        return self.mock is not None


#: bootstrap -> the mock cluster host serving it (set by the session fixture).
_MOCK_HOSTS: dict[str, MockCluster] = {}


def register_mock(host: MockCluster) -> None:
    _MOCK_HOSTS[host.bootstrap_servers] = host


def forget_mock(host: MockCluster) -> None:
    """A host `register_mock` named that has stopped (a test module's own)."""
    _MOCK_HOSTS.pop(host.bootstrap_servers, None)


def mock_host(bootstrap: str) -> MockCluster | None:
    """The mock cluster host behind `bootstrap`, if it is one."""
    return _MOCK_HOSTS.get(bootstrap)


async def create_topics(
    bootstrap: str, specs: Iterable[TopicSpec], **client_kwargs: Any
) -> list[str]:
    """`stream_risk.kafka.topics.create_topics`, or on the mock cluster its host's (see the
    module doc). Returns the topics it created."""
    host = mock_host(bootstrap)
    spec_list = list(specs)
    if host is None:
        return await _topics.create_topics(bootstrap, spec_list, **client_kwargs)
    pairs = [(s.name, s.partitions) for s in spec_list]
    created: list[str] = await asyncio.to_thread(host.create_topics, pairs)
    return created


@dataclass(frozen=True)
class Rec:
    """One record to produce."""

    key: Any
    value: Any
    headers: Headers = field(default_factory=tuple)
    partition: int | None = None
    timestamp_ms: int | None = None


def encode(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def headers_dict(record: Any) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in (record.headers or ())}


async def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    configs: dict[str, str] | None = None,
    **client_kwargs: Any,
) -> str:
    await create_topics(bootstrap, [TopicSpec(name, partitions, configs or {})], **client_kwargs)
    return name


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Rec | tuple[Any, Any]],
    *,
    linger_ms: int = 5,
    **client_kwargs: Any,
) -> list[Any]:
    """Produce ``records``; returns their RecordMetadata, in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, **client_kwargs
    )
    await producer.start()
    try:
        futures = []
        for item in records:
            rec = item if isinstance(item, Rec) else Rec(*item)
            futures.append(
                await producer.send(
                    topic,
                    value=encode(rec.value),
                    key=encode(rec.key),
                    partition=rec.partition,
                    timestamp_ms=rec.timestamp_ms,
                    headers=list(rec.headers) or None,
                )
            )
        await producer.flush()
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str,
    topic: str,
    *,
    timeout: float = 15.0,
    idle_ms: int = 300,
    min_records: int = 0,
    **client_kwargs: Any,
) -> list[Any]:
    """Every record of ``topic`` (ConsumerRecords, per partition in offset order).

    Raises TimeoutError if the topic does not exist, or fewer than ``min_records``
    arrived, or the reader did not catch up within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **client_kwargs,
    )
    await consumer.start()
    try:
        # Full-metadata requests only: naming an unknown topic would create it on Tansu.
        while topic not in await consumer.topics():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {topic!r} does not exist on {bootstrap}")
            await asyncio.sleep(0.1)
        # `topics()` does not update the consumer's own metadata (on a broker that answers
        # an empty topic list with none, e.g. Apache Kafka or the mock, it has none yet).
        partitions = await asyncio.wait_for(
            _topics.wait_for_partitions(consumer, topic), max(1.0, deadline - time.monotonic())
        )
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        records: list[Any] = []
        last_new = time.monotonic()
        while True:
            now = time.monotonic()
            wait_ms = max(1, min(idle_ms, int((deadline - now) * 1000)))
            batch = await consumer.getmany(*tps, timeout_ms=wait_ms, max_records=10_000)
            now = time.monotonic()
            if any(batch.values()):
                for tp in tps:
                    records.extend(batch.get(tp, ()))
                last_new = now
            caught_up = True
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    caught_up = False
                    break
            idle = (now - last_new) * 1000 >= idle_ms
            if caught_up and idle and len(records) >= min_records:
                return records
            if now >= deadline:
                raise TimeoutError(
                    f"consume_all({topic!r}): {len(records)} records after {timeout:g}s "
                    f"(min_records={min_records}, caught_up={caught_up})"
                )
    finally:
        await consumer.stop()
