"""librdkafka's mock cluster (docs/design.md D18): its host, and what the engine does with a
broker that answers metadata differently (no CreateTopics, no controller, a topic's
partitions not known yet, no offsets by time). Runs on its own mock cluster whatever the
session's broker is (a host starts in ~0.2 s)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from stream_risk.kafka import topics as topic_admin
from stream_risk.kafka.mock_cluster import MockCluster
from stream_risk.kafka.topics import TopicSpec

from .engine_harness import BTC_MARKET, TopicReader, config, now_ms, pos, produce, running, tick


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockCluster]:
    with MockCluster(log_path=tmp_path_factory.mktemp("mock") / "mock.log") as host:
        yield host


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await c.start()
    try:
        return await asyncio.wait_for(topic_admin.wait_for_partitions(c, topic), 10)
    finally:
        await c.stop()


async def test_the_host_makes_topics_with_their_partition_counts(mock: MockCluster) -> None:
    assert mock.create_topics([("m-a", 6), ("m-b", 1)]) == ["m-a", "m-b"]
    assert mock.create_topics([("m-a", 3)]) == []  # exists: left as it is
    assert await _partitions(mock.bootstrap_servers, "m-a") == list(range(6))
    assert await _partitions(mock.bootstrap_servers, "m-b") == [0]
    assert await topic_admin.missing_topics(mock.bootstrap_servers, ["m-a", "m-x"]) == ["m-x"]


async def test_create_topics_falls_back_to_auto_creation_on_the_mock(
    mock: MockCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """No CreateTopics there: the topics are made the one way the broker allows, and the
    log says which partitions and configs they got instead of those asked."""
    specs = [TopicSpec("m-auto-1", 6, {"cleanup.policy": "compact"}), TopicSpec("m-auto-2", 4)]
    with caplog.at_level(logging.WARNING, "stream_risk.kafka.topics"):
        created = await topic_admin.create_topics(mock.bootstrap_servers, specs)
    assert created == ["m-auto-1", "m-auto-2"]
    assert await _partitions(mock.bootstrap_servers, "m-auto-1") == [0, 1, 2, 3]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "cannot create topics" in said and "m-auto-1 was made by auto-creation" in said
    assert "asked: 6 partitions" in said
    # Idempotent: nothing missing, nothing said.
    caplog.clear()
    assert await topic_admin.create_topics(mock.bootstrap_servers, specs) == []


async def test_wait_for_partitions_says_what_it_waits_for() -> None:
    """A consumer whose metadata has no partitions for the topic yet: the wait retries with
    backoff, reports its reason, and clears it once the partitions are known."""

    class Client:
        def __init__(self) -> None:
            self.updates = 0

        async def force_metadata_update(self) -> bool:
            self.updates += 1
            return True

    class Consumer:
        def __init__(self) -> None:
            self._client = Client()

        def partitions_for_topic(self, topic: str) -> set[int] | None:
            return {0, 1} if self._client.updates >= 3 else None

    reasons: list[str | None] = []
    consumer: Any = Consumer()
    parts = await topic_admin.wait_for_partitions(
        consumer, "t", on_wait=reasons.append, first_delay_s=0.01, max_delay_s=0.02
    )
    assert parts == [0, 1]
    assert reasons[0] is not None and "metadata of topic t" in reasons[0]
    assert reasons[-1] is None


async def test_the_engine_starts_and_runs_on_the_mock(mock: MockCluster, tmp_path: Path) -> None:
    """`create_topics=True` on the mock (topics by auto-creation), a fresh consumer that
    knows no partitions, a look-back the broker cannot answer by time: the engine starts,
    ready, positions and ticks in -> actions out; restarted, the look-back still finds the
    tick (the last record is newer than the window)."""
    cfg = config(mock.bootstrap_servers)
    t0 = now_ms()
    async with running(cfg) as proc:
        assert proc.is_ready() == (True, [])
        await produce(
            mock.bootstrap_servers, cfg.ticks_topic, [tick("BTC", t0, 44000, **BTC_MARKET)]
        )
        await produce(
            mock.bootstrap_servers,
            cfg.positions_topic,
            [pos(f"p{i}", "BTC", 1 + i, 45000, t0) for i in range(8)],
        )
        async with TopicReader(mock.bootstrap_servers, cfg.actions_topic) as actions:
            await actions.until(lambda rs: len({r.key for r in rs}) == 8, "8 actions")
    async with running(cfg) as again:
        assert "BTC" in again.engine.table.markets  # the look-back found the tick
        assert len(again.positions()) == 8
        assert again.engine.waiting() == {}


async def test_the_mock_runs_transactions_but_neither_fences_nor_hides_aborts(
    mock: MockCluster,
) -> None:
    """A fact of the mock (D18), asserted so that a librdkafka that starts enforcing them
    is noticed: Apache Kafka refuses the first producer's commit once a second one with
    the same transactional id started (ProducerFenced), and hides aborted records from
    read_committed readers; the mock does neither."""
    from aiokafka import AIOKafkaProducer, TopicPartition

    mock.create_topics([("m-txn", 1)])
    boot = mock.bootstrap_servers
    first = AIOKafkaProducer(bootstrap_servers=boot, transactional_id="m-txn-id")
    second = AIOKafkaProducer(bootstrap_servers=boot, transactional_id="m-txn-id")
    await first.start()
    try:
        await first.begin_transaction()
        await (await first.send("m-txn", b"one", key=b"k"))
        await second.start()  # Apache Kafka: bumps the epoch, fences `first`
        await first.commit_transaction()  # the mock lets the zombie commit
        await second.begin_transaction()
        await (await second.send("m-txn", b"aborted", key=b"k"))
        await second.abort_transaction()
    finally:
        await first.stop()
        await second.stop()
    c = AIOKafkaConsumer(
        bootstrap_servers=boot, isolation_level="read_committed", auto_offset_reset="earliest"
    )
    await c.start()
    try:
        tp = TopicPartition("m-txn", 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        got: list[bytes] = []
        for _ in range(6):
            batch = await c.getmany(tp, timeout_ms=200)
            got += [r.value for r in batch.get(tp, [])]
    finally:
        await c.stop()
    assert got == [b"one", b"aborted"]  # Apache Kafka: [] (fenced, then aborted)


async def test_the_probe_finds_transactions_without_fencing_and_auto_stays_at_least_once(
    mock: MockCluster,
) -> None:
    """`probe_transactions` tells a broker that lets a fenced producer commit (the mock)
    from one without transactions (Tansu: `TXN_NONE`, test_run_command) and one that fences
    (Apache Kafka: `TXN_OK`); `auto` takes exactly-once only on the last (D19)."""
    mock.create_topics([("m-probe", 1)])
    found = await topic_admin.probe_transactions(
        mock.bootstrap_servers, "m-probe-id", "m-probe", "m-probe-group"
    )
    assert found == topic_admin.TXN_UNFENCED
    cfg = config(mock.bootstrap_servers, processing_guarantee="auto")
    async with running(cfg) as proc:
        assert not proc.exactly_once and proc.publisher.txns is None
    cfg = config(mock.bootstrap_servers, processing_guarantee="exactly-once")
    async with running(cfg) as proc:  # asked for: runs, with a warning
        assert proc.exactly_once and proc.publisher.txns is not None
