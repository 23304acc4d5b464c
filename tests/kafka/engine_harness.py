"""A harness for tests that run the stream processor on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_helpers import mock_host

from stream_risk.engine import EngineConfig
from stream_risk.kafka import topics as topic_admin
from stream_risk.kafka.app import ProcessorConfig, StreamProcessor, topic_names

T_WAIT = 30.0


def config(bootstrap: str, **kw: Any) -> ProcessorConfig:
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": f"g-{tag}",
        "positions_topic": f"positions-{tag}",
        "ticks_topic": f"ticks-{tag}",
        "actions_topic": f"actions-{tag}",
        "dlq_topic": f"dlq-{tag}",
        "config_topic": f"config-{tag}",
        "alerts_topic": f"alerts-{tag}",
        "create_topics": True,
        # 1 s sessions: a group join takes ~1 s on the embedded broker (10 s: ~5 s).
        "session_timeout_ms": 1000,
        "heartbeat_interval_ms": 100,
    }
    base.update(kw)
    return ProcessorConfig(**base)


@contextlib.asynccontextmanager
async def running(
    cfg: ProcessorConfig, engine_config: EngineConfig | None = None
) -> AsyncIterator[StreamProcessor]:
    await premake_on_mock(cfg)
    proc = StreamProcessor(cfg, engine_config)
    await proc.start()
    task = asyncio.create_task(proc.run())
    try:
        await wait_for(lambda: proc.is_ready()[0], "processor ready", proc)
        yield proc
    finally:
        proc.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        await proc.stop()


def _specs(cfg: ProcessorConfig) -> list[topic_admin.TopicSpec]:
    """What `--create-topics` makes for `cfg` (its names; 6 partitions, 1 for the rest)."""
    names = topic_names(cfg)
    wanted = {*cfg.topics, *cfg.control_topics}
    return [s for s in topic_admin.topic_specs(names) if s.name in wanted]


async def premake_on_mock(cfg: ProcessorConfig) -> None:
    """On the mock cluster (no CreateTopics), its host makes what `create_topics=True` would
    with the specs' partition counts; elsewhere the processor makes them itself."""
    host = mock_host(cfg.bootstrap_servers)
    if host is None or not cfg.create_topics:
        return
    missing = await topic_admin.missing_topics(
        cfg.bootstrap_servers, [*cfg.topics, *cfg.control_topics]
    )
    specs = [s for s in _specs(cfg) if s.name in missing]
    await asyncio.to_thread(host.create_topics, [(s.name, s.partitions) for s in specs])


async def wait_for(
    cond: Callable[[], bool], what: str, proc: StreamProcessor | None = None
) -> None:
    deadline = time.monotonic() + T_WAIT
    while not cond():
        if time.monotonic() > deadline:
            why = proc.is_ready()[1] if proc is not None else []
            raise AssertionError(f"timed out waiting for {what}; not ready because: {why}")
        await asyncio.sleep(0.05)


async def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


class TopicReader:
    """Reads a whole topic from the beginning, accumulating records."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        c = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await c.start()
        # (Never naming the topic: it exists by now; a fresh consumer may not know it yet.)
        parts = await asyncio.wait_for(topic_admin.wait_for_partitions(c, self.topic), T_WAIT)
        tps = [TopicPartition(self.topic, p) for p in parts]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        self._consumer = c
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self) -> None:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=100)
        for recs in batch.values():
            self.records.extend(recs)

    async def until(self, cond: Callable[[list[Any]], bool], what: str) -> list[Any]:
        deadline = time.monotonic() + T_WAIT
        while not cond(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; have {len(self.records)}")
            await self.poll()
        return self.records

    def latest(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for r in self.records:
            out[r.key.decode()] = None if r.value is None else orjson.loads(r.value)
        return out


def pos(pid: str, asset: str, size: float, entry: float, ts: int, **kw: Any) -> tuple[bytes, bytes]:
    body = {"position_id": pid, "asset": asset, "size": size, "entry_price": entry, "ts": ts}
    body.update(kw)
    return pid.encode(), orjson.dumps(body)


def tick(asset: str, ts: int, price: float, **kw: Any) -> tuple[bytes, bytes]:
    body = {"asset": asset, "ts": ts, "current_price": price}
    body.update(kw)
    return asset.encode(), orjson.dumps(body)


BTC_MARKET = {
    "volatility_1d": 0.05,
    "spot_spread_bps": 3,
    "perp_funding_rate": 0.08,
    "bid_depth_usd": 5e6,
    "ask_depth_usd": 5e6,
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000
