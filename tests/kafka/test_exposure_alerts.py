"""Exposure, notional limits and alerts over a real broker (DESIGN §10, docs/design.md D9).

The hand-worked book (latest prices BTC 40,000, ETH 2,000):

    btc-long   +10 BTC  +400,000      eth-long   +100 ETH  +200,000
    btc-short   -4 BTC  -160,000      eth-short  -300 ETH  -600,000
    BTC: net +240,000, gross 560,000  ETH: net -400,000, gross 800,000
    book: net -160,000, gross 1,360,000
    P&L = net × move: book -5 % +8,000, -2 % +3,200, +2 % -3,200, +5 % -8,000;
    BTC +5 % +12,000; ETH -5 % +20,000.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from kafka_helpers import create_topics

from stream_risk.kafka.topics import TopicSpec
from stream_risk.sidecar import create_app

from .engine_harness import TopicReader, config, now_ms, pos, produce, running, tick, wait_for
from .test_risk_config import send_config

pytestmark = pytest.mark.broker

MKT = {"volatility_1d": 0.01, "spot_spread_bps": 2}


async def _book(bootstrap: str, cfg: Any, t0: int) -> None:
    await produce(
        bootstrap,
        cfg.positions_topic,
        [
            pos("btc-long", "BTC", 10, 39000, t0),
            pos("btc-short", "BTC", -4, 41000, t0),
            pos("eth-long", "ETH", 100, 1900, t0),
            pos("eth-short", "ETH", -300, 2100, t0),
        ],
    )
    await produce(
        bootstrap, cfg.ticks_topic, [tick("BTC", t0, 40000, **MKT), tick("ETH", t0, 2000, **MKT)]
    )


def alerts_for(records: list[Any], key: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.key == key.encode()]


async def test_exposure_sums_on_a_hand_worked_book(kafka_bootstrap: str) -> None:
    cfg = config(kafka_bootstrap, health_interval_s=0.1)
    t0 = now_ms()
    async with running(cfg) as proc:
        await _book(kafka_bootstrap, cfg, t0)
        await wait_for(lambda: len(proc.engine.snapshot()) == 4, "4 positions", proc)
        await wait_for(lambda: len(proc.engine.book_exposure()["assets"]) == 2, "priced")
        await asyncio.sleep(0.3)  # a health tick refreshes the gauges
        client = TestClient(TestServer(create_app(proc, metrics=proc.metrics)))
        await client.start_server()
        try:
            view = await (await client.get("/exposure")).json()
            metrics = await (await client.get("/metrics")).text()
        finally:
            await client.close()
    btc, eth, book = view["assets"]["BTC"], view["assets"]["ETH"], view["book"]
    assert (btc["net_notional_usd"], btc["gross_notional_usd"]) == (240_000, 560_000)
    assert (eth["net_notional_usd"], eth["gross_notional_usd"]) == (-400_000, 800_000)
    assert (book["net_notional_usd"], book["gross_notional_usd"]) == (-160_000, 1_360_000)
    assert book["positions"] == 4
    assert book["pnl_down_5pct"] == pytest.approx(8_000)
    assert book["pnl_down_2pct"] == pytest.approx(3_200)
    assert book["pnl_up_2pct"] == pytest.approx(-3_200)
    assert book["pnl_up_5pct"] == pytest.approx(-8_000)
    assert btc["pnl_up_5pct"] == pytest.approx(12_000)
    assert eth["pnl_down_5pct"] == pytest.approx(20_000)
    assert view["limits"] == {} and view["breaches"] == []
    assert 'stream_risk_exposure_notional_usd{kind="gross",scope="book"} 1.36e+06' in metrics
    assert 'stream_risk_exposure_notional_usd{kind="net",scope="asset:ETH"} -400000.0' in metrics
    assert 'stream_risk_exposure_pnl_usd{move="down_5pct",scope="book"} 8000.0' in metrics


async def test_a_breach_alerts_once_and_its_clearing_once(kafka_bootstrap: str) -> None:
    cfg = config(kafka_bootstrap)
    assert cfg.config_topic is not None and cfg.alerts_topic is not None
    t0 = now_ms()
    key = "limit:asset:BTC:max_net_notional_usd"
    async with running(cfg) as proc, TopicReader(kafka_bootstrap, cfg.alerts_topic) as alerts:
        await _book(kafka_bootstrap, cfg, t0)
        await send_config(
            kafka_bootstrap, cfg.config_topic, "asset:BTC", {"max_net_notional_usd": 300_000}
        )
        await wait_for(lambda: "asset:BTC" in proc.engine.limits(), "limit in force")
        await wait_for(lambda: len(proc.engine.snapshot()) == 4, "4 positions", proc)
        fired = proc.metrics.alerts.labels(kind="exposure_limit", state="fired")
        cleared = proc.metrics.alerts.labels(kind="exposure_limit", state="cleared")
        # A check now (the alert loop's, run at once): 240,000 is within 300,000, so no
        # alert was ever emitted (the counter counts every alert, whichever check made it).
        proc.check_alerts()
        assert fired._value.get() == 0
        # +15 BTC: net 600,000 - 160,000 = 440,000 > 300,000.
        await produce(kafka_bootstrap, cfg.positions_topic, [pos("btc-long", "BTC", 15, 39000, t0)])
        await alerts.until(lambda rs: len(alerts_for(rs, key)) >= 1, "breach alert")
        first = alerts_for(alerts.records, key)[0]
        assert first["kind"] == "exposure_limit" and first["state"] == "fired"
        assert first["details"]["value_usd"] == 440_000
        assert first["details"]["limit_usd"] == 300_000
        # Ticks go on while in breach: no alert storm. Once the engine has applied the last
        # of them, a check finds nothing new, and one alert was ever emitted.
        for i in range(1, 6):
            await produce(kafka_bootstrap, cfg.ticks_topic, [tick("BTC", t0 + i, 40000 + i, **MKT)])
        await wait_for(lambda: proc.engine.table.markets["BTC"].ts == t0 + 5, "the 5 ticks")
        assert proc.check_alerts() == []
        assert fired._value.get() == 1
        # Back to 5 BTC: net 200,000 - 160,000 = 40,000: cleared, once.
        await produce(
            kafka_bootstrap, cfg.positions_topic, [pos("btc-long", "BTC", 5, 39000, t0 + 9)]
        )
        await alerts.until(lambda rs: len(alerts_for(rs, key)) >= 2, "cleared alert")
        assert proc.check_alerts() == []  # nothing pending after the clearing
        states = [a["state"] for a in alerts_for(alerts.records, key)]
        assert states == ["fired", "cleared"]
        assert (fired._value.get(), cleared._value.get()) == (1, 1)


async def test_liquidate_alert_fires_once_and_clears(kafka_bootstrap: str) -> None:
    """sol-1: long 4,000 SOL at 100 (N 400,000), age 480 min, vol 0.09, depth 2e5:
    loss 30 + age 20 + vol 25 + liquidity 15 = 90 -> LIQUIDATE. At vol 0.01: loss 6 +
    age 20 + vol 2.5 + liquidity 15 = 43.5 -> REDUCE: cleared."""
    cfg = config(kafka_bootstrap)
    assert cfg.alerts_topic is not None
    t0 = now_ms()
    key = "liquidate:position:sol-1"
    sol = {"spot_spread_bps": 5, "bid_depth_usd": 2e5}
    async with running(cfg), TopicReader(kafka_bootstrap, cfg.alerts_topic) as alerts:
        await produce(
            kafka_bootstrap,
            cfg.positions_topic,
            [pos("sol-1", "SOL", 4000, 100, t0, age_minutes=480)],
        )
        await produce(
            kafka_bootstrap, cfg.ticks_topic, [tick("SOL", t0, 100, volatility_1d=0.09, **sol)]
        )
        await alerts.until(lambda rs: len(alerts_for(rs, key)) >= 1, "liquidate alert")
        for i in range(1, 4):
            await produce(
                kafka_bootstrap,
                cfg.ticks_topic,
                [tick("SOL", t0 + i, 100 - i, volatility_1d=0.09, **sol)],
            )
        await produce(
            kafka_bootstrap, cfg.ticks_topic, [tick("SOL", t0 + 10, 100, volatility_1d=0.01, **sol)]
        )
        await alerts.until(lambda rs: len(alerts_for(rs, key)) >= 2, "cleared")
        got = alerts_for(alerts.records, key)
        assert [a["state"] for a in got] == ["fired", "cleared"]
        assert got[0]["details"]["risk_score"] == pytest.approx(90)
        assert got[1]["details"]["action"] == "REDUCE"


async def test_webhook_receives_alerts_and_a_dead_one_does_not_slow_the_engine(
    kafka_bootstrap: str,
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/dead", never)
    server = TestServer(app)
    await server.start_server()
    try:
        # A live webhook: the book's gross 1,360,000 is over a 1,000,000 global limit.
        cfg = config(kafka_bootstrap, alert_webhook=str(server.make_url("/hook")))
        assert cfg.config_topic is not None
        t0 = now_ms()
        async with running(cfg) as proc:
            await _book(kafka_bootstrap, cfg, t0)
            await send_config(
                kafka_bootstrap, cfg.config_topic, "global", {"max_gross_notional_usd": 1e6}
            )
            await wait_for(lambda: len(received) >= 1, "webhook delivery")
            assert received[0]["key"] == "limit:book:max_gross_notional_usd"
            assert received[0]["state"] == "fired"
            assert received[0]["details"]["value_usd"] == 1_360_000
            delivered = proc.metrics.alert_webhook.labels(result="delivered")._value.get()
            assert delivered == 1

        # A dead webhook (accepts, never answers): alerts wait in its queue, the engine
        # goes on at its usual pace and the failure is counted.
        cfg = config(
            kafka_bootstrap,
            alert_webhook=str(server.make_url("/dead")),
            alert_webhook_timeout_s=0.5,
            alert_webhook_attempts=2,
        )
        assert cfg.config_topic is not None
        async with running(cfg) as proc:
            await _book(kafka_bootstrap, cfg, t0)
            await send_config(
                kafka_bootstrap, cfg.config_topic, "global", {"max_gross_notional_usd": 1e6}
            )
            await wait_for(lambda: proc.alerts.fired >= 1, "alert fired")
            async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
                await actions.until(lambda rs: len(rs) >= 4, "first actions")
                sent = time.monotonic()
                await produce(
                    kafka_bootstrap,
                    cfg.ticks_topic,
                    [tick("BTC", t0 + 5, 30000, volatility_1d=0.06, spot_spread_bps=2)],
                )
                await actions.until(
                    lambda rs: any(r.value and b'"tick_ts":%d' % (t0 + 5) in r.value for r in rs),
                    "action on the new tick",
                )
                took = time.monotonic() - sent
            assert took < 1.0, f"the engine waited on the webhook ({took:.2f}s)"
            failed = proc.metrics.alert_webhook.labels(result="failed")
            await wait_for(lambda: failed._value.get() >= 1, "webhook failure counted")
    finally:
        await server.close()


async def test_a_liquidate_alert_is_not_fired_again_by_the_next_owner(
    kafka_bootstrap: str,
) -> None:
    """sol-1 as above: LIQUIDATE (score 90) on the first instance, which stops. The next
    owner rebuilds the partition, reads the LIQUIDATE back and adopts its alert: a resize to
    4,100 SOL (still LIQUIDATE: loss 30 + age 20 + vol 25 + liquidity 15) publishes a new
    LIQUIDATE action but no second `fired`; vol 0.01 clears it, once, from the new owner."""
    cfg = config(kafka_bootstrap)
    assert cfg.alerts_topic is not None
    t0 = now_ms()
    key = "liquidate:position:sol-1"
    sol = {"spot_spread_bps": 5, "bid_depth_usd": 2e5}
    await create_topics(kafka_bootstrap, [TopicSpec(cfg.alerts_topic, 1)])
    async with TopicReader(kafka_bootstrap, cfg.alerts_topic) as alerts:
        async with running(cfg):
            await produce(
                kafka_bootstrap,
                cfg.positions_topic,
                [pos("sol-1", "SOL", 4000, 100, t0, age_minutes=480)],
            )
            await produce(
                kafka_bootstrap, cfg.ticks_topic, [tick("SOL", t0, 100, volatility_1d=0.09, **sol)]
            )
            await alerts.until(lambda rs: len(alerts_for(rs, key)) >= 1, "liquidate alert")
        async with running(cfg) as second:
            await produce(
                kafka_bootstrap,
                cfg.positions_topic,
                [pos("sol-1", "SOL", 4100, 100, t0 + 1, age_minutes=480)],
            )
            await wait_for(
                lambda: second.engine.table.positions["sol-1"].size == 4100, "the resize", second
            )
            await wait_for(
                lambda: second.publisher.pending == 0 and second.publisher.idle, "published"
            )
            assert key in second.alerts.active  # adopted from the action read back
            await produce(
                kafka_bootstrap,
                cfg.ticks_topic,
                [tick("SOL", t0 + 10, 100, volatility_1d=0.01, **sol)],
            )
            await alerts.until(lambda rs: len(alerts_for(rs, key)) >= 2, "cleared")
        states = [a["state"] for a in alerts_for(alerts.records, key)]
        assert states == ["fired", "cleared"]
