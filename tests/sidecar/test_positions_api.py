"""`GET /positions` pages, `GET /positions/{id}` and `GET /exposure` over a real `Engine`
(`EngineState`, no broker) served by the sidecar app: order and completeness of a walk while
positions come and go, the filters, the scan budget's partial pages, 422s naming the
parameter, and exposure against numbers worked by hand (docs/design.md D14)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import stream_risk.sidecar.positions as sidecar_positions
from stream_risk.config import DEFAULT_CONFIG
from stream_risk.engine import Engine, EngineConfig, Lineage, PositionEvent, TickEvent
from stream_risk.engine.views import PositionQuery, PositionsPage
from stream_risk.models import MarketTick, PositionMessage
from stream_risk.sidecar import StatelessState, create_app
from stream_risk.state import EngineState

T0 = 1_700_000_000_000


def tick(asset: str, price: float, vol: float = 0.05) -> TickEvent:
    return TickEvent(
        MarketTick(
            asset=asset,
            ts=T0,
            current_price=price,
            volatility_1d=vol,
            spot_spread_bps=3.0,
            perp_funding_rate=0.08,
            bid_depth_usd=5e6,
            ask_depth_usd=5e6,
        ),
        Lineage("market-ticks", 0, -1, T0),
    )


def pos(pid: str, asset: str, size: float, entry: float, age: float = 60.0) -> PositionEvent:
    msg = PositionMessage.model_validate(
        {"position_id": pid, "asset": asset, "size": size, "entry_price": entry, "ts": T0,
         "age_minutes": age}
    )  # fmt: skip
    return PositionEvent(pid, msg, 0, Lineage("positions", 0, -1, T0))


def close(pid: str) -> PositionEvent:
    return PositionEvent(pid, None, 0, Lineage("positions", 0, -1, -1))


class NoRows(EngineState):
    """The engine's state, failing if the sidecar ever asks for the whole table."""

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        raise AssertionError("the sidecar built every row")


def book(n: int = 50) -> Engine:
    """p000..p{n-1}: even ids on BTC (daily vol 0.09, extreme), odd on ETH (0.01, calm),
    p000 on XRP (no tick: no action)."""
    engine = Engine()
    events: list[Any] = [tick("BTC", 44_000.0, vol=0.09), tick("ETH", 2_000.0, vol=0.01)]
    for i in range(n):
        asset = "XRP" if i == 0 else ("BTC" if i % 2 == 0 else "ETH")
        entry = 45_000.0 if asset == "BTC" else 2_100.0
        events.append(pos(f"p{i:03d}", asset, 1.0 + i * (1 if i % 3 else -1), entry))
    engine.step(events, T0)
    return engine


@pytest.fixture
async def engine() -> Engine:
    return book()


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(NoRows(engine)))) as c:
        yield c


async def get(c: TestClient[Any, Any], path: str, **params: Any) -> tuple[int, Any]:
    r = await c.get(path, params={k: str(v) for k, v in params.items()})
    return r.status, await r.json()


