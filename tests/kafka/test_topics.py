"""Topic administration: find missing topics without creating them, create them with
the right partitions and configs, idempotently; detect idempotent-producer support."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from kafka_helpers import BrokerInfo

from stream_risk.kafka.embedded import free_port
from stream_risk.kafka.topics import (
    ALL_TOPICS,
    CORE_TOPICS,
    DEFAULT_SPECS,
    MissingTopicsError,
    TopicNames,
    TopicSpec,
    create_topics,
    ensure_topics,
    missing_topics,
    probe_idempotence,
    topic_specs,
)

# ---------------------------------------------------------------------- no broker


def test_default_specs() -> None:
    specs = {s.name: s for s in DEFAULT_SPECS}
    assert tuple(specs) == ALL_TOPICS
    assert (
        ALL_TOPICS[:4] == CORE_TOPICS == ("positions", "market-ticks", "risk-actions", "risk-dlq")
    )
    for name in ("positions", "risk-actions", "risk-config", "risk-book-partials", "risk-book"):
        assert specs[name].configs["cleanup.policy"] == "compact"
    for name in ("market-ticks", "risk-dlq", "risk-alerts"):
        assert specs[name].configs["cleanup.policy"] == "delete"
        assert int(specs[name].configs["retention.ms"]) >= 7 * 24 * 3600 * 1000
    # risk-book-partials scales with the positions (its partitions are the assets' owners);
    # risk-book is one partition, read whole by every instance (D17).
    assert [specs[n].partitions for n in ALL_TOPICS] == [6, 6, 6, 1, 1, 1, 6, 1]
    assert all(s.replication_factor is None for s in DEFAULT_SPECS)


def test_topic_names_and_spec_options() -> None:
    names = TopicNames.with_prefix("dev.")
    assert names.core() == tuple("dev." + n for n in CORE_TOPICS)
    assert names.all() == tuple("dev." + n for n in ALL_TOPICS)
    specs = topic_specs(names, partitions=12, replication_factor=3, include_controls=False)
    assert [s.name for s in specs] == list(names.core())
    assert [s.partitions for s in specs] == [12, 12, 12, 1]
    assert {s.replication_factor for s in specs} == {3}
    with pytest.raises(ValueError):
        TopicSpec("x", 0)


def test_missing_topics_error_says_what_to_do() -> None:
    err = MissingTopicsError(["positions", "risk-dlq"], "kafka:9092")
    assert err.missing == ["positions", "risk-dlq"]
    text = str(err)
    assert "positions, risk-dlq" in text and "kafka:9092" in text
    assert "stream-risk topics create" in text and "--create-topics" in text


# ---------------------------------------------------------------------- broker


async def _list(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _partitions(bootstrap: str, names: list[str]) -> dict[str, set[int] | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # a full-metadata refresh: names no topic
        return {n: consumer.partitions_for_topic(n) for n in names}
    finally:
        await consumer.stop()


async def _cleanup_policy(bootstrap: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # No config-name filter: Tansu drops the connection on a filtered DescribeConfigs.
        resource = ConfigResource(ConfigResourceType.TOPIC, name)
        [response] = await admin.describe_configs([resource])
        for _err, _msg, _type, _name, entries in response.resources:
            for key, value, *_ in entries:
                if key == "cleanup.policy":
                    return str(value)
        raise AssertionError(f"no cleanup.policy in {response}")
    finally:
        await admin.close()


async def test_missing_topics_names_them_and_creates_nothing(
    kafka_bootstrap: str, topic_names: TopicNames
) -> None:
    names = list(topic_names.core())
    await create_topics(kafka_bootstrap, [TopicSpec(topic_names.market_ticks, 1)])
    missing = await missing_topics(kafka_bootstrap, [*names, names[0]])  # duplicates ignored
    assert missing == [topic_names.positions, topic_names.risk_actions, topic_names.risk_dlq]
    # Looking did not create them (Tansu would, on any metadata request naming them).
    assert await missing_topics(kafka_bootstrap, names) == missing
    assert not set(missing) & await _list(kafka_bootstrap)
    with pytest.raises(MissingTopicsError) as excinfo:
        await ensure_topics(kafka_bootstrap, topic_specs(topic_names))
    assert excinfo.value.missing == [
        *missing,
        topic_names.risk_config,
        topic_names.risk_alerts,
        topic_names.risk_book_partials,
        topic_names.risk_book,
    ]
    assert str(kafka_bootstrap) in str(excinfo.value)


@pytest.mark.not_on_mock(
    "the mock takes no CreateTopics (no controller, API not offered): create_topics falls "
    "back to auto-creation (4 partitions, no configs), tested by "
    "test_create_topics_falls_back_to_auto_creation_on_the_mock (D18)"
)
async def test_create_topics_partitions_configs_and_idempotence(
    kafka_bootstrap: str, topic_names: TopicNames
) -> None:
    specs = topic_specs(topic_names, partitions=3)
    # One exists already (a concurrent creator, or an earlier run): not an error.
    await create_topics(kafka_bootstrap, [specs[1]])

    created = await create_topics(kafka_bootstrap, specs)
    assert created == [s.name for s in specs if s.name != specs[1].name]
    assert await missing_topics(kafka_bootstrap, topic_names.all()) == []
    partitions = await _partitions(kafka_bootstrap, [s.name for s in specs])
    assert partitions == {s.name: set(range(s.partitions)) for s in specs}
    assert await _cleanup_policy(kafka_bootstrap, topic_names.positions) == "compact"
    assert await _cleanup_policy(kafka_bootstrap, topic_names.market_ticks) == "delete"

    assert await create_topics(kafka_bootstrap, specs) == []  # idempotent
    assert await ensure_topics(kafka_bootstrap, specs) == []
    assert await _partitions(kafka_bootstrap, [s.name for s in specs]) == partitions


async def test_ensure_topics_creates_when_asked(
    kafka_bootstrap: str, topic_names: TopicNames
) -> None:
    specs = topic_specs(topic_names, include_controls=False)
    assert await ensure_topics(kafka_bootstrap, specs, create=True) == list(topic_names.core())
    assert await ensure_topics(kafka_bootstrap, specs, create=True) == []
    assert await ensure_topics(kafka_bootstrap, specs) == []


async def test_probe_idempotence(kafka_bootstrap: str, kafka_broker: BrokerInfo) -> None:
    started = time.monotonic()
    supported = await probe_idempotence(kafka_bootstrap)
    elapsed = time.monotonic() - started
    if kafka_broker.is_tansu:
        assert supported is False  # InitProducerId v0 -> UnknownError (§9); fixed => update §9
        assert elapsed < 2.0  # measured: ~3 ms
    else:
        assert isinstance(supported, bool)


async def test_probe_idempotence_never_raises_on_an_unreachable_broker() -> None:
    assert await probe_idempotence(f"127.0.0.1:{free_port()}", timeout_s=5) is False


def test_helpers_do_not_need_a_loop_of_their_own(kafka_bootstrap: str) -> None:
    # Sync callers (the CLI) drive them with asyncio.run.
    import asyncio

    name = f"t{time.time_ns()}-sync"
    assert asyncio.run(missing_topics(kafka_bootstrap, [name])) == [name]
