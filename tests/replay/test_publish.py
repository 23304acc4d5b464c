"""`--publish`: the history written to the topics with its original timestamps, read back
from a real broker; pacing by --speed; missing topics named."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka_helpers import consume_all

from stream_risk.kafka.topics import TopicNames
from stream_risk.models import MarketTick, PositionMessage

from . import T0, replay, write_jsonl


def history(tmp_path: Path) -> tuple[Path, Path]:
    ticks = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"asset": "BTC", "ts": T0 + 1000, "current_price": 101.0, "volatility_1d": 0.05},
            {
                "asset": "BTC",
                "ts": T0,
                "current_price": 100.0,
                "volatility_1d": 0.05,
                "spot_spread_bps": 3.0,
            },
            {"asset": "ETH", "ts": T0 + 500, "current_price": 10.0, "volatility_1d": 0.04},
            {"asset": "ETH", "ts": T0 + 2000, "current_price": 11.0},
        ],
    )
    positions = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"position_id": "a", "asset": "BTC", "size": 2, "entry_price": 99, "ts": T0 + 200},
            {"position_id": "a", "closed": True, "ts": T0 + 1500},
            {"position_id": "b", "asset": "ETH", "size": -3, "entry_price": 10.5},  # at ETH's 1st
        ],
    )
    return ticks, positions


def publish(tmp_path: Path, bootstrap: str, names: TopicNames, *extra: str) -> tuple[int, float]:
    ticks, positions = history(tmp_path)
    t = time.monotonic()
    code = replay(
        "--ticks",
        ticks,
        "--positions",
        positions,
        "--publish",
        "--bootstrap-servers",
        bootstrap,
        "--positions-topic",
        names.positions,
        "--ticks-topic",
        names.market_ticks,
        "--no-progress",
        *extra,
    )
    return code, time.monotonic() - t


def test_publish_writes_both_topics_with_original_timestamps(
    tmp_path: Path, kafka_bootstrap: str, topic_names: TopicNames
) -> None:
    code, _ = publish(tmp_path, kafka_bootstrap, topic_names, "--speed", "0", "--create-topics")
    assert code == 0
    ticks = asyncio.run(consume_all(kafka_bootstrap, topic_names.market_ticks, min_records=4))
    positions = asyncio.run(consume_all(kafka_bootstrap, topic_names.positions, min_records=3))

    got = sorted((r.timestamp, r.key.decode(), orjson.loads(r.value)) for r in ticks)
    assert [(ts - T0, key) for ts, key, _ in got] == [
        (0, "BTC"),
        (500, "ETH"),
        (1000, "BTC"),
        (2000, "ETH"),
    ]
    for ts, key, value in got:
        tick = MarketTick.model_validate(value)  # a valid market-ticks record
        assert tick.asset == key and tick.ts == ts
    # Published as the offline replay's engine sees them: what the data gives, carried
    # forward per asset; nothing it does not (the live engine defaults and estimates those
    # itself and names them in estimated_inputs).
    last_eth = got[-1][2]
    assert last_eth["volatility_1d"] == 0.04 and "spot_spread_bps" not in last_eth
    assert got[2][2]["spot_spread_bps"] == 3.0  # BTC's spread carried forward
    assert "perp_funding_rate" not in got[2][2]

    recs = sorted((r.timestamp, r.key.decode(), r.value) for r in positions)
    assert [(ts - T0, key) for ts, key, _ in recs] == [(200, "a"), (500, "b"), (1500, "a")]
    assert recs[2][2] is None  # the close is a tombstone
    b = PositionMessage.model_validate(orjson.loads(recs[1][2]))
    assert (b.position_id, b.size, b.ts) == ("b", -3.0, T0 + 500)
    # One key's records stay in event-time order in their partition.
    a_records = [r for r in positions if r.key == b"a"]
    assert [r.timestamp for r in a_records] == [T0 + 200, T0 + 1500]


def test_speed_paces_the_records_by_their_event_time(
    tmp_path: Path, kafka_bootstrap: str, unique_topic: Callable[[str], str]
) -> None:
    names = TopicNames(positions=unique_topic("positions"), market_ticks=unique_topic("ticks"))
    # 2 s of event time at 4x: about 0.5 s; as fast as possible: well under that.
    code, paced = publish(tmp_path, kafka_bootstrap, names, "--speed", "4", "--create-topics")
    assert code == 0
    code, fast = publish(tmp_path, kafka_bootstrap, names, "--speed", "0")
    assert code == 0
    assert paced >= 0.5 - 0.02
    assert fast < paced


def test_missing_topics_are_named(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_names: TopicNames,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _ = publish(tmp_path, kafka_bootstrap, topic_names, "--speed", "0")
    assert code == 2
    err = capsys.readouterr().err
    assert topic_names.positions in err and topic_names.market_ticks in err
    assert "--create-topics" in err