async def walk(c: TestClient[Any, Any], **params: Any) -> tuple[list[str], list[Any]]:
    ids: list[str] = []
    pages: list[Any] = []
    cursor = None
    for _ in range(1000):
        q = dict(params, **({"cursor": cursor} if cursor else {}))
        status, body = await get(c, "/positions", **q)
        assert status == 200, body
        pages.append(body)
        ids += [r["position_id"] for r in body["positions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages
    raise AssertionError("the walk never ended")


# ---------------------------------------------------------------------- pages
async def test_pages_walk_every_position_once_in_order(client: TestClient[Any, Any]) -> None:
    ids, pages = await walk(client, limit=7)
    assert ids == [f"p{i:03d}" for i in range(50)]
    assert [p["count"] for p in pages] == [7] * 7 + [1]
    assert all(p["total"] == 50 and p["limit"] == 7 for p in pages)
    assert not any(p["partial"] for p in pages)
    first = pages[0]["positions"][0]
    assert first["position_id"] == "p000" and first["waiting_for"] == ["current_price"]
    assert pages[0]["positions"][1]["latest_action"]["position_id"] == "p001"
    # Default limit 100: one page, no cursor.
    _, body = await get(client, "/positions")
    assert body["count"] == 50 and body["limit"] == 100 and body["next_cursor"] is None


async def test_a_walk_stays_exact_while_positions_come_and_go(
    client: TestClient[Any, Any], engine: Engine
) -> None:
    """Closed between pages: never seen after; opened ahead of the cursor: seen; behind it:
    not; everything there all along: seen once, in order."""
    kept = {f"p{i:03d}" for i in range(50)}
    opened_ahead: set[str] = set()
    seen: list[str] = []
    cursor = None
    step = 0
    while True:
        _, body = await get(client, "/positions", limit=6, **({"cursor": cursor} if cursor else {}))
        seen += [r["position_id"] for r in body["positions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        last = seen[-1]
        step += 1
        # Close one ahead of the cursor and one behind it; open one ahead, one behind.
        ahead = sorted(p for p in kept if p > last)
        behind = sorted(p for p in kept if p <= last)
        changes = []
        for pid in (ahead[:1] + behind[:1]) if ahead else behind[:1]:
            changes.append(close(pid))
            kept.discard(pid)
        new_ahead, new_behind = f"{last}-n{step}", f"a-n{step}"
        changes += [pos(new_ahead, "BTC", 1.0, 44_000.0), pos(new_behind, "BTC", 1.0, 44_000.0)]
        opened_ahead.add(new_ahead)
        engine.step(changes, T0)
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert kept - {p for p in kept if p.startswith("a-")} <= set(seen)
    assert opened_ahead <= set(seen)
    assert not any(p.startswith("a-") for p in seen)


async def test_filters(client: TestClient[Any, Any], engine: Engine) -> None:
    rows = engine.snapshot()

    def brute(asset: str | None = None, action: str | None = None, lo: float = -1.0,
              hi: float = 101.0) -> list[str]:  # fmt: skip
        return sorted(
            r["position_id"]
            for r in rows
            if (asset is None or r["asset"].lower() == asset.lower())
            and (
                (action is None and lo < 0 and hi > 100)
                or (
                    r["latest_action"] is not None
                    and (action is None or r["latest_action"]["action"] == action)
                    and lo <= r["latest_action"]["risk_score"] <= hi
                )
            )
        )

    ids, pages = await walk(client, asset="btc", limit=5)
    assert ids == brute("BTC") == [f"p{i:03d}" for i in range(2, 50, 2)]
    assert pages[0]["filter"]["asset"] == "btc" and pages[0]["total"] == 24
    assert set(pages[0]["exposure"]) == {"BTC"}
    assert (await walk(client, asset="xrp"))[0] == ["p000"]
    assert (await walk(client, asset="DOGE"))[0] == []
    actions = {r["latest_action"]["action"] for r in rows if r["latest_action"]}
    assert len(actions) >= 2  # the book has more than one action to filter on
    for action in actions:
        ids, pages = await walk(client, action=action.lower(), limit=4)
        assert ids == brute(action=action), action
        assert pages[0]["filter"]["action"] == action
    assert (await walk(client, min_score=45))[0] == brute(lo=45)
    assert (await walk(client, max_score=45, asset="ETH"))[0] == brute("ETH", hi=45)
    assert (await walk(client, min_score=40, max_score=50))[0] == brute(lo=40, hi=50)
    assert (await walk(client, min_score=0))[0] == [f"p{i:03d}" for i in range(1, 50)]


async def test_the_scan_budget_gives_partial_pages_and_continuing_reaches_the_end(
    client: TestClient[Any, Any], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidecar_positions, "SCAN_BUDGET", 10)
    monkeypatch.setattr(sidecar_positions, "CHUNK_SCAN", 4)
    # LIQUIDATE: no position of this book (checked): every page is empty but the last
    # says where to go on from, until the end.
    assert not any(
        r["latest_action"] and r["latest_action"]["action"] == "LIQUIDATE"
        for r in engine.snapshot()
    )
    ids, pages = await walk(client, action="LIQUIDATE")
    assert ids == []
    assert [p["scanned"] for p in pages] == [10] * 5
    assert [p["partial"] for p in pages] == [True] * 4 + [False]
    assert pages[0]["count"] == 0 and pages[0]["next_cursor"] is not None
    # min_score=0: every position with an action (49 of 50) in pages of at most 10 scanned.
    ids, pages = await walk(client, min_score=0, limit=100)
    assert ids == [f"p{i:03d}" for i in range(1, 50)]
    assert [p["count"] for p in pages] == [9] + [10] * 4
    assert all(p["scanned"] <= 10 for p in pages)


async def test_a_page_is_read_in_bounded_chunks() -> None:
    """A page of 1000 is read from the state in chunks of at most CHUNK_ROWS rows and
    CHUNK_SCAN candidates (the loop is free between them)."""
    calls: list[PositionQuery] = []

    class Spy(EngineState):
        def positions_page(self, query: PositionQuery) -> PositionsPage:
            calls.append(query)
            return super().positions_page(query)

    engine = Engine()
    engine.step([pos(f"q{i:05d}", "BTC", 1.0, 44_000.0) for i in range(2500)], T0)
    async with TestClient(TestServer(create_app(Spy(engine)))) as c:
        _, body = await get(c, "/positions", limit=1000)
        assert body["count"] == 1000
        assert [r["position_id"] for r in body["positions"]] == [f"q{i:05d}" for i in range(1000)]
        assert len(calls) == 1000 // sidecar_positions.CHUNK_ROWS
        assert all(q.limit <= sidecar_positions.CHUNK_ROWS for q in calls)
        calls.clear()
        _, body = await get(c, "/positions", limit=1000, action="HOLD")  # no tick: no action
        assert body["count"] == 0 and body["scanned"] == 2500 and body["next_cursor"] is None
        assert all(q.budget <= sidecar_positions.CHUNK_SCAN for q in calls)


async def test_head_answers_without_a_body(client: TestClient[Any, Any]) -> None:
    """HEAD (a GET route answers it too): headers only, the connection still usable."""
    r = await client.head("/positions?limit=5")
    assert r.status == 200 and r.content_type == "application/json"
    assert await r.read() == b""
    assert (await client.head("/positions?limit=0")).status == 422
    status, body = await get(client, "/positions", limit=5)  # same connection, next request
    assert status == 200 and body["count"] == 5


# ---------------------------------------------------------------------- 422
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"action": "PANIC"}, "action"),
        ({"min_score": "high"}, "min_score"),
        ({"max_score": "nan"}, "max_score"),
        ({"min_score": "60", "max_score": "40"}, "min_score"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "eyJ4IjoxfQ"}, "cursor"),  # base64 of {"x":1}: JSON, not ours
        ({"assets": "BTC"}, "assets"),
        ({"asset": "X" * 65}, "asset"),
    ],
)
async def test_a_bad_parameter_is_422_naming_it(
    client: TestClient[Any, Any], params: dict[str, str], field: str
) -> None:
    status, body = await get(client, "/positions", **params)
    assert status == 422
    assert body["error"] == "invalid request"
    assert [d["field"] for d in body["detail"]] == [field]
    assert body["detail"][0]["message"]


