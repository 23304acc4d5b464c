"""The book stage over a real broker (DESIGN §13, docs/design.md D17), two processors in one
process: each holds part of the positions, both show the whole book.

The hand-worked book (latest prices BTC 40,000, ETH 2,000), as in test_exposure_alerts:

    btc-long   +10 BTC  +400,000      eth-long   +100 ETH  +200,000
    btc-short   -4 BTC  -160,000      eth-short  -300 ETH  -600,000
    BTC: net +240,000, gross 560,000  ETH: net -400,000, gross 800,000
    book: net -160,000, gross 1,360,000
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from stream_risk.kafka.app import StreamProcessor

from .engine_harness import TopicReader, config, now_ms, pos, produce, running, wait_for
from .test_exposure_alerts import _book
from .test_risk_config import send_config

pytestmark = pytest.mark.broker


def _figures(view: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {
        a: (round(e["net_notional_usd"], 6), round(e["gross_notional_usd"], 6))
        for a, e in view["assets"].items()
    }


def _shows(p: StreamProcessor, want: dict[str, tuple[float, float]]) -> Callable[[], bool]:
    return lambda: _figures(p.exposure_view()) == want


WANT = {"BTC": (240_000.0, 560_000.0), "ETH": (-400_000.0, 800_000.0)}


@pytest.mark.not_on_mock(
    "two members of one consumer group: after a rebalance the mock's group coordinator "
    "answers aiokafka's SyncGroup with INVALID_REQUEST (it is already in state Up) and "
    "aiokafka retries it until the join times out (D18)"
)
async def test_two_processors_each_show_the_whole_book(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    cfg = config(
        kafka_bootstrap,
        book_partials_topic=f"partials-{tag}",
        book_topic=f"book-{tag}",
    )
    cfg_b = dataclasses.replace(cfg, client_id="stream-risk-b")
    assert cfg.alerts_topic is not None and cfg.config_topic is not None
    t0 = now_ms()
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(running(cfg))
        b = await stack.enter_async_context(running(cfg_b))
        alerts = await stack.enter_async_context(TopicReader(kafka_bootstrap, cfg.alerts_topic))
        await wait_for(lambda: bool(a._live) and bool(b._live), "both own positions partitions", a)
        await _book(kafka_bootstrap, cfg, t0)  # the hand-worked book (module doc)
        for p in (a, b):
            await wait_for(_shows(p, WANT), "the whole book", p)
        held = len(a.engine.table.positions), len(b.engine.table.positions)
        assert sum(held) == 4
        view = b.exposure_view()
        assert view["scope"] == "book"
        assert view["book"]["net_notional_usd"] == pytest.approx(-160_000)
        assert view["book"]["gross_notional_usd"] == pytest.approx(1_360_000)
        rec = b.book_records()
        assert rec is not None and rec["BTC"]["net_size"] == pytest.approx(6)
        assert rec["ETH"]["net_size"] == pytest.approx(-200)
        # A book limit below the gross: one alert across the two processors.
        await send_config(
            kafka_bootstrap, cfg.config_topic, "global", {"max_gross_notional_usd": 1_000_000}
        )
        key = b"limit:book:max_gross_notional_usd"
        await alerts.until(lambda rs: any(r.key == key for r in rs), "the book limit alert")
        # Resize: ETH short to -100: gross 200,000 + 200,000 + 560,000 = 960,000 < 1,000,000.
        await produce(
            kafka_bootstrap, cfg.positions_topic, [pos("eth-short", "ETH", -100, 2100, t0 + 5)]
        )
        await alerts.until(
            lambda rs: sum(r.key == key for r in rs) >= 2, "the book limit alert cleared"
        )
        want2 = {"BTC": (240_000.0, 560_000.0), "ETH": (0.0, 400_000.0)}
        for p in (a, b):
            await wait_for(_shows(p, want2), "resized", p)
        states = [orjson.loads(r.value)["state"] for r in alerts.records if r.key == key]
        assert states == ["fired", "cleared"]
