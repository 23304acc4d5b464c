"""`kafka/transactions.py` (docs/design.md D19), the shell's half of exactly-once, with
stand-in producers (no broker): which transaction each partition's offset commits in, what
a fenced partition becomes, and that a failure aborts every open transaction.

The broker's half (an older epoch's commit refused, aborted records hidden from
read_committed readers) needs a broker with transactions that enforces them: the mock
cluster does not (D18), Tansu has none, and this machine cannot fetch Apache Kafka."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, ProducerFenced
from prometheus_client import CollectorRegistry

from stream_risk.kafka.clients import Clients
from stream_risk.kafka.config import ProcessorConfig
from stream_risk.kafka.transactions import Transactions
from stream_risk.metrics import Metrics


class FakeProducer:
    """What `Transactions` calls on an AIOKafkaProducer, recorded."""

    def __init__(self, tid: str, fail_commit: BaseException | None = None) -> None:
        self.tid = tid
        self.calls: list[Any] = []
        self.fail_commit = fail_commit

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append(("offsets", dict(offsets), group_id))

    async def commit_transaction(self) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")


def txns(fail: dict[int, BaseException] | None = None) -> tuple[Transactions, Metrics]:
    cfg = ProcessorConfig(group_id="desk", positions_topic="positions")
    metrics = Metrics.for_registry(CollectorRegistry())
    t = Transactions(cfg, Clients("x:1", "c"), metrics)
    made: dict[str, FakeProducer] = {}

    def producer(**kw: Any) -> FakeProducer:
        tid = kw["transactional_id"]
        part = int(tid.rsplit("-", 1)[1])
        made[tid] = FakeProducer(tid, (fail or {}).get(part))
        return made[tid]

    t.clients = type("C", (), {"producer": staticmethod(producer)})()
    return t, metrics


async def test_ids_per_partition_and_each_offset_commits_in_its_partitions_txn() -> None:
    t, _ = txns()
    for p in (0, 3):
        await t.own(p)
    assert {p: x.tid for p, x in t.producers.items()} == {
        0: "desk-positions-0",
        3: "desk-positions-3",
    }
    await t.producer(0)  # records of partition 0 were sent in its transaction
    offsets = {TopicPartition("positions", 0): 17, TopicPartition("positions", 3): 5}
    assert await t.commit(offsets, "desk") == set()
    p0, p3 = t.producers[0], t.producers[3]
    assert p0.calls == [
        "start",
        "begin",
        ("offsets", {TopicPartition("positions", 0): 17}, "desk"),
        "commit",
    ]
    # Partition 3 consumed records that made nothing: its offset commits alone.
    assert p3.calls[1:] == [
        "begin",
        ("offsets", {TopicPartition("positions", 3): 5}, "desk"),
        "commit",
    ]
    assert t.open == set() and t.commits == 2
    assert _metric(t, "committed") == 2


async def test_a_fenced_partition_is_reported_and_refuses_further_records() -> None:
    t, metrics = txns({1: ProducerFenced()})
    for p in (0, 1):
        await t.own(p)
        await t.producer(p)
    fenced = await t.commit({}, "desk")
    assert fenced == {1} and t.fenced == {1}
    assert metrics.fenced._value.get() == 1
    assert "commit" in t.producers[0].calls
    assert await t.producer(1) is None  # no new transaction for a partition not ours


async def test_any_other_failure_aborts_every_open_transaction_and_raises() -> None:
    t, _ = txns({0: KafkaConnectionError("broker gone")})
    for p in (0, 2):
        await t.own(p)
        await t.producer(p)
    with pytest.raises(KafkaConnectionError):
        await t.commit({}, "desk")
    # 2 committed in parallel before 0 failed; 0's transaction is aborted: none open.
    assert "abort" in t.producers[0].calls and t.open == set()


async def test_release_aborts_what_is_open_and_stops_the_producer() -> None:
    t, _ = txns()
    await t.own(4)
    producer = t.producers[4]
    await t.producer(4)
    await t.release(4)
    assert producer.calls[-2:] == ["abort", "stop"]
    assert 4 not in t.producers and t.aborts == 1
    assert _metric(t, "aborted") == 1


def _metric(t: Transactions, outcome: str) -> float:
    value: float = t.metrics.transactions.labels(outcome=outcome)._value.get()
    return value
