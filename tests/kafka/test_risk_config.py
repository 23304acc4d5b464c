"""Live limits on `risk-config` over a real broker (DESIGN §10, docs/design.md D9).

Hand-worked numbers (the worked example of test_processor):
- btc-1: long 10 BTC at 44,000 (N 440,000), vol 0.05, spread 3, funding 0.08, depth 5e6,
  age 60 min: loss 30 (×0.05/max_loss_pct), age 60/max_hold×20, vol 15, liquidity 1.32.
- btc-2: short 5 BTC (N 220,000), age 0: loss 30, vol 15, liquidity 220,000/5e6×15 = 0.66.
- eth-1: short 200 ETH at 2,400, vol 0.02, spread 2: 12 + 0 + 5 + 7.2 = 24.2.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from stream_risk.sidecar import create_app

from .engine_harness import BTC_MARKET, TopicReader, config, now_ms, pos, produce, running, tick

pytestmark = pytest.mark.broker

LIQ_BTC1 = 440_000 / 5e6 * 15  # 1.32
#: A config change re-assesses as of its record's time (a few ms..s after the positions'
#: ts): the age, and so the score, grows by up to ~0.01 point meanwhile.
AGE_SLACK = 0.05
LIQ_BTC2 = 220_000 / 5e6 * 15  # 0.66


async def send_config(
    bootstrap: str, topic: str | None, scope: str, value: Any, changed_by: str | None = None
) -> None:
    assert topic is not None, "the engine's config topic is off in this test's config"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        body = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
        headers = [("changed-by", changed_by.encode())] if changed_by else None
        await producer.send_and_wait(topic, value=body, key=scope.encode(), headers=headers)
    finally:
        await producer.stop()


def config_actions(records: list[Any], key: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(r.value)
        for r in records
        if r.key == key and r.value is not None and orjson.loads(r.value)["trigger"] == "config"
    ]


async def _book(bootstrap: str, cfg: Any, t0: int) -> None:
    await produce(
        bootstrap,
        cfg.positions_topic,
        [
            pos("btc-1", "BTC", 10, 45000, t0, age_minutes=60),
            pos("btc-2", "BTC", -5, 45000, t0),
            pos("eth-1", "ETH", -200, 2500, t0),
        ],
    )
    await produce(
        bootstrap,
        cfg.ticks_topic,
        [
            tick("BTC", t0, 44000, **BTC_MARKET),
            tick("ETH", t0, 2400, volatility_1d=0.02, spot_spread_bps=2),
        ],
    )


async def test_asset_change_reassesses_exactly_that_assets_positions(
    kafka_bootstrap: str,
) -> None:
    cfg = config(kafka_bootstrap)
    t0 = now_ms()
    async with running(cfg):
        await _book(kafka_bootstrap, cfg, t0)
        async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            await actions.until(lambda rs: len(rs) >= 3, "first actions")
            btc1 = actions.latest()["btc-1"]
            assert btc1 is not None
            assert btc1["risk_score"] == pytest.approx(30 + 2.5 + 15 + LIQ_BTC1, abs=AGE_SLACK)
            assert btc1["action"] == "HEDGE_PARTIAL"
            assert btc1["config_version"] == {}

            await send_config(
                kafka_bootstrap, cfg.config_topic, "asset:BTC", {"max_loss_pct": 0.10}, "alice"
            )
            await actions.until(
                lambda rs: (
                    len(config_actions(rs, b"btc-1")) == 1
                    and len(config_actions(rs, b"btc-2")) == 1
                ),
                "config re-assessments",
            )
            await asyncio.sleep(0.5)  # nothing else may follow
            await actions.poll()
            b1 = config_actions(actions.records, b"btc-1")[0]
            b2 = config_actions(actions.records, b"btc-2")[0]
            # Loss halves: 0.05 / 0.10 × 30 = 15.
            assert b1["risk_score"] == pytest.approx(
                15 + 2.5 + 15 + LIQ_BTC1, abs=AGE_SLACK
            )  # 33.82
            assert b1["action"] == "HOLD"
            assert b2["risk_score"] == pytest.approx(15 + 0 + 15 + LIQ_BTC2, abs=AGE_SLACK)  # 30.66
            assert b1["config_version"] == {"asset:BTC": 0}
            assert b1["inputs"]["config"] == {"max_loss_pct": 0.10}
            assert config_actions(actions.records, b"eth-1") == []
            assert len(actions.records) == 5


async def test_precedence_across_the_four_scopes(kafka_bootstrap: str) -> None:
    cfg = config(kafka_bootstrap)
    t0 = now_ms()
    topic = cfg.config_topic
    assert topic is not None

    def score(age: float) -> float:
        return 30 + age + 15 + LIQ_BTC1

    async with running(cfg) as proc:
        await _book(kafka_bootstrap, cfg, t0)
        async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            await actions.until(lambda rs: len(rs) >= 3, "first actions")

            async def next_btc1(n: int) -> dict[str, Any]:
                await actions.until(lambda rs: len(config_actions(rs, b"btc-1")) >= n, f"#{n}")
                return config_actions(actions.records, b"btc-1")[n - 1]

            # global: age 60/240 × 20 = 5.
            await send_config(kafka_bootstrap, topic, "global", {"max_hold_minutes": 240})
            a = await next_btc1(1)
            assert a["risk_score"] == pytest.approx(score(5), abs=AGE_SLACK)
            assert a["config_version"] == {"global": 0}
            # asset: beats global: 60/120 × 20 = 10.
            await send_config(kafka_bootstrap, topic, "asset:BTC", {"max_hold_minutes": 120})
            a = await next_btc1(2)
            assert a["risk_score"] == pytest.approx(score(10), abs=AGE_SLACK)
            assert a["config_version"] == {"global": 0, "asset:BTC": 1}
            # position: beats asset: 60/60 × 20 = 20 -> 66.32, HEDGE_FULL.
            await send_config(kafka_bootstrap, topic, "position:btc-1", {"max_hold_minutes": 60})
            a = await next_btc1(3)
            assert a["risk_score"] == pytest.approx(score(20), abs=AGE_SLACK)
            assert a["action"] == "HEDGE_FULL"
            assert a["config_version"] == {"global": 0, "asset:BTC": 1, "position:btc-1": 2}
            # The message's own config beats them all: 60/600 × 20 = 2.
            await produce(
                kafka_bootstrap,
                cfg.positions_topic,
                [
                    pos(
                        "btc-1",
                        "BTC",
                        10,
                        45000,
                        t0 + 1,
                        age_minutes=60,
                        config={"max_hold_minutes": 600},
                    )
                ],
            )
            await actions.until(
                lambda rs: any(
                    r.key == b"btc-1" and orjson.loads(r.value)["position_ts"] == t0 + 1
                    for r in rs
                    if r.value
                ),
                "position update",
            )
            assert actions.latest()["btc-1"]["risk_score"] == pytest.approx(score(2), abs=AGE_SLACK)  # type: ignore[index]
            # null removes the position scope: the asset scope is in force again.
            await send_config(kafka_bootstrap, topic, "position:btc-1", None)
            await produce(
                kafka_bootstrap,
                cfg.positions_topic,
                [pos("btc-1", "BTC", 10, 45000, t0 + 2, age_minutes=60)],
            )
            await actions.until(
                lambda rs: any(
                    r.key == b"btc-1" and orjson.loads(r.value)["position_ts"] == t0 + 2
                    for r in rs
                    if r.value
                ),
                "second position update",
            )
            last = actions.latest()["btc-1"]
            assert last is not None
            assert last["risk_score"] == pytest.approx(score(10), abs=AGE_SLACK)
            assert last["config_version"] == {"global": 0, "asset:BTC": 1}
            # eth-1 is covered by global only: 0 age either way, one config action (global).
            assert len(config_actions(actions.records, b"eth-1")) == 1
        view = proc.risk_config()
        assert list(view["scopes"]) == ["global", "asset:BTC"]
        assert view["scopes"]["asset:BTC"]["effective"]["max_hold_minutes"] == 120
        assert [h["scope"] for h in view["history"]] == [
            "global",
            "asset:BTC",
            "position:btc-1",
            "position:btc-1",
        ]


async def test_bad_config_goes_to_dlq_and_the_old_config_stays(kafka_bootstrap: str) -> None:
    cfg = config(kafka_bootstrap)
    t0 = now_ms()
    topic = cfg.config_topic
    assert topic is not None
    async with running(cfg) as proc:
        await _book(kafka_bootstrap, cfg, t0)
        await send_config(kafka_bootstrap, topic, "asset:BTC", {"max_loss_pct": 0.10}, "alice")
        bad: list[tuple[str, Any]] = [
            ("asset:BTC", b"{not json"),
            ("asset:BTC", {"max_loss_pct": 2}),  # out of range (0, 1]
            ("asset:BTC", {"max_los_pct": 0.2}),  # unknown field (a typo)
            ("desk:BTC", {"max_loss_pct": 0.2}),  # no such scope
            ("asset:BTC", {"reduce_score": 90}),  # thresholds no longer descend
        ]
        for scope, value in bad:
            await send_config(kafka_bootstrap, topic, scope, value, "mallory")
        async with TopicReader(kafka_bootstrap, cfg.dlq_topic) as dlq:
            await dlq.until(lambda rs: len(rs) >= 5, "5 dead letters")
            reasons = [dict(r.headers)["error"].decode() for r in dlq.records]
            assert all(dict(r.headers)["source_topic"] == topic.encode() for r in dlq.records)
        assert "max_loss_pct" in reasons[1]
        assert "max_los_pct" in reasons[2]
        assert "desk:BTC" in reasons[3]
        assert "reduce_score" in reasons[4] or "descend" in reasons[4] or "threshold" in reasons[4]
        # The good one stays in force; the positions still act on it.
        view = proc.risk_config()
        assert view["scopes"]["asset:BTC"]["overrides"] == {"max_loss_pct": 0.10}
        assert view["history"][0]["changed_by"] == "alice"
        assert view["history"][-1]["status"] == "rejected"
        async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            # The action made under the good record (its config_version names the scope):
            # btc-1's first action, made before the record was read, may come first.
            await actions.until(
                lambda rs: "asset:BTC" in _config_version(actions, "btc-1"),
                "btc-1's action under asset:BTC",
            )
        assert actions.latest()["btc-1"]["risk_score"] == pytest.approx(  # type: ignore[index]
            15 + 2.5 + 15 + LIQ_BTC1, abs=AGE_SLACK
        )
        # GET /config over HTTP.
        client = TestClient(TestServer(create_app(proc)))
        await client.start_server()
        try:
            resp = await client.get("/config")
            assert resp.status == 200
            body = await resp.json()
        finally:
            await client.close()
        assert body["mode"] == "engine"
        assert body["scopes"]["asset:BTC"]["offset"] == 0
        assert body["scopes"]["asset:BTC"]["effective"]["max_loss_pct"] == 0.10
        assert body["history"][0]["offset"] == 0 and body["history"][0]["ts"] > 0


async def test_config_is_read_before_ready_and_survives_a_restart(kafka_bootstrap: str) -> None:
    """A new instance reads all of risk-config before it is ready: its first actions (and a
    rebuild's settling) already use it."""
    cfg = config(kafka_bootstrap)
    t0 = now_ms()
    topic = cfg.config_topic
    assert topic is not None
    await _book(kafka_bootstrap, cfg, t0)
    async with running(cfg), TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
        await actions.until(lambda rs: len(rs) >= 3, "first actions")
    # While no instance runs, the desk tightens BTC.
    await send_config(kafka_bootstrap, topic, "asset:BTC", {"max_loss_pct": 0.10})
    async with running(cfg) as proc:
        assert proc.engine.scopes["asset:BTC"][0] == {"max_loss_pct": 0.10}
        async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            # The restored BTC actions were made under another config: re-assessed.
            await actions.until(
                lambda rs: sum(1 for r in rs if r.key == b"btc-1") >= 2, "re-assessed"
            )
            b1 = actions.latest()["btc-1"]
            assert b1 is not None
            assert b1["risk_score"] == pytest.approx(15 + 2.5 + 15 + LIQ_BTC1, abs=AGE_SLACK)
            assert b1["config_version"] == {"asset:BTC": 0}


def _config_version(actions: TopicReader, pid: str) -> dict[str, int]:
    """The `config_version` of `pid`'s latest action read so far ({} without one)."""
    latest = actions.latest().get(pid)
    return {} if latest is None else dict(latest.get("config_version") or {})
