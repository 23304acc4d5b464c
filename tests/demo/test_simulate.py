"""The simulator alone (docker-compose's `simulator` service) against the session broker: it
waits for its topics, then publishes ticks keyed by asset and positions keyed by id, every
record valid for the engine, and stops by itself after `duration`."""

from __future__ import annotations

import asyncio

import orjson
from kafka_helpers import consume_all, create_topics

from stream_risk.demo.options import DemoOptions
from stream_risk.demo.simulate import run_simulator
from stream_risk.kafka.topics import TopicNames, topic_specs
from stream_risk.models import MarketTick, PositionMessage
from stream_risk.settings import Settings


async def test_simulator_publishes_valid_ticks_and_positions(
    kafka_bootstrap: str, topic_names: TopicNames
) -> None:
    settings = Settings.load(
        bootstrap_servers=kafka_bootstrap,
        topic_positions=topic_names.positions,
        topic_market_ticks=topic_names.market_ticks,
    )
    opts = DemoOptions(duration=1.5, assets=3, positions=6, seed=5, plain=True)
    task = asyncio.create_task(run_simulator(opts, settings))
    await asyncio.sleep(0.5)  # it waits for the topics to exist (created by someone else)
    assert not task.done()
    specs = topic_specs(topic_names, partitions=2, include_controls=False)
    await create_topics(kafka_bootstrap, specs[:2])
    assert await asyncio.wait_for(task, 15) == 0

    ticks = await consume_all(kafka_bootstrap, topic_names.market_ticks, min_records=3)
    positions = await consume_all(kafka_bootstrap, topic_names.positions, min_records=6)
    assets = set()
    for rec in ticks:
        tick = MarketTick.model_validate(orjson.loads(rec.value))
        assert rec.key.decode() == tick.asset
        assets.add(tick.asset)
    assert assets == {"BTC", "ETH", "SOL"}
    ids = set()
    for rec in positions:
        if rec.value is None:  # a close: a tombstone of a position published before
            assert rec.key.decode() in ids
            continue
        msg = PositionMessage.model_validate(orjson.loads(rec.value))
        assert rec.key.decode() == msg.position_id
        ids.add(msg.position_id)
    assert len(ids) >= 6
