"""`GET /book`, `GET /book/{asset}` and the `scope` of `GET /exposure` (docs/design.md
D17): the whole book's `risk-book` records when the book stage runs, a 409 that says how to
turn it on when it is off, and `/exposure` saying whose positions it sums."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from stream_risk.engine import Engine
from stream_risk.metrics import EngineView
from stream_risk.sidecar import Metrics, SidecarState, StatelessState, create_app
from stream_risk.state import EngineState

from .book_state import RECORDS, WholeBook
from .test_app import sample


class Rows(SidecarState):
    """A state with rows and no sums of its own (`/exposure` is summed from its rows)."""

    def is_ready(self) -> tuple[bool, list[str]]:
        return True, []

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        return [{"position_id": "p1", "asset": "BTC", "size": 1.0, "latest_action": None}]


@pytest.fixture
async def whole() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(WholeBook()))) as c:
        yield c


async def get(c: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    r = await c.get(path)
    assert r.content_type == "application/json"
    return r.status, await r.json()


async def test_book_lists_every_assets_record(whole: TestClient[Any, Any]) -> None:
    status, body = await get(whole, "/book")
    assert status == 200
    assert body == {"scope": "book", "assets": RECORDS}


async def test_book_asset_is_its_record_case_insensitive(whole: TestClient[Any, Any]) -> None:
    for path in ("/book/BTC", "/book/btc", "/book/Btc"):
        status, body = await get(whole, path)
        assert status == 200, path
        assert body == RECORDS["BTC"]
        assert body["advice"]["suggested_hedge"]["size"] == 5.0
        assert body["saving_usd"] == 528.0


async def test_book_asset_not_in_the_book_is_404_naming_it(whole: TestClient[Any, Any]) -> None:
    status, body = await get(whole, "/book/XRP")
    assert status == 404
    assert body["error"] == "asset not in the book"
    assert body["asset"] == "XRP"
    assert "'XRP'" in body["detail"] and "GET /book" in body["detail"]


async def test_an_exact_name_wins_over_one_equal_but_for_case() -> None:
    records = {"ABC": dict(RECORDS["BTC"], asset="ABC"), "abc": dict(RECORDS["ETH"], asset="abc")}
    async with TestClient(TestServer(create_app(WholeBook(records)))) as c:
        assert (await get(c, "/book/abc"))[1]["asset"] == "abc"
        assert (await get(c, "/book/ABC"))[1]["asset"] == "ABC"
        assert (await get(c, "/book/Abc"))[1]["asset"] == "ABC"  # the first, sorted


@pytest.mark.parametrize("path", ["/book", "/book/BTC"])
async def test_book_stage_off_is_409_saying_how_to_turn_it_on(path: str) -> None:
    async with TestClient(TestServer(create_app(EngineState(Engine())))) as c:
        status, body = await get(c, path)
        assert status == 409
        assert body["error"] == "book stage off"
        assert body["mode"] == "engine"
        for words in ("risk-book-partials", "risk-book", "stream-risk topics create", "instance"):
            assert words in body["detail"], words
        text = await (await c.get("/metrics")).text()
        err = "stream_risk_http_errors_total"
        assert sample(text, err, path=path.replace("/BTC", "/{asset}"), kind="book_stage_off") == 1


async def test_a_stateless_sidecar_has_no_book() -> None:
    async with TestClient(TestServer(create_app(StatelessState()))) as c:
        status, body = await get(c, "/book")
        assert status == 409
        assert body["mode"] == "stateless"
        assert "stateless" in body["detail"]


async def test_book_routes_are_listed_and_only_get(whole: TestClient[Any, Any]) -> None:
    r = await whole.post("/book")
    assert r.status == 405
    assert r.headers["Allow"] == "GET"
    status, body = await get(whole, "/no/such/thing")
    assert status == 404
    assert {"GET /book", "GET /book/{asset}"} <= set(body["endpoints"])


# ---------------------------------------------------------------------- /exposure's scope
async def test_exposure_of_the_whole_book_carries_net_advice_and_saving(
    whole: TestClient[Any, Any],
) -> None:
    status, body = await get(whole, "/exposure")
    assert status == 200
    assert body["scope"] == "book"
    assert body["mode"] == "engine"
    btc = body["assets"]["BTC"]
    assert btc["positions"] == 2
    assert btc["net_notional_usd"] == 440_000.0
    assert btc["net_advice"] == {
        "action": "HEDGE_PARTIAL",
        "hedge_pct": 0.5,
        "risk_score": 55.5,
        "suggested_hedge": RECORDS["BTC"]["advice"]["suggested_hedge"],
    }
    assert btc["saving_usd"] == 528.0
    assert body["assets"]["ETH"]["net_advice"]["suggested_hedge"] is None
    assert body["assets"]["SOL"]["net_advice"] is None
    assert body["assets"]["SOL"]["saving_usd"] is None
    assert body["book"]["saving_usd"] == 528.0
    assert body["book"]["positions"] == 5


async def test_exposure_of_an_engine_alone_is_this_instance_only() -> None:
    async with TestClient(TestServer(create_app(EngineState(Engine())))) as c:
        status, body = await get(c, "/exposure")
        assert status == 200
        assert body["scope"] == "instance"
        assert body["assets"] == {}


async def test_exposure_summed_from_rows_is_this_instance_only() -> None:
    async with TestClient(TestServer(create_app(Rows()))) as c:
        status, body = await get(c, "/exposure")
        assert status == 200
        assert body["scope"] == "instance"
        assert body["assets"]["BTC"]["positions"] == 1


def test_state_defaults() -> None:
    assert StatelessState().book_records() is None
    assert EngineState(Engine()).book_records() is None
    assert EngineState(Engine()).exposure_view()["scope"] == "instance"
    assert WholeBook().book_records() == RECORDS


# ---------------------------------------------------------------------- /metrics
async def scrape(view: dict[str, Any] | None, assets: int = 50) -> str:
    registry = CollectorRegistry()
    m = Metrics.for_registry(registry)
    m.state.bind(lambda: EngineView(ready=True, exposure=view, exposure_assets=assets))
    async with TestClient(TestServer(create_app(WholeBook(), metrics=m))) as c:
        return await (await c.get("/metrics")).text()


def series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


async def test_metrics_of_the_whole_book_carry_the_net_hedge_and_saving() -> None:
    text = await scrape(WholeBook().exposure_view())
    assert sample(text, "stream_risk_exposure_whole_book") == 1
    assert series(text, "stream_risk_book_net_hedge_size") == {
        (("instrument", "spot_sell"), ("scope", "asset:BTC")): 5.0,
        (("instrument", "none"), ("scope", "asset:ETH")): 0.0,  # HOLD: no hedge
    }  # SOL: no price, no advice
    assert series(text, "stream_risk_book_hedge_saving_usd") == {
        (("scope", "book"),): 528.0,
        (("scope", "asset:BTC"),): 528.0,
        (("scope", "asset:ETH"),): 0.0,
    }
    notional = "stream_risk_exposure_notional_usd"
    assert sample(text, notional, scope="book", kind="net") == 640_000.0


async def test_book_metrics_are_bounded_to_the_largest_assets() -> None:
    records = {
        f"A{i:02d}": dict(RECORDS["BTC"], asset=f"A{i:02d}", gross_size=90.0 + i) for i in range(60)
    }
    text = await scrape(WholeBook(records).exposure_view(), assets=50)
    hedges = series(text, "stream_risk_book_net_hedge_size")
    assert len(hedges) == 50
    assert {dict(k)["scope"] for k in hedges} == {f"asset:A{i:02d}" for i in range(10, 60)}
    savings = series(text, "stream_risk_book_hedge_saving_usd")
    assert len(savings) == 51  # and the book's
    assert savings[(("scope", "book"),)] == 60 * 528.0


async def test_metrics_of_one_instance_have_no_book_figures() -> None:
    text = await scrape(EngineState(Engine()).exposure_view())
    assert sample(text, "stream_risk_exposure_whole_book") == 0
    assert series(text, "stream_risk_book_net_hedge_size") == {}
    assert series(text, "stream_risk_book_hedge_saving_usd") == {}
    text = await scrape(None)  # nothing computed (`serve`): declared, empty
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"stream_risk_book_net_hedge_size", "stream_risk_book_hedge_saving_usd"} <= names
