"""DESIGN §3: the latest record of a position always describes the position as it is now.

A bot that reads only the latest record per position must never hedge a stale quantity:
every update of the position itself (size, entry, age, config) publishes, whatever the
score did. Each sequence below ends by comparing the latest record with a fresh
`POST /assess` of the position as it now is (built here from the test's own inputs, not
from the record), and the headline numbers with hand-worked values.

The base case is the worked example of `tests/engine/__init__.py`: BTC 10 @ 45,000, 60 min
old, price 44,000, vol 0.05, spread 3 bps, funding 0.08, depths 5e6 → 48.82 HEDGE_PARTIAL.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from expected import ASSESS_FIELDS

from stream_risk.api import assess_body
from stream_risk.engine import Engine, EngineConfig

from . import MIN, T0, only, position, price_tick, tick

approx = pytest.approx


MARKET = {
    "current_price": 44_000.0,
    "volatility_1d": 0.05,
    "spot_spread_bps": 3.0,
    "perp_funding_rate": 0.08,
    "bid_depth_usd": 5e6,
    "ask_depth_usd": 5e6,
}


def fresh_assess(
    size: float,
    entry: float,
    age: float,
    market: dict[str, float] = MARKET,
    asset: str = "BTC",
    **config: Any,
) -> dict[str, Any]:
    body = {
        "position": {"asset": asset, "size": size, "entry_price": entry, "age_minutes": age},
        "market": market,
    }
    if config:
        body["config"] = config
    return assess_body(orjson.dumps(body), 0)[1]


def assert_describes(record: dict[str, Any], expected: dict[str, Any]) -> None:
    for name in ASSESS_FIELDS:
        assert record[name] == expected[name], name


def latest(engine: Engine, pid: str = "p1") -> dict[str, Any]:
    """The latest published record of `pid`, as `GET /positions` shows it."""
    rows = {r["position_id"]: r for r in engine.snapshot()}
    record: dict[str, Any] | None = rows[pid]["latest_action"]
    assert record is not None
    return record


def opened() -> Engine:
    engine = Engine()
    v = only(engine.step([tick(), position()], T0))
    assert (v["action"], v["risk_score"]) == ("HEDGE_PARTIAL", approx(48.82))
    return engine


def test_resize_up_publishes_the_new_hedge_size() -> None:
    engine = opened()
    # 10 → 15 BTC, same entry, no tick: liquidity 660,000 / 5e6 × 15 = 1.98 → 49.48, still
    # HEDGE_PARTIAL, the score moves 0.66 (< 1 point): published all the same.
    v = only(engine.step([position(ts=T0 + 1000, size=15.0)], T0 + 1000))
    assert v["trigger"] == "position"
    assert v["risk_score"] == approx(30 + 2.5 + 15 + 1.98)
    assert v["position_notional_usd"] == 660_000.0
    # Half of 15 BTC, perp_short (funding 0.08 > 0.02); spread 330,000 × 3 bps = 99.
    hedge = v["suggested_hedge"]
    assert (hedge["instrument"], hedge["size"]) == ("perp_short", 7.5)
    assert hedge["spread_cost_usd"] == approx(99.0)
    assert hedge["total_cost_usd"] == approx(99.0)  # funding is received by the short hedge
    assert v["current_unrealized_pnl"] == 15 * (44_000.0 - 45_000.0)
    assert_describes(latest(engine), fresh_assess(15.0, 45_000.0, 60.0))


def test_resize_down_publishes() -> None:
    engine = opened()
    # 10 → 8 BTC: liquidity 352,000 / 5e6 × 15 = 1.056 → 48.556.
    v = only(engine.step([position(ts=T0 + 1000, size=8.0)], T0 + 1000))
    assert v["risk_score"] == approx(48.556)
    assert v["suggested_hedge"]["size"] == 4.0
    assert_describes(latest(engine), fresh_assess(8.0, 45_000.0, 60.0))


def test_resize_through_zero_flips_the_hedge_side() -> None:
    engine = opened()
    # 10 long → 10 short at a new entry: the hedge buys instead of selling. Funding 0.08 is
    # not < −0.02, so spot_buy; ask depth decides liquidity (5e6 as well): 48.82 again.
    v = only(engine.step([position(ts=T0 + 1000, size=-10.0, entry=44_500.0)], T0 + 1000))
    assert v["risk_score"] == approx(48.82)
    assert (v["suggested_hedge"]["instrument"], v["suggested_hedge"]["size"]) == ("spot_buy", 5.0)
    assert v["current_unrealized_pnl"] == -10 * (44_000.0 - 44_500.0)
    assert_describes(latest(engine), fresh_assess(-10.0, 44_500.0, 60.0))
    # And to flat: HOLD, no hedge, all zero.
    v = only(engine.step([position(ts=T0 + 2000, size=0.0)], T0 + 2000))
    assert (v["action"], v["suggested_hedge"], v["risk_score"]) == ("HOLD", None, 0.0)
    assert_describes(latest(engine), fresh_assess(0.0, 44_500.0, 60.0))


def test_an_entry_change_alone_publishes() -> None:
    engine = opened()
    # Entry 45,000 → 43,000: only the unrealized P&L moves (10 × 1,000 = +10,000).
    v = only(engine.step([position(ts=T0 + 1000, entry=43_000.0)], T0 + 1000))
    assert v["current_unrealized_pnl"] == 10_000.0
    assert v["risk_score"] == approx(48.82)
    assert_describes(latest(engine), fresh_assess(10.0, 43_000.0, 60.0))


def test_an_age_only_update_publishes() -> None:
    engine = opened()
    # The producer re-sends the position with age 90 (+0.625 × 2 = 1.25 → 50.07).
    v = only(engine.step([position(ts=T0 + 1000, age=90.0)], T0 + 1000))
    assert v["risk_score"] == approx(48.82 + 1.25)
    assert_describes(latest(engine), fresh_assess(10.0, 45_000.0, 90.0))


def test_a_per_position_config_change_publishes() -> None:
    engine = opened()
    # max_hold 960 halves the age points (2.5 → 1.25): 47.57, same action, < 1.5 points.
    v = only(engine.step([position(ts=T0 + 1000, config={"max_hold_minutes": 960})], T0 + 1000))
    assert v["risk_score"] == approx(47.57)
    assert_describes(latest(engine), fresh_assess(10.0, 45_000.0, 60.0, max_hold_minutes=960))


def test_a_tick_after_a_resize_keeps_the_tick_rules() -> None:
    engine = opened()
    only(engine.step([position(ts=T0 + 1000, size=15.0)], T0 + 1000))
    # Same price a second later: nothing material moved, suppressed; latest still 15 BTC.
    res = engine.step([price_tick(ts=T0 + 2000)], T0 + 2000)
    assert res.outputs == [] and res.assessments == 1
    assert latest(engine)["suggested_hedge"]["size"] == 7.5


def test_a_resize_consumed_before_a_crash_is_published_by_the_rebuild() -> None:
    """The last action on `risk-actions` is for 10 BTC; the position log holds the resize
    to 15 (consumed, not yet published when the process died): the restart publishes it."""
    before = opened()
    published = latest(before)
    engine = Engine()
    engine.step([tick(ts=T0 + 2000)], T0 + 2000)
    engine.load([position(ts=T0), position(ts=T0 + 1000, size=15.0)])
    engine.restore(0, "p1", published)
    res = engine.settle(0, T0 + 2000)
    v = only(res)
    assert v["trigger"] == "position" and v["position_ts"] == T0 + 1000
    assert v["suggested_hedge"]["size"] == 7.5
    # Age at the later of the position's and tick's time: 60 + 1/60 minutes.
    assert_describes(latest(engine), fresh_assess(15.0, 45_000.0, 60.0 + 1 / 60))


def test_a_rebuild_with_only_a_newer_tick_keeps_the_tick_rules() -> None:
    """Restart with the same position and a tick a second newer: nothing material changed
    since the last record, which stays the latest (no duplicate)."""
    before = opened()
    engine = Engine()
    engine.step([tick(ts=T0 + 1000)], T0 + 1000)
    engine.load([position(ts=T0)])
    engine.restore(0, "p1", latest(before))
    res = engine.settle(0, T0 + 1000)
    assert res.outputs == [] and res.assessments == 1


def test_resized_cases_all_end_with_a_record_of_their_new_size() -> None:
    """The issue's measurement: N random cases resized ×1.5 (no new tick) → N records."""
    rng = random.Random(12)
    n = 300
    engine = Engine(EngineConfig())
    ticks, opens, resizes = [], [], []
    for i in range(n):
        asset = f"A{i}"
        price = rng.uniform(1, 100_000)
        market = {
            "current_price": price,
            "volatility_1d": rng.uniform(0.005, 0.12),
            "spot_spread_bps": rng.uniform(0.5, 20),
            "perp_funding_rate": rng.uniform(-0.1, 0.1),
            "bid_depth_usd": rng.uniform(1e5, 1e7),
            "ask_depth_usd": rng.uniform(1e5, 1e7),
        }
        size = rng.choice((-1, 1)) * rng.uniform(0.1, 50) * 50_000 / price
        entry = price * rng.uniform(0.9, 1.1)
        age = rng.uniform(0, 600)
        ticks.append((asset, market))
        opens.append((f"p{i}", asset, size, entry, age))
    engine.step(
        [
            tick(
                a,
                T0,
                m["current_price"],
                vol=m["volatility_1d"],
                spread=m["spot_spread_bps"],
                funding=m["perp_funding_rate"],
                bid=m["bid_depth_usd"],
                ask=m["ask_depth_usd"],
            )
            for a, m in ticks
        ]
        + [position(pid, a, s, e, age=g) for pid, a, s, e, g in opens],
        T0,
    )
    for pid, a, s, e, g in opens:
        resizes.append(position(pid, a, s * 1.5, e, ts=T0 + MIN, age=g + 1))
    res = engine.step(resizes, T0 + MIN)
    assert len(res.outputs) == n
    right = 0
    for (pid, asset, s, e, g), (_, market) in zip(opens, ticks, strict=True):
        expected = fresh_assess(s * 1.5, e, g + 1, market, asset)
        expected_body = {k: expected[k] for k in ASSESS_FIELDS}
        got = latest(engine, pid)
        right += {k: got[k] for k in ASSESS_FIELDS} == expected_body
    assert right == n
