"""The dashboard routes over a real socket (aiohttp's TestServer): the page and its files from
the package, the SSE stream (snapshot, then updates and actions as the state changes), its
end on shutdown, and the exposure arithmetic. The state is a small real `SidecarState`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

import stream_risk.sidecar.dashboard_hub as dashboard_hub
from stream_risk.engine import Engine, Lineage, PositionEvent, TickEvent
from stream_risk.models import MarketTick, PositionMessage
from stream_risk.sidecar import SidecarState, create_app
from stream_risk.sidecar.dashboard import HUB_KEY, STATIC_FILES, add_dashboard
from stream_risk.sidecar.dashboard_hub import MAX_QUEUED_FRAMES, DashboardHub
from stream_risk.sidecar.exposure import exposure_from_rows, exposure_of
from stream_risk.state import EngineState


def action(
    pid: str,
    asset: str,
    act: str,
    score: float,
    assessed_at: int,
    notional: float,
    size: float,
) -> dict[str, Any]:
    move = size * (notional / abs(size))
    return {
        "position_id": pid,
        "asset": asset,
        "action": act,
        "risk_score": score,
        "hedge_pct": 0.5 if act == "HEDGE_PARTIAL" else 0.0,
        "trigger": "tick",
        "reason_code": "SCORE_MODERATE",
        "stale_market_data": False,
        "assessed_at": assessed_at,
        "event_ts": assessed_at,
        "position_notional_usd": notional,
        "suggested_hedge": (
            {"instrument": "perp_short", "size": abs(size) / 2, "total_cost_bps": 2.5}
            if act == "HEDGE_PARTIAL"
            else None
        ),
        "pnl_scenarios": {
            "move_down_5pct": -0.05 * move,
            "move_down_2pct": -0.02 * move,
            "move_up_2pct": 0.02 * move,
            "move_up_5pct": 0.05 * move,
            "hedged_down_5pct": -0.05 * move / 2,
            "hedged_down_2pct": -0.02 * move / 2,
            "hedged_up_2pct": 0.02 * move / 2,
            "hedged_up_5pct": 0.05 * move / 2,
        },
    }


def row(pid: str, asset: str, size: float, latest: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "position_id": pid,
        "asset": asset,
        "size": size,
        "entry_price": 100.0,
        "position_ts": 1,
        "tick_ts": 2,
        "waiting_for": [] if latest else ["current_price"],
        "next_evaluation_ts": None,
        "latest_action": latest,
    }


class Book(SidecarState):
    """A table the test edits by hand."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {
            "BTC-1": row("BTC-1", "BTC", 2.0, action("BTC-1", "BTC", "HOLD", 20.0, 1000, 2e5, 2.0)),
            "BTC-2": row(
                "BTC-2", "BTC", -1.0, action("BTC-2", "BTC", "REDUCE", 36.0, 1001, 1e5, -1.0)
            ),
            "ETH-1": row("ETH-1", "ETH", 10.0, None),
        }
        self.ready = True

    def is_ready(self) -> tuple[bool, list[str]]:
        return (True, []) if self.ready else (False, ["rebuilding positions partitions [0]"])

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.rows.values() if asset is None or r["asset"] == asset]


class WithExposure(Book):
    """A state that knows the exposure at the latest tick (as the engine does)."""

    def exposure(self) -> dict[str, dict[str, float]]:
        return {"BTC": {"net_notional_usd": 150_000.0, "gross_notional_usd": 450_000.0}}


def dashboard_app(state: SidecarState, interval: float = 0.05) -> web.Application:
    app = web.Application()
    add_dashboard(app, state, interval=interval, keepalive=0.5)
    return app


@pytest.fixture
async def book() -> Book:
    return Book()


@pytest.fixture
async def client(book: Book) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(dashboard_app(book))) as c:
        yield c


