"""Topic names, their specs, and topic administration over aiokafka's admin client.

Missing topics are found with ``list_topics()`` only: on Tansu any metadata request
naming an unknown topic (a producer send, a consumer subscribe, even
``describe_topics``) creates it with 4 partitions and default configs, so nothing
here ever names a topic to the broker before it is known to exist, except to create
it.

Every function takes ``**client_kwargs``, passed through to aiokafka unchanged
(``security_protocol``, ``ssl_context``, ``sasl_*``, ``request_timeout_ms``,
``client_id``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    IncompatibleBrokerVersion,
    KafkaError,
    TopicAlreadyExistsError,
    UnsupportedVersionError,
    for_code,
)
from aiokafka.protocol.metadata import MetadataRequest

__all__ = [
    "ALL_TOPICS",
    "CORE_TOPICS",
    "DEFAULT_PARTITIONS",
    "DEFAULT_SPECS",
    "MARKET_TICKS",
    "POSITIONS",
    "RISK_ACTIONS",
    "RISK_ALERTS",
    "RISK_BOOK",
    "RISK_BOOK_PARTIALS",
    "RISK_CONFIG",
    "RISK_DLQ",
    "MissingTopicsError",
    "TopicCreationError",
    "TopicNames",
    "TopicSpec",
    "create_topics",
    "ensure_topics",
    "missing_topics",
    "probe_idempotence",
    "topic_specs",
    "wait_for_partitions",
]

log = logging.getLogger(__name__)

POSITIONS = "positions"
MARKET_TICKS = "market-ticks"
RISK_ACTIONS = "risk-actions"
RISK_DLQ = "risk-dlq"
RISK_CONFIG = "risk-config"
RISK_ALERTS = "risk-alerts"
#: One book across instances (DESIGN §13, D17): the internal repartition topic of the
#: per-(asset, positions partition) contributions, and the net position per asset.
RISK_BOOK_PARTIALS = "risk-book-partials"
RISK_BOOK = "risk-book"

#: The four topics of the contract's §2.
CORE_TOPICS: tuple[str, ...] = (POSITIONS, MARKET_TICKS, RISK_ACTIONS, RISK_DLQ)
#: §2 plus the risk-desk controls of §10.
ALL_TOPICS: tuple[str, ...] = (
    *CORE_TOPICS,
    RISK_CONFIG,
    RISK_ALERTS,
    RISK_BOOK_PARTIALS,
    RISK_BOOK,
)

DEFAULT_PARTITIONS = 6
#: Replication factor used when a spec leaves it open: min(this, brokers in the cluster).
MAX_DEFAULT_REPLICATION = 3

_DAY_MS = 24 * 60 * 60 * 1000
_COMPACT: Mapping[str, str] = {"cleanup.policy": "compact"}


def _delete(retention_days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(retention_days * _DAY_MS)}


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topic names one deployment (or one test) uses."""

    positions: str = POSITIONS
    market_ticks: str = MARKET_TICKS
    risk_actions: str = RISK_ACTIONS
    risk_dlq: str = RISK_DLQ
    risk_config: str = RISK_CONFIG
    risk_alerts: str = RISK_ALERTS
    risk_book_partials: str = RISK_BOOK_PARTIALS
    risk_book: str = RISK_BOOK

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        """Every default name with ``prefix`` in front (e.g. per test, per environment)."""
        return cls(*(prefix + name for name in ALL_TOPICS))

    def core(self) -> tuple[str, ...]:
        """positions, market-ticks, risk-actions, risk-dlq."""
        return (self.positions, self.market_ticks, self.risk_actions, self.risk_dlq)

    def all(self) -> tuple[str, ...]:
        """The core topics plus risk-config, risk-alerts and the book's two."""
        return (
            *self.core(),
            self.risk_config,
            self.risk_alerts,
            self.risk_book_partials,
            self.risk_book,
        )


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic is created.

    ``replication_factor=None`` means min(3, number of brokers in the cluster).
    """

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a topic needs a name")
        if self.partitions < 1:
            raise ValueError(f"{self.name}: partitions must be >= 1, got {self.partitions}")
        if self.replication_factor is not None and self.replication_factor < 1:
            raise ValueError(f"{self.name}: replication_factor must be >= 1")


def topic_specs(
    names: TopicNames | None = None,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int | None = None,
    include_controls: bool = True,
) -> list[TopicSpec]:
    """The specs of the project's topics.

    - positions, risk-actions: compacted (the latest value per key is the table),
      ``partitions`` partitions (they bound the consumer group's scale-out).
    - market-ticks: ``partitions`` partitions, delete policy, 7 days' retention.
    - risk-dlq: 1 partition (low volume, one ordered record of what went wrong),
      delete policy, 30 days' retention (time to investigate and replay).
    - risk-config (compacted) and risk-alerts (delete, 30 days): 1 partition each;
    - risk-book-partials (compacted, ``partitions``: the owners of assets scale with it)
      and risk-book (compacted, 1 partition: every instance reads all of it) (D17);
      with ``include_controls=False`` these four are left out.
    """
    n = names or TopicNames()
    rf = replication_factor
    specs = [
        TopicSpec(n.positions, partitions, dict(_COMPACT), rf),
        TopicSpec(n.market_ticks, partitions, _delete(7), rf),
        TopicSpec(n.risk_actions, partitions, dict(_COMPACT), rf),
        TopicSpec(n.risk_dlq, 1, _delete(30), rf),
    ]
    if include_controls:
        specs += [
            TopicSpec(n.risk_config, 1, dict(_COMPACT), rf),
            TopicSpec(n.risk_alerts, 1, _delete(30), rf),
            TopicSpec(n.risk_book_partials, partitions, dict(_COMPACT), rf),
            TopicSpec(n.risk_book, 1, dict(_COMPACT), rf),
        ]
    return specs


#: The specs with the default names and partition counts.
DEFAULT_SPECS: tuple[TopicSpec, ...] = tuple(topic_specs())


class MissingTopicsError(Exception):
    """Topics the engine needs do not exist on the broker."""

    def __init__(self, missing: Sequence[str], bootstrap_servers: str | None = None) -> None:
        self.missing = list(missing)
        self.bootstrap_servers = bootstrap_servers
        where = f" on {bootstrap_servers}" if bootstrap_servers else ""
        super().__init__(
            f"missing Kafka topic(s){where}: {', '.join(self.missing)}. "
            "Run `stream-risk topics create` or pass --create-topics."
        )


class TopicCreationError(Exception):
    """The broker refused to create a topic, or it did not show up afterwards."""


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


@contextlib.asynccontextmanager
async def _admin(bootstrap: str, client_kwargs: Mapping[str, Any]) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def _list(admin: Any) -> set[str]:
    return set(await admin.list_topics())


async def missing_topics(bootstrap: str, names: Iterable[str], **client_kwargs: Any) -> list[str]:
    """The names in ``names`` that do not exist, in the given order.

    Uses ``list_topics()`` only, so it never creates anything (see the module doc).
    """
    wanted = _unique(names)
    async with _admin(bootstrap, client_kwargs) as admin:
        existing = await _list(admin)
    return [name for name in wanted if name not in existing]


async def _replication_factor(admin: Any) -> int:
    info: dict[str, Any] = await admin.describe_cluster()
    brokers = len(info.get("brokers") or []) or 1
    return min(MAX_DEFAULT_REPLICATION, brokers)


class _NoCreateTopics(Exception):
    """The broker cannot take a CreateTopics request (why, in the message)."""


async def _create_request(admin: Any, new_topics: list[NewTopic], timeout_s: float) -> Any:
    """Admin CreateTopics, or `_NoCreateTopics` where the broker has no way to take it: no
    controller in its metadata (librdkafka's mock cluster answers controller id 0 with no
    broker 0: aiokafka then fails on `None.nodeId`), or the API not offered at all."""
    try:
        await admin._client.force_metadata_update()
        if admin._client.cluster.controller is None:
            raise _NoCreateTopics("its metadata names no controller")
        return await admin.create_topics(new_topics, timeout_ms=max(1, int(timeout_s * 1000)))
    except (IncompatibleBrokerVersion, UnsupportedVersionError) as exc:
        raise _NoCreateTopics(f"it does not offer CreateTopics ({exc!r})") from None


async def _auto_create(
    admin: Any, bootstrap: str, todo: Sequence[TopicSpec], why: str
) -> list[str]:
    """Make `todo` the only other way a broker allows: a metadata request naming them with
    auto-creation allowed. The broker picks partitions and configs: say so, loudly."""
    names = [spec.name for spec in todo]
    request = MetadataRequest(names, allow_auto_topic_creation=True)
    try:
        await admin._client.send(admin._client.get_random_node(), request)
    except KafkaError as exc:
        raise TopicCreationError(
            f"the broker at {bootstrap} cannot create topics ({why}) and auto-creating "
            f"{', '.join(names)} failed: {exc}; create them with the broker's own tools"
        ) from None
    await admin._client.force_metadata_update()
    cluster = admin._client.cluster
    made: list[str] = []
    for spec in todo:
        got = cluster.partitions_for_topic(spec.name)
        if not got:
            continue
        made.append(spec.name)
        differs = len(got) != spec.partitions or bool(spec.configs)
        log.warning(
            "the broker at %s cannot create topics (%s): %s was made by auto-creation with "
            "%d partitions and the broker's default configs%s",
            bootstrap,
            why,
            spec.name,
            len(got),
            (
                f" (asked: {spec.partitions} partitions, {dict(spec.configs) or 'defaults'}); "
                "create it with the broker's own tools to have those"
            )
            if differs
            else "",
        )
    return made


async def wait_for_partitions(
    consumer: AIOKafkaConsumer,
    topic: str,
    *,
    on_wait: Any = None,
    first_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
) -> list[int]:
    """The partitions of `topic` (known to exist), waiting for the broker's metadata.

    A consumer knows a topic's partitions only once a metadata response listing them has
    arrived: aiokafka's first one may list no topic at all (Apache Kafka and librdkafka's
    mock answer an empty topic list with none; Tansu with all), a topic just created may
    have no partitions or leaders yet, and a broker in a leader election answers without
    them. So: ask for all topics' metadata (never naming the topic: that would create it
    on a broker that auto-creates), retry with backoff (doubling to `max_delay_s`), and
    tell `on_wait(reason)` what it waits for (`on_wait(None)` when done). It waits until
    cancelled; it is logged once, then once a minute.
    """
    delay = first_delay_s
    waited = False
    last_log = -math.inf
    since = time.monotonic()
    client = consumer._client
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            if waited:
                if on_wait is not None:
                    on_wait(None)
                took = time.monotonic() - since
                (log.info if took >= 1.0 else log.debug)(
                    "%s: %d partitions known after %.2fs", topic, len(parts), took
                )
            return sorted(parts)
        waited = True
        reason = f"waiting for the broker's metadata of topic {topic} (no partitions known yet)"
        if on_wait is not None:
            on_wait(reason)
        now = time.monotonic()
        if now - since >= 1.0 and now - last_log >= 60.0:
            log.warning("%s; retrying every %gs at most", reason, max_delay_s)
            last_log = now
        try:
            await asyncio.wait_for(client.force_metadata_update(), max(1.0, max_delay_s))
        except (KafkaError, TimeoutError, OSError) as exc:
            log.debug("metadata update failed: %r", exc)
        if consumer.partitions_for_topic(topic):
            continue
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


async def create_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    *,
    timeout_s: float = 30.0,
    **client_kwargs: Any,
) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet; return those it created.

    Idempotent: existing topics are left alone (their partitions and configs are not
    checked or changed), and a topic created concurrently by someone else counts as
    existing. Waits until every topic of ``specs`` is listed by the broker.

    Raises:
        TopicCreationError: the broker refused a topic, or a topic was not listed
            within ``timeout_s``.
    """
    by_name: dict[str, TopicSpec] = {}
    for spec in specs:
        by_name.setdefault(spec.name, spec)
    if not by_name:
        return []
    created: list[str] = []
    async with _admin(bootstrap, client_kwargs) as admin:
        existing = await _list(admin)
        todo = [spec for name, spec in by_name.items() if name not in existing]
        if todo:
            default_rf = None
            if any(spec.replication_factor is None for spec in todo):
                default_rf = await _replication_factor(admin)
            new_topics = [
                NewTopic(
                    spec.name,
                    spec.partitions,
                    spec.replication_factor or default_rf,
                    topic_configs=dict(spec.configs),
                )
                for spec in todo
            ]
            try:
                response = await _create_request(admin, new_topics, timeout_s)
            except _NoCreateTopics as exc:
                created = await _auto_create(admin, bootstrap, todo, str(exc))
                response = None
            errors: list[str] = []
            for topic, code, *rest in response.topic_errors if response is not None else ():
                if code == 0:
                    created.append(topic)
                elif code == TopicAlreadyExistsError.errno:
                    continue
                else:
                    message = rest[0] if rest and rest[0] else for_code(code).__name__
                    errors.append(f"{topic}: {message} (error code {code})")
            if errors:
                raise TopicCreationError(
                    f"the broker at {bootstrap} refused to create: {'; '.join(errors)}"
                )
            if response is not None:
                log.info("created topics %s on %s", ", ".join(created) or "(none)", bootstrap)

        # Metadata can lag behind CreateTopics on a multi-broker cluster: wait until listed.
        deadline = time.monotonic() + timeout_s
        while True:
            absent = [name for name in by_name if name not in await _list(admin)]
            if not absent:
                break
            if time.monotonic() >= deadline:
                raise TopicCreationError(
                    f"topic(s) {', '.join(absent)} not listed by {bootstrap} "
                    f"{timeout_s:g}s after creating them"
                )
            await asyncio.sleep(0.1)
    return [name for name in by_name if name in created]


