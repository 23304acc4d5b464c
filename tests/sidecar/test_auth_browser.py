"""The dashboard behind the token, in a real headless chromium (docs/design.md D22): the page
asks for the token, refuses a wrong one, and with the right one shows the book, its table
read from `GET /positions` and its live updates from `/events`, both with the HttpOnly login
cookie, which the page's script cannot read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from demo.cdp import Chromium

from stream_risk.engine import Engine, Lineage, PositionEvent, TickEvent
from stream_risk.models import MarketTick, PositionMessage
from stream_risk.sidecar import create_app
from stream_risk.sidecar.auth import HttpAuth
from stream_risk.state import EngineState

pytestmark = pytest.mark.timeout(120)

TOKEN = "TOKEN-browser-5c1e-never-shown"
T0 = 1_700_000_000_000
IDS = ("pos-a", "pos-b", "pos-c")


def engine() -> Engine:
    e = Engine()
    tick = MarketTick(
        asset="BTC",
        ts=T0,
        current_price=44_000.0,
        volatility_1d=0.05,
        spot_spread_bps=3.0,
        perp_funding_rate=0.01,
        bid_depth_usd=5e6,
        ask_depth_usd=5e6,
    )
    events: list[Any] = [TickEvent(tick, Lineage("market-ticks", 0, -1, T0))]
    for i, pid in enumerate(IDS):
        body = {"position_id": pid, "asset": "BTC", "size": 1.0 + i, "entry_price": 45_000.0}
        msg = PositionMessage.model_validate({**body, "ts": T0, "age_minutes": 30.0})
        events.append(PositionEvent(pid, msg, 0, Lineage("positions", 0, -1, T0)))
    e.step(events, T0)
    return e


class Served:
    def __init__(self, url: str, answered: list[tuple[str, int]], reached: list[str]) -> None:
        self.url, self.answered, self.reached = url, answered, reached


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    answered: list[tuple[str, int]] = []
    reached: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        # Inside the auth middleware: only what was let through gets here.
        reached.append(request.path)  # before: `/events` answers only when it ends
        resp: web.StreamResponse = await handler(request)
        answered.append((request.path, resp.status))
        return resp

    app = create_app(EngineState(engine()), auth=HttpAuth(TOKEN))
    app.middlewares.append(record)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(f"http://127.0.0.1:{port}", answered, reached)
    finally:
        await runner.cleanup()


def submit(token: str) -> str:
    return (
        f"document.getElementById('token').value = {orjson.dumps(token).decode()};"
        "document.querySelector('form[action=\"/login\"]').submit()"
    )


ROW_IDS = (
    "[...document.querySelectorAll('#rows tr[data-position-id]')].map(r => r.dataset.positionId)"
)


async def test_the_page_logs_in_and_then_reads_the_book(served: Served) -> None:
    async with Chromium(1400, 900) as browser:
        await browser.navigate(served.url + "/")
        assert await browser.evaluate("document.querySelector('#token').type") == "password"
        assert served.answered == []  # nothing reached a handler without the token
        assert "/static/" not in await browser.evaluate("document.documentElement.outerHTML")

        await browser.evaluate(submit("not-the-token-at-all"))
        text = await browser.wait_for(
            "document.querySelector('.err') && document.querySelector('.err').textContent"
        )
        assert "not the token" in text
        assert await browser.evaluate("document.getElementById('token').value") == ""
        assert served.answered == [("/login", 401)]  # the form only: no data was answered

        await browser.evaluate(submit(TOKEN))
        ids = await browser.wait_for(
            f"(() => {{ const ids = {ROW_IDS}; return ids.length === 3 && ids; }})()", 15
        )
        assert ids == list(IDS)
        await browser.wait_for("location.pathname === '/' && !document.getElementById('token')")
        # The live stream was let through (with the cookie: the page sends no header) and
        # the script cannot read the cookie.
        for _ in range(100):
            if "/events" in served.reached:
                break
            await asyncio.sleep(0.1)
        assert "/events" in served.reached
        assert await browser.evaluate("document.cookie") == ""
    answered = dict(served.answered)
    assert answered["/"] == 200 and answered["/positions"] == 200
