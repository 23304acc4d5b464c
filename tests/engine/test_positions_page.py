"""Pages of the table (`Engine.positions_page`): order, filters, the scan budget, and walks
that stay exact while positions come and go between pages (docs/design.md D14)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stream_risk.engine import Engine, PositionQuery, PositionsPage
from stream_risk.engine.views import page_of_rows

from . import T0, close, position, tick


def walk(engine: Engine, **query: Any) -> tuple[list[str], list[PositionsPage]]:
    """Every page of a query, following `next_after` to the end."""
    ids: list[str] = []
    pages: list[PositionsPage] = []
    after = None
    for _ in range(10_000):
        page = engine.positions_page(PositionQuery(after=after, **query))
        pages.append(page)
        ids.extend(r["position_id"] for r in page.rows)
        after = page.next_after
        if after is None:
            return ids, pages
    raise AssertionError("the walk never ended")


def book(n: int = 50) -> Engine:
    """n positions on BTC (even ids), ETH (odd ids) and, for p000 and p049, XRP (no tick)."""
    engine = Engine()
    events: list[Any] = [tick("BTC"), tick("ETH", price=2_000.0)]
    for i in range(n):
        asset = "XRP" if i in (0, n - 1) else ("BTC" if i % 2 == 0 else "ETH")
        events.append(
            position(
                f"p{i:03d}", asset, size=1.0 + i, entry=45_000.0 if asset == "BTC" else 2_100.0
            )
        )
    engine.step(events, T0)
    return engine


def test_pages_walk_every_position_once_in_id_order() -> None:
    engine = book(50)
    ids, pages = walk(engine, limit=7)
    assert ids == [f"p{i:03d}" for i in range(50)]
    assert [len(p.rows) for p in pages] == [7] * 7 + [1]
    assert pages[-1].next_after is None
    assert not any(p.partial for p in pages)
    # A page of exactly what is left ends with no cursor (no empty page after it).
    ids, pages = walk(engine, limit=25)
    assert len(pages) == 2 and pages[0].next_after == "p024"


def test_rows_are_the_snapshots_rows() -> None:
    engine = book(12)
    _, pages = walk(engine, limit=5)
    rows = [r for p in pages for r in p.rows]
    assert rows == sorted(engine.snapshot(), key=lambda r: r["position_id"])


def test_a_walk_stays_exact_while_positions_come_and_go() -> None:
    """Between pages positions are opened and closed at random: the walk returns, in order
    and once each, every position that was there all along; never one after it closed; and
    an opened one exactly when its id is past the page it was opened at."""
    rnd = random.Random(5)
    engine = Engine()
    engine.step([tick("BTC")], T0)
    live = {f"q{rnd.randrange(10**6):06d}" for _ in range(300)}
    engine.step([position(pid, "BTC") for pid in sorted(live)], T0)
    initial = set(live)
    kept = set(live)  # there from the first page to the last
    opened_after_cursor: set[str] = set()
    seen: list[str] = []
    after: str | None = None
    while True:
        page = engine.positions_page(PositionQuery(after=after, limit=13))
        got = [r["position_id"] for r in page.rows]
        assert set(got) <= live  # never a closed one
        seen.extend(got)
        after = page.next_after
        if after is None:
            break
        changes: list[Any] = []
        for pid in rnd.sample(sorted(live), 4):  # close four
            changes.append(close(pid))
            live.discard(pid)
            kept.discard(pid)
        for _ in range(4):  # open four
            pid = f"q{rnd.randrange(10**6):06d}"
            if pid not in live:
                changes.append(position(pid, "BTC"))
                live.add(pid)
                if pid > after:
                    opened_after_cursor.add(pid)
        engine.step(changes, T0)
    assert seen == sorted(seen) and len(seen) == len(set(seen))  # in order, no duplicate
    assert kept <= set(seen)  # none missed
    assert opened_after_cursor & live <= set(seen)  # opened ahead of the cursor: seen
    assert set(seen) <= initial | opened_after_cursor  # opened behind it: not


def test_asset_filter_is_case_insensitive() -> None:
    engine = book(20)
    ids, _ = walk(engine, asset="btc", limit=3)
    assert ids == [f"p{i:03d}" for i in range(2, 20, 2)]
    assert walk(engine, asset="BTC", limit=100)[0] == ids
    assert walk(engine, asset="xrp")[0] == ["p000", "p019"]
    assert walk(engine, asset="DOGE")[0] == []
    assert engine.count() == 20 and engine.count("eth") == 9 and engine.count("DOGE") == 0


def test_assets_differing_in_case_only_are_walked_together_in_order() -> None:
    engine = Engine()
    engine.step([tick("BTC"), tick("btc")], T0)
    engine.step([position("a", "BTC"), position("c", "BTC"), position("b", "btc")], T0)
    assert walk(engine, asset="Btc", limit=1)[0] == ["a", "b", "c"]


def test_action_and_score_filters_match_a_brute_force_filter() -> None:
    # The worked example (tests/engine/__init__: 48.82, HEDGE_PARTIAL), and 0.001 ETH at
    # its entry price 2,000, 0 minutes old, daily vol 0.01: loss 30 x (0.05 / 0.05) x
    # (0.01 / 0.05) = 6 + age 0 + vol 0.01 / 0.04 x 10 = 2.5 + liquidity 0.001 x 2,000 / 5e6
    # x 15 = 0.000006 -> 8.500006, HOLD (below 35).
    engine = Engine()
    engine.step(
        [
            tick("BTC"),
            tick("ETH", price=2_000.0, vol=0.01),
            position("big", "BTC"),
            position("tiny", "ETH", size=0.001, entry=2_000.0, age=0.0),
            position("wait", "XRP"),  # no tick of XRP: no action, matches no filter
        ],
        T0,
    )
    by_id = {r["position_id"]: r for r in engine.snapshot()}
    assert by_id["big"]["latest_action"]["risk_score"] == pytest.approx(48.82)
    assert by_id["tiny"]["latest_action"]["risk_score"] == pytest.approx(8.500006)
    assert walk(engine, action="HEDGE_PARTIAL")[0] == ["big"]
    assert walk(engine, action="HOLD")[0] == ["tiny"]
    assert walk(engine, action="LIQUIDATE")[0] == []
    assert walk(engine, min_score=48.82)[0] == ["big"]  # inclusive
    assert walk(engine, max_score=8.500006)[0] == ["tiny"]
    assert walk(engine, min_score=8.6, max_score=48.8)[0] == []
    assert walk(engine, min_score=0)[0] == ["big", "tiny"]
    assert walk(engine)[0] == ["big", "tiny", "wait"]

    # A bigger book against a brute-force filter over the snapshot.
    big = book(60)
    rows = big.snapshot()
    queries: list[dict[str, Any]] = [
        {"action": "HEDGE_PARTIAL"},
        {"action": "HOLD", "asset": "eth"},
        {"min_score": 40.0},
        {"max_score": 30.0, "asset": "BTC"},
    ]
    for q in queries:
        expected = sorted(
            r["position_id"]
            for r in rows
            if r["latest_action"] is not None
            and ("action" not in q or r["latest_action"]["action"] == q["action"])
            and ("asset" not in q or r["asset"].lower() == str(q["asset"]).lower())
            and r["latest_action"]["risk_score"] >= float(q.get("min_score", -1))
            and r["latest_action"]["risk_score"] <= float(q.get("max_score", 101))
        )
        assert walk(big, limit=4, **q)[0] == expected, q


def test_the_scan_budget_gives_partial_pages_and_continuing_reaches_the_end() -> None:
    engine = book(50)  # p000 and p049 (XRP, no tick) have no action: 48 match min_score=0
    ids, pages = walk(engine, budget=6, limit=100, min_score=0.0)
    assert ids == [f"p{i:03d}" for i in range(1, 49)]
    assert [p.scanned for p in pages] == [6] * 8 + [2]  # 50 candidates, 6 a page
    assert all(p.partial for p in pages[:-1]) and not pages[-1].partial
    # A page that examined its budget without a match is empty, but not the end.
    rows = engine.snapshot()
    assert not any(r["latest_action"] and r["latest_action"]["action"] == "LIQUIDATE" for r in rows)
    page = engine.positions_page(PositionQuery(action="LIQUIDATE", budget=10))
    assert page.rows == [] and page.partial and page.next_after == "p009"
    ids, pages = walk(engine, action="LIQUIDATE", budget=10)
    assert ids == [] and len(pages) == 5


def test_one_position() -> None:
    engine = book(4)
    row = engine.position("p002")
    assert row is not None and row["position_id"] == "p002" and row["asset"] == "BTC"
    assert row == next(r for r in engine.snapshot() if r["position_id"] == "p002")
    assert engine.position("nope") is None


def test_the_indexes_follow_a_position_that_moves_asset_and_closes() -> None:
    engine = book(6)
    engine.step([position("p002", "ETH", entry=2_100.0)], T0)
    assert "p002" not in walk(engine, asset="BTC")[0]
    assert "p002" in walk(engine, asset="ETH")[0]
    assert walk(engine, asset="XRP")[0] == ["p000", "p005"]
    engine.step([close("p000"), close("p005")], T0)  # XRP's two: the asset goes
    assert walk(engine, asset="XRP")[0] == []
    assert "XRP" not in engine.table.ids_by_asset
    assert list(engine.table.ids) == sorted(engine.table.positions)
    for asset, ids in engine.table.ids_by_asset.items():
        assert list(ids) == sorted(engine.table.by_asset[asset])


@pytest.mark.parametrize("bad", [{"limit": 0}, {"limit": 1001}, {"budget": 0}])
def test_a_query_out_of_bounds_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PositionQuery(**bad)


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 7},
        {"asset": "eth", "limit": 4},
        {"min_score": 0.0, "budget": 6},
        {"action": "HEDGE_PARTIAL", "limit": 3, "budget": 9},
        {"action": "LIQUIDATE", "budget": 10},
    ],
)
def test_paging_rows_already_made_gives_the_engines_pages(query: dict[str, Any]) -> None:
    """`page_of_rows` (SidecarState's default, over `positions()`) pages like the engine:
    the same rows, cursors, budget and partial flags, page after page."""
    engine = book(50)
    rows = engine.snapshot()
    after = None
    while True:
        ours = page_of_rows(rows, PositionQuery(after=after, **query))
        theirs = engine.positions_page(PositionQuery(after=after, **query))
        assert ours == theirs
        after = theirs.next_after
        if after is None:
            break
