"""`--publish`: write history to the topics, so a live engine can be tested on it.

Every position record (key = position_id; a close is a tombstone) and every tick (key =
asset) is produced in the replay's event-time order — at each time, positions then ticks,
file order within each — with its original event time as the Kafka record timestamp.
Ticks are published as the offline replay's engine sees them: the market fields the data
gives (carried forward per asset), none it does not — the live engine estimates
`volatility_1d` and applies its defaults to those, with the same estimator (D12), and says
so in each action's `estimated_inputs`.

Pacing: with `speed` X > 0 a record with event time `ts` is sent `(ts − first ts) / X`
after the start (X = 1 is real time, 60 is a minute per second); 0 sends as fast as
possible. Topics must exist (checked with `list_topics()` only, which never creates
anything); `create=True` creates the missing ones with the project's specs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from stream_risk.kafka.topics import (
    MissingTopicsError,
    TopicNames,
    create_topics,
    missing_topics,
    topic_specs,
)
from stream_risk.replay.runner import Timeline

#: Sends in flight before waiting for their acknowledgements.
WINDOW = 20_000


@dataclass(slots=True)
class Published:
    ticks: int = 0
    positions: int = 0
    seconds: float = 0.0


def _tick_value(tl: Timeline, row: int) -> bytes:
    return orjson.dumps(tl.tick_fields(row))


async def publish(
    tl: Timeline,
    bootstrap_servers: str,
    topics: TopicNames,
    *,
    speed: float = 0.0,
    create: bool = False,
    client_kwargs: dict[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
) -> Published:
    """Produce `tl` to `topics.positions` and `topics.market_ticks` (see the module doc)."""
    kw = dict(client_kwargs or {})
    kw.pop("bootstrap_servers", None)
    wanted = [topics.positions, topics.market_ticks]
    if create:
        specs = [s for s in topic_specs(topics) if s.name in wanted]
        await create_topics(bootstrap_servers, specs, **kw)
    else:
        missing = await missing_topics(bootstrap_servers, wanted, **kw)
        if missing:
            raise MissingTopicsError(missing, bootstrap_servers)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, **kw)
    await producer.start()
    out = Published()
    started = time.monotonic()
    try:
        pending: list[asyncio.Future[Any]] = []
        ticks = tl.ticks
        ts_list: list[int] = ticks.ts.tolist()
        n_ticks = len(ts_list)
        t0 = tl.start
        ti = pi = 0
        n_pos = len(tl.positions)
        times = tl.times.tolist()
        every = max(1, len(times) // 200)
        for gi, t in enumerate(times):
            if speed > 0:
                delay = started + (t - t0) / 1000.0 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            while pi < n_pos and tl.positions[pi].ts == t:
                rec = tl.positions[pi]
                value = (
                    None
                    if rec.message is None
                    else orjson.dumps(rec.message.model_dump(exclude_none=True))
                )
                pending.append(
                    await producer.send(
                        topics.positions, value=value, key=rec.position_id.encode(), timestamp_ms=t
                    )
                )
                out.positions += 1
                pi += 1
            while ti < n_ticks and ts_list[ti] == t:
                key = ticks.assets[int(ticks.asset[ti])].encode()
                pending.append(
                    await producer.send(
                        topics.market_ticks,
                        value=_tick_value(tl, ti),
                        key=key,
                        timestamp_ms=t,
                    )
                )
                out.ticks += 1
                ti += 1
            if len(pending) >= WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
            if progress is not None and gi % every == 0:
                progress(gi / max(1, len(times)))
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    out.seconds = time.monotonic() - started
    if progress is not None:
        progress(1.0)
    return out