async def frames(
    resp: ClientResponse, want: int, timeout: float = 5.0
) -> list[tuple[str, dict[str, Any]]]:
    """The next `want` SSE events (comments and `retry:` skipped)."""
    out: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    event, data = "message", b""
    while len(out) < want:
        line = await asyncio.wait_for(resp.content.readline(), deadline - time.monotonic())
        if not line:
            break
        line = line.rstrip(b"\n")
        if line == b"":
            if data:
                out.append((event, orjson.loads(data)))
            event, data = "message", b""
        elif line.startswith(b"event: "):
            event = line[7:].decode()
        elif line.startswith(b"data: "):
            data += line[6:]
    return out


async def until(
    resp: ClientResponse, kind: str, timeout: float = 5.0
) -> list[tuple[str, dict[str, Any]]]:
    """Events up to and including the first of `kind`."""
    got: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while not any(k == kind for k, _ in got):
        got += await frames(resp, 1, deadline - time.monotonic())
    return got


# ---------------------------------------------------------------------- the page
async def test_page_is_served_from_the_package(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert '<script src="/static/dashboard.js">' in html
    assert 'href="/static/dashboard.css"' in html
    assert html == (resources.files("stream_risk.sidecar") / "static" / "index.html").read_text()


@pytest.mark.parametrize("name", sorted(STATIC_FILES))
async def test_static_files_with_their_types(client: TestClient[Any, Any], name: str) -> None:
    resp = await client.get(f"/static/{name}")
    assert resp.status == 200
    assert resp.content_type == STATIC_FILES[name]
    assert len(await resp.read()) > 100


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/..%2Fapp.py", "/static/index.html"])
async def test_nothing_else_is_reachable(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404


def test_page_works_offline() -> None:
    """No CDN, no web fonts, no absolute URL: every reference is to this server."""
    static = resources.files("stream_risk.sidecar") / "static"
    for name in ["index.html", *STATIC_FILES]:
        text = (static / name).read_text()
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", text)
        refs += re.findall(r"""url\(([^)]+)\)""", text)
        refs += re.findall(r"""(?:EventSource|fetch)\(\s*["']([^"']+)""", text)
        for ref in refs:
            assert ref.startswith("/") and not ref.startswith("//"), (name, ref)
        if name != "favicon.svg":  # the SVG namespace URI is not a fetch
            assert "http://" not in text and "https://" not in text, name
        assert "@import" not in text


# ---------------------------------------------------------------------- the event stream
async def test_stream_starts_with_a_snapshot(client: TestClient[Any, Any], book: Book) -> None:
    async with client.get("/events") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"].startswith("no-cache")
        [(kind, snap)] = await frames(resp, 1)
    assert kind == "snapshot"
    assert "rows" not in snap  # the page reads its rows a page at a time: GET /positions
    assert snap["status"] == {"mode": "engine", "ready": True, "reasons": [], "positions": 3}
    assert set(snap["exposure"]) == {"BTC", "ETH"}
    # The feed starts from the latest actions already in the table, oldest first.
    assert [a["position_id"] for a in snap["recent"]] == ["BTC-1", "BTC-2"]
    assert snap["recent"][0]["action"] == "HOLD"


async def test_changes_are_pushed_as_updates_and_actions(
    client: TestClient[Any, Any], book: Book
) -> None:
    async with client.get("/events") as resp:
        await frames(resp, 1)  # snapshot
        # A new action on BTC-1, BTC-2 closed, ETH-1 gets its first action, a new position.
        book.rows["BTC-1"] = row(
            "BTC-1", "BTC", 2.0, action("BTC-1", "BTC", "HEDGE_PARTIAL", 47.5, 2000, 2e5, 2.0)
        )
        del book.rows["BTC-2"]
        book.rows["ETH-1"] = row(
            "ETH-1", "ETH", 10.0, action("ETH-1", "ETH", "HOLD", 12.0, 2001, 3.4e4, 10.0)
        )
        book.rows["SOL-1"] = row("SOL-1", "SOL", -5.0, None)
        got = await until(resp, "update")
        got += await frames(resp, 3)
    updates = [d for k, d in got if k == "update"]
    actions = {d["position_id"]: d for k, d in got if k == "action"}
    assert len(updates) == 1
    up = updates[0]
    assert {r["position_id"] for r in up["upserts"]} == {"BTC-1", "ETH-1", "SOL-1"}
    assert up["removed"] == ["BTC-2"]
    assert up["status"]["positions"] == 3
    assert set(up["exposure"]) == {"BTC", "ETH", "SOL"}
    assert actions["BTC-1"]["action"] == "HEDGE_PARTIAL"
    assert actions["BTC-1"]["prev_action"] == "HOLD"
    assert actions["BTC-1"]["prev_score"] == 20.0
    assert actions["BTC-1"]["instrument"] == "perp_short"
    assert actions["ETH-1"]["prev_action"] is None
    assert actions["BTC-2"]["closed"] is True
    assert actions["BTC-2"]["prev_action"] == "REDUCE"
    assert "SOL-1" not in actions  # no action yet: a row, not a feed entry


async def test_an_unchanged_table_sends_nothing_but_keepalives(
    client: TestClient[Any, Any], book: Book
) -> None:
    async with client.get("/events") as resp:
        await frames(resp, 1)
        raw = await asyncio.wait_for(resp.content.read(200), 2.0)
    assert raw.startswith(b"retry: 2000") or raw.startswith(b": ping")
    assert b"event:" not in raw


async def test_readiness_changes_are_pushed(client: TestClient[Any, Any], book: Book) -> None:
    async with client.get("/events") as resp:
        await frames(resp, 1)
        book.ready = False
        got = await until(resp, "update")
    status = got[-1][1]["status"]
    assert status["ready"] is False
    assert status["reasons"] == ["rebuilding positions partitions [0]"]


async def test_every_page_gets_the_same_frames_and_polling_stops_when_none_is_open(
    book: Book,
) -> None:
    app = dashboard_app(book)
    async with TestClient(TestServer(app)) as c:
        hub = app[HUB_KEY]
        async with c.get("/events") as r1, c.get("/events") as r2:
            await frames(r1, 1)
            await frames(r2, 1)
            assert hub.subscribers == 2
            book.rows["BTC-1"]["latest_action"] = action(
                "BTC-1", "BTC", "REDUCE", 40.0, 3000, 2e5, 2.0
            )
            book.rows["BTC-1"] = dict(book.rows["BTC-1"])
            a = await until(r1, "action")
            b = await until(r2, "action")
            assert a == b
        for _ in range(50):
            if hub.subscribers == 0:
                break
            await asyncio.sleep(0.02)
        assert hub.subscribers == 0
        polls = hub.polls
        await asyncio.sleep(0.3)
        assert hub.polls == polls  # nobody watching: the table is not read


async def test_shutdown_ends_open_streams_at_once(book: Book) -> None:
    """An open page must not hold the sidecar's shutdown for its 60 s grace period."""
    app = dashboard_app(book)
    runner = web.AppRunner(app, shutdown_timeout=30.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/events") as resp:
        await frames(resp, 1)
        t0 = time.monotonic()
        await runner.cleanup()
        took = time.monotonic() - t0
        rest = await asyncio.wait_for(resp.content.read(), 2.0)
    assert took < 2.0
    assert b"event:" not in rest


def test_a_page_that_cannot_keep_up_is_disconnected(book: Book) -> None:
    async def scenario() -> None:
        hub = DashboardHub(book, interval=60)
        slow = hub.subscribe()
        for i in range(MAX_QUEUED_FRAMES + 5):
            book.rows["BTC-1"] = row(
                "BTC-1", "BTC", 2.0, action("BTC-1", "BTC", "HOLD", 20.0 + i, 5000 + i, 2e5, 2.0)
            )
            hub._broadcast(hub._poll())
        assert hub.subscribers == 0
        items = []
        while not slow.empty():
            items.append(slow.get_nowait())
        assert items[-1] is None  # its handler ends the stream; the browser reconnects
        await hub.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------------- exposure
def test_exposure_from_rows_nets_longs_and_shorts() -> None:
    e = exposure_from_rows(Book().positions())
    btc = e["BTC"]
    assert (btc["positions"], btc["long"], btc["short"]) == (2, 1, 1)
    assert btc["long_notional_usd"] == 2e5 and btc["short_notional_usd"] == 1e5
    assert btc["net_notional_usd"] == 1e5 and btc["gross_notional_usd"] == 3e5
    assert btc["pnl_down_5pct"] == pytest.approx(-0.05 * 2e5 + 0.05 * 1e5)
    assert btc["hedged_pnl_up_5pct"] == pytest.approx((0.05 * 2e5 - 0.05 * 1e5) / 2)
    assert btc["priced_by"] == "last_action"
    eth = e["ETH"]  # waiting for market data: counted, no notional yet
    assert (eth["positions"], eth["long"], eth["gross_notional_usd"]) == (1, 1, 0.0)


def test_exposure_prefers_the_states_own_prices() -> None:
    e = exposure_of(WithExposure())
    btc = e["BTC"]
    assert btc["net_notional_usd"] == 150_000.0 and btc["gross_notional_usd"] == 450_000.0
    assert btc["long_notional_usd"] == 300_000.0 and btc["short_notional_usd"] == 150_000.0
    assert btc["priced_by"] == "tick"
    assert e["ETH"]["priced_by"] == "last_action"  # no price from the state for ETH


# ---------------------------------------------------------------------- the hooks
async def test_create_app_serves_the_dashboard_before_its_catch_all() -> None:
    """The hook in `create_app`: `/`, `/static/...` and `/events` beside the JSON API."""
    async with TestClient(TestServer(create_app(Book()))) as c:
        resp = await c.get("/")
        assert resp.status == 200 and resp.content_type == "text/html"
        assert (await c.get("/static/dashboard.js")).status == 200
        assert (await c.get("/nope")).status == 404
        async with c.get("/events") as ev:
            [(kind, _)] = await frames(ev, 1)
        assert kind == "snapshot"
        assert (await c.get("/metrics")).status == 200


async def test_get_positions_includes_net_exposure_per_asset() -> None:
    """The hook in `GET /positions`: `exposure` per asset beside the rows."""
    async with TestClient(TestServer(create_app(WithExposure()))) as c:
        body = await (await c.get("/positions")).json()
        assert body["exposure"]["BTC"]["net_notional_usd"] == 150_000.0
        assert set(body["exposure"]) == {"BTC", "ETH"}
        only = await (await c.get("/positions?asset=ETH")).json()
        assert set(only["exposure"]) == {"ETH"}


# ---------------------------------------------------------------------- a big table
def test_a_table_bigger_than_a_sweep_is_swept_a_slice_per_poll(
    book: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SWEEP_ROWS = 2 over 5 rows: a lap is three polls (two once BTC-2 is closed); a
    change or a close is reported when the sweep passes it; the first lap is history."""
    monkeypatch.setattr(dashboard_hub, "SWEEP_ROWS", 2)
    book.rows["SOL-1"] = row(
        "SOL-1", "SOL", 1.0, action("SOL-1", "SOL", "HOLD", 5.0, 900, 1e3, 1.0)
    )
    book.rows["XRP-1"] = row("XRP-1", "XRP", 1.0, None)

    def feed(frames: list[bytes]) -> list[dict[str, Any]]:
        return [
            orjson.loads(f.split(b"data: ", 1)[1]) for f in frames if f.startswith(b"event: action")
        ]

    async def scenario() -> None:
        hub = DashboardHub(book, interval=60)
        # Lap 1 (BTC-1 BTC-2 | ETH-1 SOL-1 | XRP-1): history only, oldest first.
        assert [feed(hub._poll()) for _ in range(3)] == [[], [], []]
        assert [a["position_id"] for a in hub._recent] == ["SOL-1", "BTC-1", "BTC-2"]
        # Lap 2: SOL-1 acts, BTC-2 closes. The first slice (BTC-1, BTC-2) sees the close.
        book.rows["SOL-1"] = row(
            "SOL-1", "SOL", 1.0, action("SOL-1", "SOL", "REDUCE", 38.0, 4000, 1e3, 1.0)
        )
        del book.rows["BTC-2"]
        got = feed(hub._poll())
        assert [(a["position_id"], a.get("closed")) for a in got] == [("BTC-2", True)]
        assert got[0]["prev_action"] == "REDUCE"
        got = feed(hub._poll())  # SOL-1, XRP-1: the end of the lap
        assert [(a["position_id"], a["action"], a["prev_action"]) for a in got] == [
            ("SOL-1", "REDUCE", "HOLD")
        ]
        assert hub._sweep_after is None
        assert [feed(hub._poll()) for _ in range(2)] == [[], []]  # lap 3: nothing new
        await hub.close()

    asyncio.run(scenario())


async def test_the_hub_reads_an_engine_without_building_its_table() -> None:
    """Over an engine the hub reads slices, the count and the engine's exposure sums:
    never `positions()` (the whole table)."""

    class NoRows(EngineState):
        def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
            raise AssertionError("the hub built every row")

    engine = Engine()
    msg = MarketTick(
        asset="BTC", ts=1, current_price=100.0, volatility_1d=0.05, spot_spread_bps=2.0
    )
    events: list[Any] = [TickEvent(msg, Lineage("market-ticks", 0, 0, 1))]
    for i in range(3):
        body = {
            "position_id": f"p{i}",
            "asset": "BTC",
            "size": 1.0 + i,
            "entry_price": 100.0,
            "ts": 1,
        }
        events.append(PositionEvent(f"p{i}", PositionMessage.model_validate(body), 0, Lineage()))
    engine.step(events, 2)
    async with TestClient(TestServer(dashboard_app(NoRows(engine)))) as c, c.get("/events") as r:
        [(kind, snap)] = await frames(r, 1)
    assert kind == "snapshot"
    assert snap["status"]["positions"] == 3
    btc = snap["exposure"]["BTC"]
    assert btc["positions"] == 3 and btc["net_notional_usd"] == pytest.approx(600.0)  # 6 x 100
    assert btc["priced_by"] == "tick"
    assert [a["position_id"] for a in snap["recent"]] == ["p0", "p1", "p2"]
    assert snap["desk"]["scope"] == "instance"  # an engine alone: its own positions


async def test_the_snapshot_of_the_whole_book_carries_net_advice_and_saving() -> None:
    """When the book stage runs (D17) the cards are the whole book's: the desk says so,
    each asset carries its net position's advice and saving, the book its saving."""
    from .book_state import BTC_NET_HEDGE, WholeBook

    async with TestClient(TestServer(dashboard_app(WholeBook()))) as c, c.get("/events") as r:
        [(kind, snap)] = await frames(r, 1)
    assert kind == "snapshot"
    assert snap["desk"]["scope"] == "book"
    assert snap["desk"]["book"]["saving_usd"] == 528.0
    btc = snap["exposure"]["BTC"]
    assert btc["net_advice"] == {
        "action": "HEDGE_PARTIAL",
        "hedge_pct": 0.5,
        "risk_score": 55.5,
        "suggested_hedge": BTC_NET_HEDGE,
    }
    assert btc["saving_usd"] == 528.0
    assert snap["exposure"]["SOL"]["net_advice"] is None
    assert snap["exposure"]["SOL"]["priced_by"] == "none"