async def test_every_bad_parameter_is_named(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, "/positions", limit="-1", action="x", cursor="%%")
    assert status == 422
    assert {d["field"] for d in body["detail"]} == {"limit", "action", "cursor"}
    assert "HOLD" in next(d["message"] for d in body["detail"] if d["field"] == "action")


# ---------------------------------------------------------------------- one position
async def test_one_position(client: TestClient[Any, Any], engine: Engine) -> None:
    status, row = await get(client, "/positions/p002")
    assert status == 200
    assert row == next(r for r in engine.snapshot() if r["position_id"] == "p002")
    status, body = await get(client, "/positions/nope")
    assert status == 404
    assert body["position_id"] == "nope" and "another instance" in body["detail"]
    assert (await client.post("/positions/p002")).status == 405


async def test_one_position_stateless() -> None:
    async with TestClient(TestServer(create_app(StatelessState()))) as c:
        status, body = await get(c, "/positions/p1")
        assert status == 404 and "stateless" in body["detail"]


# ---------------------------------------------------------------------- /exposure
async def test_exposure_is_the_engines_sums_worked_by_hand() -> None:
    """BTC at 44,000: +10 and −4 → net 6 × 44,000 = 264,000, gross 14 × 44,000 = 616,000.
    ETH at 2,000: +5 → 10,000 both. XRP: no tick, one position, no notional. Book: 4
    positions, net 274,000, gross 626,000; P&L at −5 % = −0.05 × 274,000 = −13,700, at
    +2 % = 5,480. Book gross limit 600,000: breached by 26,000."""
    risk = DEFAULT_CONFIG.merged({"max_gross_notional_usd": 600_000.0})
    engine = Engine(EngineConfig(risk=risk))
    engine.step(
        [
            tick("BTC", 44_000.0),
            tick("ETH", 2_000.0),
            pos("b1", "BTC", 10.0, 45_000.0),
            pos("b2", "BTC", -4.0, 43_000.0),
            pos("e1", "ETH", 5.0, 2_100.0),
            pos("x1", "XRP", 1.0, 0.5),
        ],
        T0,
    )
    async with TestClient(TestServer(create_app(NoRows(engine)))) as c:
        status, body = await get(c, "/exposure")
        assert status == 200
        btc, eth, xrp = (body["assets"][a] for a in ("BTC", "ETH", "XRP"))
        assert btc["positions"] == 2 and btc["price"] == 44_000.0
        assert btc["net_notional_usd"] == pytest.approx(264_000.0)
        assert btc["gross_notional_usd"] == pytest.approx(616_000.0)
        assert btc["pnl_down_5pct"] == pytest.approx(-13_200.0)
        assert eth["net_notional_usd"] == eth["gross_notional_usd"] == pytest.approx(10_000.0)
        assert xrp["positions"] == 1 and xrp["price"] is None
        assert xrp["gross_notional_usd"] == 0.0
        b = body["book"]
        assert b["positions"] == 4
        assert b["net_notional_usd"] == pytest.approx(274_000.0)
        assert b["gross_notional_usd"] == pytest.approx(626_000.0)
        assert b["pnl_down_5pct"] == pytest.approx(-13_700.0)
        assert b["pnl_up_2pct"] == pytest.approx(5_480.0)
        assert body["limits"] == {"book": {"max_gross_notional_usd": 600_000.0}}
        assert body["breaches"] == [
            {
                "scope": "book",
                "limit": "max_gross_notional_usd",
                "limit_usd": 600_000.0,
                "value_usd": pytest.approx(626_000.0),
            }
        ]
        # /positions carries the same per asset, with long and short notional split.
        _, page = await get(c, "/positions", asset="btc")
        e = page["exposure"]["BTC"]
        assert e["long_notional_usd"] == pytest.approx(440_000.0)  # 10 × 44,000
        assert e["short_notional_usd"] == pytest.approx(176_000.0)  # 4 × 44,000
        assert e["priced_by"] == "tick"


