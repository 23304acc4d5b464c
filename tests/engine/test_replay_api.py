"""The engine's API for replay's fast path: the emission rule in one place
(`record.should_emit`), a market set as after a run of ticks (`Engine.apply_market`) and
tick assessments that published nothing (`Engine.assess_quietly`), each against what
`step` does with the same ticks one by one."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import orjson
import pytest

from stream_risk.engine import Engine
from stream_risk.engine.record import advice_differs, score_moved, should_emit

from . import MIN, T0, only, position, price_tick, tick


class Last(NamedTuple):
    action: str
    hedge_pct: float
    instrument: str | None
    stale: bool
    risk_score: float


LAST = Last("HEDGE_PARTIAL", 0.5, "perp_short", False, 48.82)


@pytest.mark.parametrize(
    ("emit", "trigger", "last", "new", "want"),
    [
        ("changed", "tick", LAST, ("HEDGE_PARTIAL", 0.5, "perp_short", False, 49.5), False),
        ("changed", "tick", LAST, ("HEDGE_PARTIAL", 0.5, "perp_short", False, 49.82), True),
        ("changed", "tick", LAST, ("HEDGE_PARTIAL", 0.5, "perp_short", False, 47.83), False),
        ("changed", "tick", LAST, ("HEDGE_PARTIAL", 0.5, "spot_sell", False, 48.82), True),
        ("changed", "tick", LAST, ("HEDGE_PARTIAL", 0.25, "perp_short", False, 48.82), True),
        ("changed", "tick", LAST, ("REDUCE", 0.5, "perp_short", False, 48.82), True),
        ("changed", "tick", LAST, ("HEDGE_PARTIAL", 0.5, "perp_short", True, 48.82), True),
        ("changed", "tick", None, ("HOLD", 0.0, None, False, 1.0), True),
        ("changed", "position", LAST, ("HEDGE_PARTIAL", 0.5, "perp_short", False, 48.82), True),
        ("changed", "timer", LAST, ("HEDGE_PARTIAL", 0.5, "perp_short", False, 48.82), True),
        ("changed", "config", LAST, ("HEDGE_PARTIAL", 0.5, "perp_short", False, 48.82), True),
        ("all", "tick", LAST, ("HEDGE_PARTIAL", 0.5, "perp_short", False, 48.82), True),
    ],
)
def test_should_emit_is_designs_changed_rule(
    emit: str, trigger: str, last: Last | None, new: tuple[object, ...], want: bool
) -> None:
    action, hedge, instrument, stale, score = new
    got = should_emit(emit, trigger, last, action, hedge, instrument, stale, score, 1.0)  # type: ignore[arg-type]
    assert got is want


def test_the_two_halves_of_the_tick_rule_work_elementwise() -> None:
    coded = Last(2, 0.5, 3, False, 48.82)  # type: ignore[arg-type]
    actions = np.array([2, 2, 1, 2])
    hedges = np.array([0.5, 0.5, 0.25, 0.5])
    instruments = np.array([3, 1, 3, 3])
    assert advice_differs(coded, actions, hedges, instruments, False).tolist() == [
        False,
        True,
        True,
        False,
    ]
    scores = np.array([48.82, 49.9, 47.0, 47.83])
    assert score_moved(48.82, scores, 1.0).tolist() == [False, True, True, False]


def _market(engine: Engine, asset: str) -> tuple[object, ...]:
    m = engine.table.markets[asset]
    est = m.vol_state
    return (
        m.ts,
        m.current_price,
        m.volatility_1d,
        m.spot_spread_bps,
        m.perp_funding_rate,
        m.bid_depth_usd,
        m.ask_depth_usd,
        m.given,
        m.estimated(),
        None if est is None else (est.t, est.n),
    )


def test_apply_market_sets_the_market_a_run_of_ticks_leaves() -> None:
    # A prices-only feed (vol estimated), then spread and depths once.
    prices = [100.0, 101.0, 99.5, 100.5, 102.0, 101.0]
    stepped = Engine()
    for i, p in enumerate(prices):
        ev = price_tick("SOL", T0 + i * MIN, p)
        if i == 3:
            ev = tick("SOL", T0 + i * MIN, p, vol=None, funding=None, bid=7e6, ask=None)
        stepped.step([ev], T0 + i * MIN)

    applied = Engine()
    history = [(T0 + i * MIN, p) for i, p in enumerate(prices)]
    given = 2 | 8  # spread and bid depth given by the feed (bits of MARKET_INPUTS)
    applied.apply_market(
        "SOL",
        T0 + 5 * MIN,
        101.0,
        None,
        3.0,
        0.0,
        7e6,
        1e6,
        given,
        lambda after, upto: [(t, p) for t, p in history if after < t <= upto],
        duplicates=2,
    )
    assert _market(applied, "SOL") == _market(stepped, "SOL")
    assert applied.table.markets["SOL"].volatility_1d is None  # still too few returns
    assert applied.stats.duplicate_ticks == 2


def test_apply_market_makes_a_new_snapshot_for_the_actions_after_it() -> None:
    engine = Engine()
    engine.step([tick(), position()], T0)
    first = engine.table.markets["BTC"].snapshot()
    engine.apply_market("BTC", T0 + MIN, 44_100.0, 0.05, 3.0, 0.08, 5e6, 5e6, 31)
    snap = engine.table.markets["BTC"].snapshot()
    assert snap is not first and (snap.ts, snap.price) == (T0 + MIN, 44_100.0)
    assert (first.ts, first.price) == (T0, 44_000.0)


def test_assess_quietly_counts_and_schedules_as_a_suppressed_tick() -> None:
    stepped, quiet = Engine(), Engine()
    for e in (stepped, quiet):
        only(e.step([tick(), position()], T0))
    # Two ticks of the same price a minute apart: both suppressed under `changed`.
    for i in (1, 2):
        assert stepped.step([price_tick(ts=T0 + i * MIN)], T0 + i * MIN).outputs == []
    quiet.apply_market("BTC", T0 + 2 * MIN, 44_000.0, 0.05, 3.0, 0.08, 5e6, 5e6, 31)
    due = quiet.assess_quietly("p1", T0 + 2 * MIN, 2)
    quiet.schedule(quiet.table.positions["p1"], due)
    # Score 48.82 -> re-evaluate in 60 minutes (tests/engine's worked example).
    assert due == T0 + 2 * MIN + 60 * MIN
    assert quiet.table.positions["p1"].next_due == stepped.table.positions["p1"].next_due
    assert (quiet.stats.assessments, quiet.stats.suppressed) == (3, 2)
    assert (stepped.stats.assessments, stepped.stats.suppressed) == (3, 2)
    a, b = stepped.fire_timers(due), quiet.fire_timers(due)
    ra = [orjson.loads(o.data or b"") for o in a.outputs]
    rb = [orjson.loads(o.data or b"") for o in b.outputs]
    assert [r["event_ts"] for r in ra] == [due]
    # The same record, but for the tick's lineage: a market set by apply_market has none.
    for r in (*ra, *rb):
        r["lineage"].pop("tick")
    assert ra == rb
