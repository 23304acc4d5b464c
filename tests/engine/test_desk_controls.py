"""Risk-desk controls in the pure core (docs/design.md D9): risk-config scopes as events,
`stale_policy`, the decision record, exposure and limits. No broker."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_risk.alerting import AlertTracker
from stream_risk.engine import ConfigEvent, Engine, EngineConfig, Lineage
from stream_risk.kafka.codec import DeadLetter, decode_config

from . import MIN, T0, by_pid, position, tick

approx = pytest.approx
#: DESIGN's worked example at age 60: 30 + 2.5 + 15 + 1.32.
WORKED = 48.82


def config(scope: str, value: dict[str, Any] | None, offset: int, ts: int) -> ConfigEvent:
    return ConfigEvent(scope, value, Lineage("risk-config", 0, offset, ts), "desk")


def stale_engine(policy: str, **pos_kw: Any) -> tuple[Engine, dict[str, Any]]:
    """The worked example; two minutes later (tick 60 s max age) `stale_policy` set."""
    engine = Engine(EngineConfig(max_tick_age_ms=60_000))
    engine.step([tick(), position(**pos_kw)], T0)
    now = T0 + 2 * MIN
    res = engine.step([config("global", {"stale_policy": policy}, 0, now)], now)
    out = by_pid(res.outputs)["p1"]
    assert out is not None
    return engine, out


def test_stale_policy_flag_only_flags() -> None:
    _, a = stale_engine("flag")
    assert a["stale_market_data"] is True and a["trigger"] == "config"
    assert a["action"] == "HEDGE_PARTIAL" and a["reason_code"] == "SCORE_MODERATE"


def test_stale_policy_hold_advises_hold_on_old_prices() -> None:
    engine, a = stale_engine("hold")
    assert (a["action"], a["hedge_pct"], a["suggested_hedge"]) == ("HOLD", 0.0, None)
    assert a["reason_code"] == "STALE_MARKET_DATA"
    assert a["reasoning"].startswith("Market data is stale (stale_policy=hold)")
    # The score stays the model's: age 62 min at the config's time.
    assert a["risk_score"] == approx(30 + 62 / 480 * 20 + 15 + 1.32)
    assert a["pnl_scenarios"]["hedged_down_5pct"] == a["pnl_scenarios"]["move_down_5pct"]
    # What the engine keeps for GET /positions makes the identical record again.
    last = engine.table.positions["p1"].last
    assert last is not None and orjson.loads(last.value) == a


def test_stale_policy_reduce_raises_a_hold_to_reduce_only() -> None:
    # 1 BTC with max_loss_pct 0.5: loss 0.05/0.5 × 30 = 3, age 62/480 × 20 = 2.58, vol 15,
    # liquidity 44,000/5e6 × 15 = 0.13: 20.7, the model says HOLD.
    _, a = stale_engine("reduce", size=1.0, config={"max_loss_pct": 0.5})
    assert a["risk_score"] == approx(3 + 62 / 480 * 20 + 15 + 44_000 / 5e6 * 15)
    assert (a["action"], a["hedge_pct"]) == ("REDUCE", 0.25)
    assert a["suggested_hedge"]["instrument"] == "perp_short"
    assert a["reason_code"] == "STALE_MARKET_DATA"
    # A stronger model action stands.
    _, b = stale_engine("reduce")
    assert b["action"] == "HEDGE_PARTIAL" and b["reason_code"] == "SCORE_MODERATE"


def test_scopes_are_events_and_a_conflict_is_rejected() -> None:
    engine = Engine()
    engine.step([tick(), position("p1"), position("p2", asset="ETH")], T0)
    engine.step([tick("ETH", price=2000)], T0)
    res = engine.step([config("asset:BTC", {"max_loss_pct": 0.1}, 3, T0)], T0)
    assert [o.position_id for o in res.outputs] == ["p1"]
    p1 = res.outputs[0].value
    assert p1 is not None and p1["config_version"] == {"asset:BTC": 3}
    assert p1["risk_score"] == approx(WORKED - 15)
    # reduce_score 50 > hedge_partial 45: the whole config would not validate.
    res = engine.step([config("global", {"reduce_score": 50}, 4, T0)], T0)
    assert res.outputs == [] and "reduce_score" in res.rejected[0].reason
    assert "global" not in engine.scopes
    assert engine.config_view()["history"][-1]["status"] == "rejected"


def test_decision_record_lineage_and_inputs() -> None:
    engine = Engine()
    res = engine.step([tick(offset=17), position(partition=2, offset=41, pnl=-100.0)], T0)
    a = res.outputs[0].value
    assert a is not None
    assert a["lineage"] == {
        "position": {"topic": "positions", "partition": 2, "offset": 41},
        "tick": {"topic": "market-ticks", "partition": 0, "offset": 17},
    }
    assert a["inputs"]["position"] == {
        "asset": "BTC",
        "size": 10.0,
        "entry_price": 45_000.0,
        "age_minutes": 60.0,
        "unrealized_pnl": -100.0,
    }
    assert a["inputs"]["market"]["perp_funding_rate"] == 0.08
    assert a["inputs"]["config"] == {} and a["config_version"] == {}


def test_exposure_and_limits() -> None:
    engine = Engine()
    engine.step(
        [
            tick(price=40_000),
            position("l", size=10),
            position("s", size=-4),
            config("global", {"max_gross_notional_usd": 500_000}, 0, T0),
            config("asset:BTC", {"max_net_notional_usd": 200_000}, 1, T0),
        ],
        T0,
    )
    view = engine.book_exposure()
    btc = view["assets"]["BTC"]
    assert (btc["net_notional_usd"], btc["gross_notional_usd"]) == (240_000, 560_000)
    assert btc["pnl_down_5pct"] == approx(-12_000)
    assert view["limits"] == {
        "book": {"max_gross_notional_usd": 500_000},
        "asset:BTC": {"max_net_notional_usd": 200_000},
    }
    assert {(b["scope"], b["limit"]) for b in view["breaches"]} == {
        ("book", "max_gross_notional_usd"),
        ("asset:BTC", "max_net_notional_usd"),
    }


def test_alert_tracker_fires_once_and_clears_once() -> None:
    t = AlertTracker()
    assert t.sync("exposure_limit", {"k": {"v": 1}}, 1)[0]["state"] == "fired"
    assert t.sync("exposure_limit", {"k": {"v": 2}}, 2) == []
    cleared = t.sync("exposure_limit", {}, 3)
    assert [(a["key"], a["state"], a["details"]["v"]) for a in cleared] == [("k", "cleared", 1)]
    assert t.sync("exposure_limit", {}, 4) == []


class _Rec:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.timestamp = "risk-config", 0, 5, T0
        self.key, self.value = key, value


def test_decode_config() -> None:
    ev = decode_config(_Rec(b"asset:BTC", b'{"max_loss_pct": 0.1}'), [("changed-by", b"bob")])
    assert isinstance(ev, ConfigEvent)
    assert (ev.scope, ev.patch, ev.changed_by) == ("asset:BTC", {"max_loss_pct": 0.1}, "bob")
    assert decode_config(_Rec(b"global", None)) == ConfigEvent(
        "global", None, Lineage("risk-config", 0, 5, T0), None
    )
    for key, value in [
        (b"asset:", b"{}"),
        (b"BTC", b"{}"),
        (b"global", b"[1]"),
        (b"global", b'{"stale_policy": "panic"}'),
    ]:
        assert isinstance(decode_config(_Rec(key, value)), DeadLetter)