# ---------------------------------------------------------------------- issue 16, part 3
def configured(pid: str, asset: str, size: float, entry: float, **extra: Any) -> PositionEvent:
    """A position with its own message fields (`config` bands, `unrealized_pnl`)."""
    body = {"position_id": pid, "asset": asset, "size": size, "entry_price": entry, "ts": T0,
            "age_minutes": 60.0, **extra}  # fmt: skip
    return PositionEvent(
        pid, PositionMessage.model_validate(body), 0, Lineage("positions", 0, -1, T0)
    )


#: Bands that put any score above 3 in HEDGE_FULL (hedge 100 %), above 2 in HEDGE_PARTIAL
#: (50 %), below 96 in HOLD (0 %).
FULL = {"reduce_score": 1.0, "hedge_partial_score": 2.0, "hedge_full_score": 3.0,
        "liquidate_score": 100.0}  # fmt: skip
PARTIAL = {"reduce_score": 1.0, "hedge_partial_score": 2.0, "hedge_full_score": 99.0,
           "liquidate_score": 100.0}  # fmt: skip
HOLD = {"reduce_score": 96.0, "hedge_partial_score": 97.0, "hedge_full_score": 98.0,
        "liquidate_score": 99.0}  # fmt: skip


def hedged_book() -> Engine:
    """BTC at 44,000: b1 +10 @ 45,000 hedged 50 %, b2 −4 @ 43,000 hedged 100 %;
    ETH at 2,000: e1 +5 @ 2,100 held (0 %), its message gives unrealised P&L 123;
    XRP: x1 +1 @ 0.5, no tick."""
    engine = Engine()
    engine.step(
        [
            tick("BTC", 44_000.0),
            tick("ETH", 2_000.0),
            configured("b1", "BTC", 10.0, 45_000.0, config=PARTIAL),
            configured("b2", "BTC", -4.0, 43_000.0, config=FULL),
            configured("e1", "ETH", 5.0, 2_100.0, config=HOLD, unrealized_pnl=123.0),
            configured("x1", "XRP", 1.0, 0.5),
        ],
        T0,
    )
    return engine


