"""What the engine keeps of a published action (`MadeAction`) references shared objects:
the tick's `MarketSnapshot` and the position version. Neither may let a later tick or a
later update of the position into a record already published.

Expected values are the inputs the tests send (DESIGN's worked example, tests/engine).
"""

from __future__ import annotations

from stream_risk.engine import Engine
from stream_risk.engine.actions import MadeAction

from . import T0, close, only, position, price_tick, tick


def _kept(engine: Engine, pid: str) -> dict[str, object]:
    last = engine.table.positions[pid].last
    assert isinstance(last, MadeAction)
    return last.record()


def test_a_later_tick_does_not_change_the_market_of_a_kept_action() -> None:
    engine = Engine()
    res = engine.step([tick(offset=7), position("p1", size=10.0), position("p2", size=-3.0)], T0)
    assert len(res.outputs) == 2
    # One snapshot of the tick, shared by both kept actions.
    l1 = engine.table.positions["p1"].last
    l2 = engine.table.positions["p2"].last
    assert isinstance(l1, MadeAction) and isinstance(l2, MadeAction)
    assert l1.market is l2.market

    # A tick 0.01 % higher: no change of advice for p1 (suppressed, keeps its action);
    # p2 updates in the same step and publishes on the new tick.
    res = engine.step(
        [price_tick(ts=T0 + 1_000, price=44_004.4, offset=8), position("p2", size=-4.0)],
        T0 + 1_000,
    )
    assert [o.position_id for o in res.outputs] == ["p2"]
    p1 = _kept(engine, "p1")
    assert p1["tick_ts"] == T0
    assert p1["inputs"]["market"]["current_price"] == 44_000.0  # type: ignore[index]
    assert p1["lineage"]["tick"]["offset"] == 7  # type: ignore[index]
    assert p1["position_notional_usd"] == 440_000.0
    p2 = _kept(engine, "p2")
    assert p2["tick_ts"] == T0 + 1_000
    assert p2["inputs"]["market"]["current_price"] == 44_004.4  # type: ignore[index]
    assert p2["lineage"]["tick"]["offset"] == 8  # type: ignore[index]
    assert p2["inputs"]["position"]["size"] == -4.0  # type: ignore[index]
    # A record made again is a dict of its own: changing it changes no other record.
    p2["inputs"]["market"]["current_price"] = 1.0  # type: ignore[index]
    assert _kept(engine, "p2")["inputs"]["market"]["current_price"] == 44_004.4  # type: ignore[index]


def test_an_update_that_cannot_be_assessed_leaves_the_kept_action_as_published() -> None:
    engine = Engine()
    published = only(engine.step([tick(), position("p1", size=10.0, offset=3)], T0))
    # p1 moves to an asset without a market: it waits, nothing is published, and the
    # action it keeps still describes what was published (10 BTC from offset 3).
    res = engine.step([position("p1", "ETH", size=25.0, entry=2_500.0, offset=4)], T0 + 1)
    assert res.outputs == []
    pos = engine.table.positions["p1"]
    assert (pos.asset, pos.size, pos.offset) == ("ETH", 25.0, 4)
    kept = _kept(engine, "p1")
    assert kept == published
    assert kept["asset"] == "BTC"
    assert kept["inputs"]["position"]["size"] == 10.0  # type: ignore[index]
    assert kept["lineage"]["position"]["offset"] == 3  # type: ignore[index]
    assert kept["position_notional_usd"] == 440_000.0


def test_a_closed_position_keeps_no_reference_cycle() -> None:
    import gc

    engine = Engine()
    engine.step([tick(), position("p1")], T0)
    pos = engine.table.positions["p1"]
    engine.step([position("p1", size=12.0, ts=T0 + 1)], T0 + 1)
    new = engine.table.positions["p1"]
    assert new is not pos and pos.last is None  # the old version holds no action
    engine.step([close("p1")], T0 + 2)
    assert new.last is None
    # Nothing of the engine's left for the cycle collector.
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        del pos, new
        assert gc.collect() == 0
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
