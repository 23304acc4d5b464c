"""The event-time schedule: each distinct time one step, timers fired at their own due
times (a quiet market still re-evaluates), several engines in lockstep."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_risk.engine import Engine, EngineConfig
from stream_risk.replay.fastpath import run_fast
from stream_risk.replay.positions import load_positions
from stream_risk.replay.runner import ActionLog, Timeline, run_scalar
from stream_risk.replay.ticks import load_ticks

from . import MIN, T0, write_jsonl

approx = pytest.approx


def worked_example(tmp_path: Path, ticks: list[dict[str, Any]], until: int = 0) -> Timeline:
    """DESIGN's worked example: BTC 10 @ 45,000, 60 minutes old at T0; price 44,000, vol
    0.05, spread 3, funding 0.08, depths 5e6 -> score 48.82, HEDGE_PARTIAL, 60 minutes."""
    first = {
        "asset": "BTC",
        "ts": T0,
        "current_price": 44_000.0,
        "volatility_1d": 0.05,
        "spot_spread_bps": 3.0,
        "perp_funding_rate": 0.08,
        "bid_depth_usd": 5e6,
        "ask_depth_usd": 5e6,
    }
    t = load_ticks(write_jsonl(tmp_path / "t.jsonl", [first, *ticks]))
    p = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {
                "position_id": "p1",
                "asset": "BTC",
                "size": 10,
                "entry_price": 45_000,
                "ts": T0,
                "age_minutes": 60,
            }
        ],
    )
    recs, _ = load_positions(p, t)
    return Timeline(t, recs, until)


def replay(tl: Timeline, fast: bool = False) -> list[dict[str, Any]]:
    buf = io.BytesIO()
    engine = Engine()
    if fast:
        run_fast(tl, engine, ActionLog(buf))
    else:
        run_scalar(tl, [engine], [ActionLog(buf)])
    return [orjson.loads(x) for x in buf.getvalue().splitlines()]


@pytest.mark.parametrize("fast", [False, True])
def test_a_quiet_market_still_reevaluates_at_each_due_time(tmp_path: Path, fast: bool) -> None:
    tl = worked_example(tmp_path, [], until=T0 + 400 * MIN)
    out = replay(tl, fast)
    assert out[0]["trigger"] == "position" and out[0]["risk_score"] == approx(48.82)
    timers = out[1:]
    assert all(v["trigger"] == "timer" for v in timers)
    # 60-minute cadence while the score is below 60; from 300 (score 61.32) every 15.
    assert [(v["event_ts"] - T0) // MIN for v in timers] == [
        60,
        120,
        180,
        240,
        300,
        315,
        330,
        345,
        360,
        375,
        390,
    ]
    # Only the age grows: 30 + (60 + m)/480 × 20 + 15 + 1.32.
    for v in timers:
        m = (v["event_ts"] - T0) / MIN
        assert v["risk_score"] == approx(30 + (60 + m) / 480 * 20 + 15 + 1.32)
        assert v["ts_ms"] == v["assessed_at"] == v["event_ts"]  # now is event time
        assert v["stale_market_data"] is True  # the only tick is minutes old
    assert timers[3]["action"] == "HEDGE_PARTIAL" and timers[4]["action"] == "HEDGE_FULL"


@pytest.mark.parametrize("fast", [False, True])
def test_timers_fire_before_the_next_event_and_without_until_stop_at_the_last(
    tmp_path: Path, fast: bool
) -> None:
    # The next tick comes 61 minutes later: the 60-minute timer fires first, at its due time.
    later = {"asset": "BTC", "ts": T0 + 61 * MIN, "current_price": 44_100.0}
    out = replay(worked_example(tmp_path, [later]), fast)
    assert [(v["trigger"], (v["event_ts"] - T0) // MIN) for v in out] == [
        ("position", 0),
        ("timer", 60),
        ("tick", 61),
    ]
    assert out[1]["tick_ts"] == T0 and out[2]["tick_ts"] == T0 + 61 * MIN
    assert out[2]["stale_market_data"] is False


def test_engines_in_lockstep_equal_separate_runs(tmp_path: Path) -> None:
    ticks = [
        {"asset": "BTC", "ts": T0 + i * 7 * MIN, "current_price": 44_000.0 + 300 * (i % 5)}
        for i in range(1, 40)
    ]
    tl = worked_example(tmp_path, ticks, until=T0 + 600 * MIN)
    alone = [io.BytesIO() for _ in range(2)]
    run_scalar(tl, [Engine()], [ActionLog(alone[0])])
    run_scalar(tl, [Engine(EngineConfig(emit="all"))], [ActionLog(alone[1])])
    together = [io.BytesIO() for _ in range(2)]
    run_scalar(tl, [Engine(), Engine(EngineConfig(emit="all"))], [ActionLog(b) for b in together])
    assert [b.getvalue() for b in together] == [b.getvalue() for b in alone]
    assert together[0].getvalue() != together[1].getvalue()


@pytest.mark.parametrize("fast", [False, True])
def test_a_resize_is_published_on_both_paths(tmp_path: Path, fast: bool) -> None:
    """DESIGN §3: a resize publishes even when the advice's band and the score barely move
    (10 → 15 BTC: 48.82 → 49.48, still HEDGE_PARTIAL), so the backtest's latest record,
    like a live bot's, holds the hedge of the new size: 7.5 BTC."""
    tick = {"asset": "BTC", "current_price": 44_000.0}
    ticks = [{**tick, "ts": T0 + k * MIN} for k in range(1, 6)]
    t = load_ticks(
        write_jsonl(
            tmp_path / "t.jsonl",
            [
                {
                    **tick,
                    "ts": T0,
                    "volatility_1d": 0.05,
                    "spot_spread_bps": 3.0,
                    "perp_funding_rate": 0.08,
                    "bid_depth_usd": 5e6,
                    "ask_depth_usd": 5e6,
                },
                *ticks,
            ],
        )
    )
    base = {"position_id": "p1", "asset": "BTC", "entry_price": 45_000, "age_minutes": 60}
    p = write_jsonl(
        tmp_path / "p.jsonl",
        [{**base, "size": 10, "ts": T0}, {**base, "size": 15, "ts": T0 + 2 * MIN + 1}],
    )
    recs, _ = load_positions(p, t)
    acts = replay(Timeline(t, recs, 0), fast)
    # The opening (positions go first in a step) and the resize; the ticks in between and
    # after move the age by a minute each (+0.04 points): suppressed.
    assert [(a["trigger"], a["suggested_hedge"]["size"]) for a in acts] == [
        ("position", 5.0),
        ("position", 7.5),
    ]
    assert acts[-1]["risk_score"] == approx(30 + 2.5 + 15 + 1.98)  # age 60 as of the resize