async def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    *,
    create: bool = False,
    **client_kwargs: Any,
) -> list[str]:
    """Check the topics of ``specs`` exist; with ``create=True``, create the missing ones.

    Returns the topics it created (always empty without ``create``).

    Raises:
        MissingTopicsError: ``create`` is false and some topics are missing.
        TopicCreationError: see :func:`create_topics`.
    """
    spec_list = list(specs)
    if create:
        return await create_topics(bootstrap, spec_list, **client_kwargs)
    missing = await missing_topics(bootstrap, [s.name for s in spec_list], **client_kwargs)
    if missing:
        raise MissingTopicsError(missing, bootstrap)
    return []


#: `probe_transactions`' answers.
TXN_NONE = "none"  # no transactional producer starts (Tansu 0.6)
TXN_UNFENCED = "unfenced"  # transactions run, an older epoch is not fenced (the mock cluster)
TXN_OK = "ok"  # transactions, and a newer producer of an id fences the older (Apache Kafka)


async def probe_transactions(
    bootstrap: str,
    transactional_id: str,
    topic: str,
    group_id: str,
    *,
    timeout_s: float = 10.0,
    **client_kwargs: Any,
) -> str:
    """What the broker's transactions give: `TXN_NONE`, `TXN_UNFENCED` or `TXN_OK`.

    A transactional producer starts (InitProducerId), begins a transaction; a second one of
    the same id starts (the epoch moves on); the first then adds an offset of `topic`[0] for
    `group_id` to its transaction and commits. A broker that fences (Apache Kafka, KIP-98)
    refuses that (`ProducerFenced` / `InvalidProducerEpoch`): nothing is committed. One
    that lets it commit cannot stop a zombie (librdkafka's mock cluster, docs/design.md
    D18). Never raises (except on cancellation); the producers are always stopped."""
    from aiokafka.structs import TopicPartition as TP

    kwargs = {**client_kwargs, "enable_idempotence": True, "acks": "all"}
    first = second = None
    try:
        first = AIOKafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=transactional_id, **kwargs
        )
        await asyncio.wait_for(first.start(), timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("no transactional producer starts on %s: %r", bootstrap, exc)
        with contextlib.suppress(Exception):
            if first is not None:
                await first.stop()
        return TXN_NONE
    try:
        await first.begin_transaction()
        second = AIOKafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=transactional_id, **kwargs
        )
        await asyncio.wait_for(second.start(), timeout_s)
        try:
            await asyncio.wait_for(
                first.send_offsets_to_transaction({TP(topic, 0): 0}, group_id), timeout_s
            )
            await asyncio.wait_for(first.commit_transaction(), timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # fenced, as it must be
            log.info("transactions on %s fence an older producer: %r", bootstrap, exc)
            return TXN_OK
        return TXN_UNFENCED
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("transactions do not run on %s: %r", bootstrap, exc)
        return TXN_NONE
    finally:
        for p in (first, second):
            if p is not None:
                with contextlib.suppress(Exception):
                    await p.stop()


async def probe_idempotence(
    bootstrap: str, *, timeout_s: float = 10.0, **client_kwargs: Any
) -> bool:
    """Whether an idempotent producer (``enable_idempotence=True``, ``acks="all"``) starts.

    Never raises (except on cancellation): any failure to start, including an
    unreachable broker or the time-out, answers ``False`` and is logged at INFO. On
    Tansu 0.6 the start fails with ``UnknownError`` (InitProducerId v0 is rejected) in
    a few milliseconds. The producer is always stopped.
    """
    kwargs = {**client_kwargs, "enable_idempotence": True, "acks": "all"}
    producer: AIOKafkaProducer | None = None
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **kwargs)
        await asyncio.wait_for(producer.start(), timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("idempotent producer does not start on %s: %r", bootstrap, exc)
        return False
    finally:
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
    return True
