"""Read assigned partitions from where they stand to their end, on any Kafka-compatible broker.

`end_offsets` cannot end a read (DESIGN §9: on Tansu it answers the first offset of the
last batch + 1). The high watermark a fetch response carries is right on Tansu and on
Apache Kafka, so a partition is read to its end once a fetch has answered for it
(`highwater` is not None) and the position has reached that watermark. `highwater` is
reset only by a new assignment, so use a freshly assigned consumer for each read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_risk.kafka.fetch import GuardedFetch

OnRecords = Callable[[TopicPartition, Sequence[Any]], None]


async def read_to_end(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    on_records: OnRecords,
    poll_ms: int = 200,
    max_records: int = 10_000,
    guard: GuardedFetch | None = None,
) -> dict[TopicPartition, int]:
    """Feed every record of `partitions` (assigned to `consumer`) to `on_records`, in order,
    until each is read to its end. Returns the position reached per partition.

    With a `guard` (a `GuardedFetch` of `consumer`), a partition held at a batch that cannot
    be read keeps the read going until it reads, loudly (the guard's tracker reports it);
    without one, `getmany`'s error is raised."""
    fetch = consumer.getmany if guard is None else guard.getmany
    remaining = set(partitions)
    positions: dict[TopicPartition, int] = {}
    while remaining:
        batch = await fetch(*remaining, timeout_ms=poll_ms, max_records=max_records)
        for tp, records in batch.items():
            if records:
                on_records(tp, records)
        for tp in list(remaining):
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            pos = await consumer.position(tp)
            if pos >= hw:
                positions[tp] = pos
                remaining.discard(tp)
    return positions
