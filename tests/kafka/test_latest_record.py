"""Over a real broker: the latest record of each position on `risk-actions` describes the
position as it is (DESIGN §3), and a feed of prices alone gives advice (DESIGN §12).

Sequences, not single answers: open, resize, tick, restart; and a price-only feed that
warms up, then gets vol from the feed. After each step the latest record per position is
compared with a fresh `POST /assess` of the position as the test itself holds it."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from stream_risk.engine import EngineConfig
from stream_risk.engine.estimates import VolEstimator
from stream_risk.sidecar import create_app

from .engine_harness import (
    BTC_MARKET,
    TopicReader,
    config,
    now_ms,
    pos,
    produce,
    running,
    tick,
    wait_for,
)

pytestmark = pytest.mark.broker

SAME = (
    "action",
    "hedge_pct",
    "risk_score",
    "suggested_hedge",
    "pnl_scenarios",
    "position_notional_usd",
    "current_unrealized_pnl",
    "risk_breakdown",
)


async def assess(
    client: TestClient[Any, Any], size: float, entry: float, age: float
) -> dict[str, Any]:
    body = {
        "position": {"asset": "BTC", "size": size, "entry_price": entry, "age_minutes": age},
        "market": {"current_price": 44_000.0, **BTC_MARKET},
    }
    resp = await client.post("/assess", data=orjson.dumps(body))
    assert resp.status == 200, await resp.text()
    out: dict[str, Any] = orjson.loads(await resp.read())
    return out


async def test_every_resize_leaves_a_latest_record_of_the_new_size(kafka_bootstrap: str) -> None:
    cfg = config(kafka_bootstrap)
    t0 = now_ms()
    # Sizes 10 → 15 → 8 → −10 (through zero, new entry) → 0; each a new version of p1.
    steps = [(10.0, 45_000.0), (15.0, 45_000.0), (8.0, 45_000.0), (-10.0, 44_500.0), (0.0, 1.0)]
    client = TestClient(TestServer(create_app()))
    await client.start_server()
    try:
        async with running(cfg), TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
            await produce(
                kafka_bootstrap, cfg.ticks_topic, [tick("BTC", t0, 44_000.0, **BTC_MARKET)]
            )
            for k, (size, entry) in enumerate(steps):
                ts = t0 + 1 + k  # one ms apart: the age (60 minutes as of ts) barely moves
                await produce(
                    kafka_bootstrap,
                    cfg.positions_topic,
                    [pos("p1", "BTC", size, entry, ts, age_minutes=60)],
                )

                def caught_up(rs: list[Any], ts: int = ts) -> bool:
                    latest = actions.latest().get("p1")
                    return latest is not None and latest["position_ts"] == ts

                await actions.until(caught_up, f"the record of step {k}")
                latest = actions.latest()["p1"]
                assert latest is not None
                # event_ts is the position's ts (later than the tick's): age exactly 60.
                want = await assess(client, size, entry, 60.0)
                for name in SAME:
                    assert latest[name] == want[name], (k, name)
                if size:
                    assert latest["suggested_hedge"]["size"] == abs(size) * 0.5  # PARTIAL
            # Five versions of p1, five records: no update went unpublished.
            assert [orjson.loads(r.value)["position_ts"] for r in actions.records] == [
                t0 + 1 + k for k in range(len(steps))
            ]
    finally:
        await client.close()


async def test_a_price_only_feed_warms_up_visibly_then_gives_advice(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(kafka_bootstrap)
    t0 = now_ms() - 30 * 60_000  # half an hour of one-minute prices, up to now
    est = VolEstimator(window=60, min_obs=20)
    prices = [44_000.0 * math.exp(0.002 * math.sin(k)) for k in range(31)]
    async with (
        running(cfg, EngineConfig(vol=est)) as proc,
        TopicReader(kafka_bootstrap, cfg.actions_topic) as actions,
    ):
        await produce(
            kafka_bootstrap, cfg.positions_topic, [pos("p1", "BTC", 10, 45_000, t0, age_minutes=60)]
        )
        # 10 prices: 9 returns, not warm. The position waits, and says why.
        await produce(
            kafka_bootstrap,
            cfg.ticks_topic,
            [tick("BTC", t0 + k * 60_000, prices[k]) for k in range(10)],
        )
        await wait_for(lambda: proc.engine.table.markets.get("BTC") is not None, "BTC market")
        await wait_for(
            lambda: proc.engine.table.markets["BTC"].ts == t0 + 9 * 60_000, "ticks consumed"
        )
        # The health loop (every 2 s) says once what BTC waits for.
        await wait_for(
            lambda: any(
                "on BTC cannot be assessed yet, missing volatility_1d" in r.getMessage()
                for r in caplog.records
            ),
            "the waiting log line",
        )
        client = TestClient(TestServer(create_app(proc, metrics=proc.metrics)))
        await client.start_server()
        try:
            rows = orjson.loads(await (await client.get("/positions")).read())["positions"]
            assert rows[0]["waiting_for"] == ["volatility_1d"]
            assert "9 of 20 returns" in rows[0]["waiting"]["volatility_1d"]
            metrics = await (await client.get("/metrics")).text()
            assert 'stream_risk_positions_waiting{asset="BTC",missing="volatility_1d"} 1.0' in (
                metrics
            )
            exposure = orjson.loads(await (await client.get("/exposure")).read())
            assert exposure["assets"]["BTC"]["net_notional_usd"] == 10 * prices[9]
            assert actions.records == []
            # 21 prices: warm. Advice, naming what the feed did not give.
            await produce(
                kafka_bootstrap,
                cfg.ticks_topic,
                [tick("BTC", t0 + k * 60_000, prices[k]) for k in range(10, 21)],
            )
            await actions.until(lambda rs: len(rs) >= 1, "the first action")
            first = orjson.loads(actions.records[0].value)
            assert first["estimated_inputs"] == [
                "volatility_1d",
                "spot_spread_bps",
                "perp_funding_rate",
                "bid_depth_usd",
                "ask_depth_usd",
            ]
            # The vol used: the estimate of those 21 prices, worked here independently.
            lam = 1 - 2 / 61
            xs = [math.log(prices[k] / prices[k - 1]) ** 2 * 1440 for k in range(1, 21)]
            weights = [lam ** (20 - k) for k in range(1, 21)]
            vol = math.sqrt(sum(w * x for w, x in zip(weights, xs, strict=True)) / sum(weights))
            assert first["inputs"]["market"]["volatility_1d"] == pytest.approx(vol, rel=1e-12)
            metrics = await (await client.get("/metrics")).text()
            assert 'stream_risk_positions_waiting{asset="BTC"' not in metrics  # read at scrape
            # The feed starts giving vol: it wins, and is no longer listed as estimated.
            await produce(
                kafka_bootstrap,
                cfg.ticks_topic,
                [tick("BTC", t0 + 21 * 60_000, prices[21], volatility_1d=0.09)],
            )

            def vol_from_feed(rs: list[Any]) -> bool:
                latest = actions.latest().get("p1")
                return latest is not None and latest["inputs"]["market"]["volatility_1d"] == 0.09

            await actions.until(vol_from_feed, "an action on the feed's vol")
            latest = actions.latest()["p1"]
            assert latest is not None and "volatility_1d" not in latest["estimated_inputs"]
            assert latest["risk_breakdown"]["volatility_regime"] == 25.0  # 0.09 ≥ 0.08
            # The log said it once per thing BTC waited for (no tick yet, then the vol
            # warm-up), not once per tick: 21 ticks went by while it waited.
            waits = [
                r.getMessage()
                for r in caplog.records
                if r.levelname == "WARNING" and "on BTC cannot be assessed yet" in r.getMessage()
            ]
            assert 1 <= len(waits) <= 2, waits
            assert len(set(waits)) == len(waits)
            assert any("missing volatility_1d (volatility_1d: estimating" in w for w in waits)
        finally:
            await client.close()
