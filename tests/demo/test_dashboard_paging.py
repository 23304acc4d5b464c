"""The dashboard in a real headless chromium, paging a book bigger than a page: the sidecar
app over an in-process `Engine` (no broker), 450 positions on three assets.

The page shows 200 rows (the first page of `GET /positions`, in position-id order), next and
previous walk the book and back, a click on an asset's card and the action filter narrow it
server side, and `?limit=` in the URL sets the page size. The page never asks for the whole
table: every `/positions` request it makes carries a limit.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from stream_risk.engine import Engine, Lineage, PositionEvent, TickEvent
from stream_risk.models import MarketTick, PositionMessage
from stream_risk.sidecar import create_app
from stream_risk.state import EngineState

from .cdp import Chromium

pytestmark = pytest.mark.timeout(120)

T0 = 1_700_000_000_000
N = 450
ASSETS = ("BTC", "ETH", "SOL")
PRICES = {"BTC": 44_000.0, "ETH": 2_000.0, "SOL": 150.0}
VOLS = {"BTC": 0.09, "ETH": 0.01, "SOL": 0.05}


def engine() -> Engine:
    e = Engine()
    events: list[Any] = []
    for a in ASSETS:
        tick = MarketTick(
            asset=a,
            ts=T0,
            current_price=PRICES[a],
            volatility_1d=VOLS[a],
            spot_spread_bps=3.0,
            perp_funding_rate=0.01,
            bid_depth_usd=5e6,
            ask_depth_usd=5e6,
        )
        events.append(TickEvent(tick, Lineage("market-ticks", 0, -1, T0)))
    for i in range(N):
        a = ASSETS[i % 3]
        pid = f"pos-{i:04d}"
        body = {
            "position_id": pid,
            "asset": a,
            "size": (1.0 + i % 7) * (1 if i % 2 else -1),
            "entry_price": PRICES[a] * 1.02,
            "ts": T0,
            "age_minutes": float(i % 300),
        }
        msg = PositionMessage.model_validate(body)
        events.append(PositionEvent(pid, msg, 0, Lineage("positions", 0, -1, T0)))
    e.step(events, T0)
    return e


class Served:
    def __init__(self, url: str, requests: list[str], engine: Engine) -> None:
        self.url, self.requests, self.engine = url, requests, engine


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    eng = engine()
    requests: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/positions"):
            requests.append(request.path_qs)
        resp: web.StreamResponse = await handler(request)
        return resp

    app = create_app(EngineState(eng))
    app.middlewares.append(record)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(f"http://127.0.0.1:{port}", requests, eng)
    finally:
        await runner.cleanup()


ROW_IDS = (
    "[...document.querySelectorAll('#rows tr[data-position-id]')].map(r => r.dataset.positionId)"
)


async def rows_when(browser: Chromium, condition: str) -> list[str]:
    await browser.wait_for(f"(() => {{ const ids = {ROW_IDS}; return {condition}; }})()", 10)
    ids: list[str] = await browser.evaluate(ROW_IDS)
    return ids


async def test_the_table_pages_through_a_book_bigger_than_a_page(served: Served) -> None:
    ids = [f"pos-{i:04d}" for i in range(N)]
    async with Chromium(1600, 1000) as browser:
        await browser.navigate(served.url + "/")
        first = await rows_when(browser, "ids.length === 200")
        assert first == ids[:200]  # position-id order (the default sort)
        assert await browser.evaluate("document.getElementById('prev').disabled") is True
        info = await browser.evaluate("document.getElementById('page-info').textContent")
        assert info == "rows 1–200 of 450 · page 1"
        assert await browser.evaluate("document.getElementById('count').textContent") == (
            "450 positions"
        )

        await browser.evaluate("document.getElementById('next').click()")
        second = await rows_when(browser, "ids[0] === 'pos-0200'")
        assert second == ids[200:400]
        await browser.evaluate("document.getElementById('next').click()")
        third = await rows_when(browser, "ids[0] === 'pos-0400'")
        assert third == ids[400:]
        assert await browser.evaluate("document.getElementById('next').disabled") is True
        assert await browser.evaluate("document.body.dataset.page") == "3"
        await browser.evaluate("document.getElementById('prev').click()")
        assert await rows_when(browser, "ids[0] === 'pos-0200'") == ids[200:400]
        await browser.evaluate("document.getElementById('prev').click()")
        assert await rows_when(browser, "ids[0] === 'pos-0000'") == ids[:200]

        # A click on an asset's card: that asset only, from its first page.
        await browser.evaluate(
            "document.querySelector('#exposure .xcard[data-asset=\"ETH\"]').click()"
        )
        eth = await rows_when(browser, "ids.length > 0 && ids[0] === 'pos-0001'")
        assert eth == [f"pos-{i:04d}" for i in range(1, N, 3)][:200]
        # The action filter, with the asset's.
        expected = sorted(
            r["position_id"]
            for r in served.engine.snapshot("ETH")
            if r["latest_action"] and r["latest_action"]["action"] == "HOLD"
        )
        assert 0 < len(expected) <= 150
        await browser.evaluate(
            "const s = document.getElementById('action-filter'); s.value = 'HOLD';"
            "s.dispatchEvent(new Event('change'))"
        )
        # (the note names the filter once the filtered page is drawn: ETH's rows may all
        # be HOLD, so the rows alone cannot tell the pages apart)
        held = await rows_when(
            browser,
            "document.getElementById('filter-note').textContent.includes('HOLD') && "
            f"ids.length === {len(expected)} && ids[0] === '{expected[0]}'",
        )
        assert held == expected
        actions = await browser.evaluate(
            "[...document.querySelectorAll('#rows tr[data-action]')].map(r => r.dataset.action)"
        )
        assert set(actions) == {"HOLD"}

        # ?limit= sets the page size.
        await browser.navigate(served.url + "/?limit=25")
        assert await rows_when(browser, "ids.length === 25") == ids[:25]
        await browser.evaluate("document.getElementById('next').click()")
        assert await rows_when(browser, "ids[0] === 'pos-0025'") == ids[25:50]

        errors = [m for m in browser.console if m.startswith(("exception", "console.error"))]
        assert not errors

    # Every read of the table was a page: a limit on each, none without one.
    assert served.requests
    assert all("limit=" in q for q in served.requests), collections.Counter(served.requests)