async def test_rows_carry_entry_mark_and_unrealised_pnl() -> None:
    """Mark = the asset's latest price; unrealised = size × (mark − entry), or the
    message's own: b1 10 × (44,000 − 45,000) = −10,000; b2 −4 × (44,000 − 43,000) =
    −4,000; e1 its 123 (not 5 × −100); x1 no price: neither."""
    async with TestClient(TestServer(create_app(NoRows(hedged_book())))) as c:
        _, body = await get(c, "/positions")
        rows = {r["position_id"]: r for r in body["positions"]}
        got = {p: (r["entry_price"], r["mark_price"], r["unrealized_pnl"]) for p, r in rows.items()}
        assert got == {
            "b1": (45_000.0, 44_000.0, pytest.approx(-10_000.0)),
            "b2": (43_000.0, 44_000.0, pytest.approx(-4_000.0)),
            "e1": (2_100.0, 2_000.0, 123.0),
            "x1": (0.5, None, None),
        }
        _, one = await get(c, "/positions/b2")
        assert one["mark_price"] == 44_000.0 and one["unrealized_pnl"] == pytest.approx(-4_000.0)


async def test_exposure_gives_the_books_hedged_pnl_worked_by_hand() -> None:
    """Hedged P&L = Σ size × price × m × (1 − h). BTC: 10 × (1 − 0.5) + −4 × (1 − 1) = 5 BTC
    left unhedged × 44,000 = 220,000: −11,000 at −5 %, +4,400 at +2 %. ETH: 5 × 2,000 = 10,000
    unhedged: −500 at −5 %. Book: −11,500 at −5 %, −4,600 at −2 %, +11,500 at +5 %."""
    async with TestClient(TestServer(create_app(NoRows(hedged_book())))) as c:
        _, body = await get(c, "/exposure")
        actions = {r["position_id"]: r["latest_action"] for r in hedged_book().snapshot()}
        assert actions["b1"]["hedge_pct"] == 0.5 and actions["b2"]["hedge_pct"] == 1.0
        assert actions["e1"]["hedge_pct"] == 0.0
        btc, eth = body["assets"]["BTC"], body["assets"]["ETH"]
        assert btc["hedged_pnl_down_5pct"] == pytest.approx(-11_000.0)
        assert btc["hedged_pnl_up_2pct"] == pytest.approx(4_400.0)
        assert btc["pnl_down_5pct"] == pytest.approx(-13_200.0)  # 6 × 44,000 × −5 %
        assert eth["hedged_pnl_down_5pct"] == pytest.approx(-500.0)
        b = body["book"]
        assert b["hedged_pnl_down_5pct"] == pytest.approx(-11_500.0)
        assert b["hedged_pnl_down_2pct"] == pytest.approx(-4_600.0)
        assert b["hedged_pnl_up_5pct"] == pytest.approx(11_500.0)


async def test_asset_filter_is_case_insensitive_or_says_why_nothing() -> None:
    async with TestClient(TestServer(create_app(NoRows(hedged_book())))) as c:
        _, body = await get(c, "/positions", asset="btc")
        assert [r["position_id"] for r in body["positions"]] == ["b1", "b2"]
        assert "note" not in body
        status, body = await get(c, "/positions", asset="sol")
        assert status == 200 and body["positions"] == [] and body["total"] == 0
        assert body["note"].startswith("no position of asset SOL in this instance's table")
        assert "assets here: BTC, ETH, XRP" in body["note"]
