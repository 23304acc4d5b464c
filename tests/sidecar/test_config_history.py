"""`GET /config`'s history lists every risk-config record, the refused ones too (issue 16):
a record the engine never weighed (not JSON, a typo'd field, no such scope) is there with
`applied: false` and the reason, beside the applied one. Against a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kafka.engine_harness import config, running
from kafka.test_risk_config import send_config

from stream_risk.sidecar import create_app

pytestmark = pytest.mark.timeout(90)


async def test_history_lists_rejected_records_with_the_reason(kafka_bootstrap: str) -> None:
    cfg = config(kafka_bootstrap)
    topic = cfg.config_topic
    async with running(cfg) as proc:
        await send_config(kafka_bootstrap, topic, "asset:BTC", {"max_loss_pct": 0.1}, "alice")
        await send_config(kafka_bootstrap, topic, "asset:BTC", {"max_los_pct": 0.2}, "bob")
        await send_config(kafka_bootstrap, topic, "desk:BTC", {"max_loss_pct": 0.2})
        await send_config(kafka_bootstrap, topic, "asset:ETH", b"{not json")
        history: list[dict[str, Any]] = []
        async with TestClient(TestServer(create_app(proc))) as client:
            for _ in range(300):
                body = await (await client.get("/config")).json()
                history = body["history"]
                if len(history) >= 4:
                    break
                await asyncio.sleep(0.05)
    assert [(h["scope"], h["applied"], h["offset"]) for h in history] == [
        ("asset:BTC", True, 0),
        ("asset:BTC", False, 1),
        ("desk:BTC", False, 2),
        ("asset:ETH", False, 3),
    ]
    typo, scope, not_json = history[1:]
    assert typo["changed_by"] == "bob" and "max_los_pct" in typo["error"]
    assert typo["value"] == '{"max_los_pct":0.2}'
    assert "desk:BTC" in scope["error"] and "asset:" in scope["error"]
    assert not_json["status"] == "rejected" and not_json["error"]
    assert body["scopes"]["asset:BTC"]["overrides"] == {"max_loss_pct": 0.1}
