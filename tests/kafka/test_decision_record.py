"""The decision record of every action over a real broker (DESIGN §10, docs/design.md D9):
`reason_code`, `inputs` (fed back to `POST /assess`: the same numbers), `config_version`
and `lineage` (the positions and market-ticks records used)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from expected import ASSESS_FIELDS

from stream_risk.sidecar import create_app

from .engine_harness import BTC_MARKET, TopicReader, config, now_ms, pos, produce, running, tick
from .test_risk_config import send_config

pytestmark = pytest.mark.broker


async def test_every_action_replays_through_assess_and_names_its_records(
    kafka_bootstrap: str,
) -> None:
    cfg = config(kafka_bootstrap)
    t0 = now_ms()
    assert cfg.config_topic is not None
    async with running(cfg):
        await produce(
            kafka_bootstrap,
            cfg.positions_topic,
            [
                pos("btc-1", "BTC", 10, 45000, t0, age_minutes=60),
                pos("btc-2", "BTC", -5, 45000, t0, unrealized_pnl=-1234.5),
                pos("eth-1", "ETH", -200, 2500, t0, config={"max_hedge_cost_bps": 1}),
                pos("sol-1", "SOL", 0, 100, t0),
                pos("sol-2", "SOL", 4000, 90, t0, opened_at=t0 - 7 * 3_600_000),
            ],
        )
        await produce(
            kafka_bootstrap,
            cfg.ticks_topic,
            [
                tick("BTC", t0, 44000, **BTC_MARKET),
                tick("ETH", t0, 2400, volatility_1d=0.02, spot_spread_bps=2),
                tick("SOL", t0, 95, volatility_1d=0.09, spot_spread_bps=5, bid_depth_usd=2e5),
                tick("BTC", t0 + 1000, 42000, volatility_1d=0.07),
            ],
        )
        async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            # One action a position (the two BTC ticks may be conflated into one batch).
            await actions.until(lambda rs: len({r.key for r in rs}) >= 5, "first actions")
            await send_config(kafka_bootstrap, cfg.config_topic, "asset:SOL", {"max_loss_pct": 0.2})
            await send_config(
                kafka_bootstrap, cfg.config_topic, "global", {"max_hold_minutes": 240}
            )

            def configured(rs: list[Any]) -> bool:
                # Both changes may land in one step: one config action per position then.
                latest = actions.latest()
                return len(latest) == 5 and all(
                    a is not None
                    and "global" in a["config_version"]
                    and (a["asset"] != "SOL" or "asset:SOL" in a["config_version"])
                    for a in latest.values()
                )

            await actions.until(configured, "config re-assessments")
        async with TopicReader(kafka_bootstrap, cfg.positions_topic) as p_reader:
            await p_reader.until(lambda rs: len(rs) >= 5, "positions")
        async with TopicReader(kafka_bootstrap, cfg.ticks_topic) as t_reader:
            await t_reader.until(lambda rs: len(rs) >= 4, "ticks")

    records = [orjson.loads(r.value) for r in actions.records if r.value is not None]
    assert len(records) >= 10  # 5 first (+2 if the BTC ticks came apart) + 5..7 config
    pos_at = {(r.partition, r.offset): r for r in p_reader.records}
    tick_at = {(r.partition, r.offset): r for r in t_reader.records}
    codes = set()
    client = TestClient(TestServer(create_app()))
    await client.start_server()
    try:
        for a in records:
            # Lineage: the records named are the ones the numbers came from.
            lp, lt = a["lineage"]["position"], a["lineage"]["tick"]
            assert lp["topic"] == cfg.positions_topic and lt["topic"] == cfg.ticks_topic
            prec = pos_at[(lp["partition"], lp["offset"])]
            assert prec.key.decode() == a["position_id"]
            assert orjson.loads(prec.value)["ts"] == a["position_ts"]
            trec = orjson.loads(tick_at[(lt["partition"], lt["offset"])].value)
            assert trec["asset"] == a["asset"] and trec["ts"] == a["tick_ts"]
            assert a["inputs"]["market"]["current_price"] == trec["current_price"]
            # config_version: the scopes that cover it.
            if a["trigger"] != "config":
                assert a["config_version"] == {}  # made before any risk-config record
            elif a["asset"] == "SOL":
                assert a["config_version"] in ({"asset:SOL": 0}, {"global": 1, "asset:SOL": 0})
            else:
                assert a["config_version"] == {"global": 1}
            # The recorded inputs through POST /assess: the same numbers, bit for bit.
            inputs = a["inputs"]
            body = {
                "position": inputs["position"],
                "market": inputs["market"],
                "config": inputs["config"],
            }
            resp = await client.post("/assess", data=orjson.dumps(body))
            assert resp.status == 200, await resp.text()
            out = orjson.loads(await resp.read())
            for f in ASSESS_FIELDS:
                assert out[f] == a[f], (a["position_id"], a["trigger"], f)
            codes.add(a["reason_code"])
    finally:
        await client.close()
    # Flat, too expensive (eth-1: 1 bps limit) and score bands all occur.
    assert {"FLAT_POSITION", "HEDGE_TOO_EXPENSIVE"} <= codes
    assert any(c.startswith("SCORE_") for c in codes)
    last: dict[str, Any] = {}
    for a in records:
        last[a["position_id"]] = a
    assert last["eth-1"]["inputs"]["config"] == {"max_hedge_cost_bps": 1, "max_hold_minutes": 240}
    assert last["sol-1"]["config_version"] == {"global": 1, "asset:SOL": 0}
    assert last["btc-2"]["inputs"]["position"]["unrealized_pnl"] == -1234.5
