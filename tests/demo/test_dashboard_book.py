"""The exposure cards in a real headless chromium when the book is one book across instances
(docs/design.md D17): over a state whose book stage runs (hand-made `risk-book` records,
`tests/sidecar/book_state.py`) the cards say "whole book", each asset's card shows its net
position's advice (action, hedge size and instrument) and what it saves against hedging
each position alone, the book card the book's saving; over an engine alone they say "this
instance only" and show no net advice. The page keeps its width either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from sidecar.book_state import WholeBook

from stream_risk.engine import Engine, Lineage, PositionEvent, TickEvent
from stream_risk.models import MarketTick, PositionMessage
from stream_risk.sidecar import SidecarState, create_app
from stream_risk.state import EngineState

from .cdp import Chromium

pytestmark = pytest.mark.timeout(120)

CARD = "document.querySelector('#exposure .xcard[data-asset=\"{}\"]')"
SCOPE = "document.getElementById('exposure-scope')"
#: Nothing of the page is wider than the window, and no card's content spills out of it.
FITS = (
    "document.documentElement.scrollWidth <= window.innerWidth && "
    "[...document.querySelectorAll('#exposure .xcard, #exposure .xcard *')]"
    ".every(el => el.scrollWidth <= el.clientWidth + 1"
    " || getComputedStyle(el).display === 'inline')"
)


async def serve(state: SidecarState) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(state), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


@pytest.fixture
async def whole_book() -> AsyncIterator[str]:
    runner, url = await serve(WholeBook())
    try:
        yield url
    finally:
        await runner.cleanup()


class Instance(EngineState):
    """An engine alone, saying (when `partitions` is given) how many of the positions
    partitions it holds."""

    def __init__(self, engine: Engine, partitions: dict[str, int] | None) -> None:
        super().__init__(engine)
        self.partitions = partitions

    def exposure_view(self) -> dict[str, Any]:
        view = super().exposure_view()
        if self.partitions is not None:
            view["partitions"] = self.partitions
        return view


@pytest.fixture(params=[None, {"assigned": 2, "total": 6}], ids=["plain", "partitions"])
async def one_instance(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    engine = Engine()
    tick = MarketTick(asset="BTC", ts=1, current_price=44_000.0, volatility_1d=0.05,
                      spot_spread_bps=3.0)  # fmt: skip
    body = {"position_id": "p1", "asset": "BTC", "size": 2.0, "entry_price": 45_000.0, "ts": 1}
    events: list[Any] = [
        TickEvent(tick, Lineage("market-ticks", 0, 0, 1)),
        PositionEvent("p1", PositionMessage.model_validate(body), 0, Lineage()),
    ]
    engine.step(events, 2)
    runner, url = await serve(Instance(engine, request.param))
    try:
        yield url if request.param is None else url + "?partitions"
    finally:
        await runner.cleanup()


async def text(browser: Chromium, expression: str) -> str:
    value: str = await browser.evaluate(f"({expression}).innerText")
    return " ".join(value.split())


@pytest.mark.parametrize("width", [1600, 1280, 900])
async def test_cards_of_the_whole_book_show_net_advice_and_saving(
    whole_book: str, width: int
) -> None:
    async with Chromium(width, 1000) as browser:
        await browser.navigate(whole_book)
        await browser.wait_for(f"{CARD.format('BTC')} && {SCOPE}.dataset.scope === 'book'", 10)
        assert await text(browser, SCOPE) == "whole book"

        btc = await text(browser, CARD.format("BTC") + ".querySelector('.xadvice')")
        assert btc == (
            "net HEDGE PARTIAL 55.5 hedge 5 BTC · spot sell saves $528 vs hedging each alone"
        )
        eth = await text(browser, CARD.format("ETH") + ".querySelector('.xadvice')")
        assert eth == "net HOLD 12.0 no hedge saves $0.00 vs hedging each alone"
        sol = await text(browser, CARD.format("SOL") + ".querySelector('.xadvice')")
        assert sol == "net advice: waiting for a price"

        book = CARD.format("Book")
        assert await text(browser, book + ".querySelector('.xasset')") == "Whole book"
        assert await text(browser, book + ".querySelector('.xadvice')") == (
            "saves $528 vs hedging each alone"
        )
        assert "5 pos" in await text(browser, book)

        assert await browser.evaluate(FITS) is True, width
        errors = [m for m in browser.console if m.startswith(("exception", "console.error"))]
        assert not errors


async def test_cards_of_one_instance_say_so_and_show_no_net_advice(one_instance: str) -> None:
    async with Chromium(1600, 1000) as browser:
        await browser.navigate(one_instance)
        await browser.wait_for(f"{CARD.format('BTC')} && {SCOPE}.dataset.scope === 'instance'", 10)
        assert await text(browser, SCOPE) == (
            "this instance only"
            if "partitions" not in one_instance
            else "this instance only: 2 of the book's 6 positions partitions"
        )
        assert "risk-book-partials" in await browser.evaluate(f"{SCOPE}.title")
        assert await text(browser, CARD.format("Book") + ".querySelector('.xasset')") == (
            "This instance"
        )
        assert await browser.evaluate("document.querySelectorAll('#exposure .xadvice').length") == 0
        assert await browser.evaluate(FITS) is True
