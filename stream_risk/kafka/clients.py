"""One factory for the engine's Kafka clients: every consumer and producer the processor
makes is built here, with the bootstrap servers, client id, security settings and fetch
settings given once (docs/design.md D13)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


@dataclass(frozen=True, slots=True)
class Clients:
    bootstrap_servers: str
    client_id: str
    #: Security settings (`Settings.kafka_security_kwargs()`), passed to every client.
    security: Mapping[str, Any] = field(default_factory=dict)
    fetch_max_records: int = 10_000
    fetch_max_wait_ms: int = 10
    #: "read_committed" under exactly-once: no consumer reads an aborted transaction's
    #: records (the rebuild of risk-actions, the book's contributions).
    isolation_level: str = "read_uncommitted"

    def reader(self, client_suffix: str = "") -> AIOKafkaConsumer:
        """A consumer outside any group, partitions assigned by hand, offsets never
        committed: the broadcast tables (ticks, risk-config) and the rebuild's reads."""
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id + client_suffix,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.fetch_max_records,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            isolation_level=self.isolation_level,
            **self.security,
        )

    def group_consumer(
        self, group_id: str, *, session_timeout_ms: int, heartbeat_interval_ms: int
    ) -> AIOKafkaConsumer:
        """The positions consumer: a member of `group_id`, offsets committed by the engine
        after the actions they caused are acknowledged (never auto-committed)."""
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_records=self.fetch_max_records,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            isolation_level=self.isolation_level,
            **self.security,
        )

    def producer(
        self,
        *,
        idempotent: bool,
        compression: str,
        linger_ms: int,
        max_request_size: int,
        transactional_id: str | None = None,
    ) -> AIOKafkaProducer:
        """The output producer: acks=all, idempotent where the broker allows it;
        transactional with a `transactional_id` (exactly-once, D19)."""
        return AIOKafkaProducer(
            transactional_id=transactional_id,
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=idempotent,
            compression_type=None if compression == "none" else compression,
            linger_ms=linger_ms,
            max_request_size=max_request_size,
            max_batch_size=1 << 20,
            request_timeout_ms=30_000,
            **self.security,
        )
