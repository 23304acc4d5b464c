"""Hysteresis at band edges (DESIGN §12, docs/design.md D11): escalate at the reference
thresholds, de-escalate only once the score is below the held band's threshold by more than
`hysteresis_points`. No broker.

Scores are worked by hand from the worked example (BTC 10 @ 45,000, 60 minutes old at T0;
price 44,000, spread 3 bps, funding 0.08, depths 5e6), moving the vol between 0.04 and
0.05, where the vol regime gives 15 points and the loss 30 × vol / 0.05 = 600 × vol:

    score = 600 × vol + age (60 + s/60 minutes, s seconds after T0) / 480 × 20 + 15
            + 440,000 / bid depth × 15

    vol     loss    score at s seconds (bid 5e6: liquidity 1.32)
    0.0435  26.1    44.92 + s/1440       REDUCE
    0.044   26.4    45.22 + s/1440       HEDGE_PARTIAL
    0.0433  25.98   44.80 + s/1440       REDUCE
    0.0420  25.2    44.02 + s/1440       REDUCE
    0.0405  24.3    43.12 + s/1440       REDUCE
    0.04    24.0    42.82 + s/1440       REDUCE (below 45 − 2 = 43)
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_risk.api import assess_body
from stream_risk.engine import ConfigEvent, Engine, EngineConfig, Lineage, StepResult

from . import T0, position, tick

approx = pytest.approx
SEC = 1000


def score(vol: float, s: int, bid: float = 5e6, max_loss_pct: float = 0.05) -> float:
    """The hand formula above (vol in [0.04, 0.05]), `s` seconds after T0."""
    loss = 0.05 / max_loss_pct * 30 * vol / 0.05
    return loss + (60 + s / 60) / 480 * 20 + 15 + 440_000 / bid * 15


def at(engine: Engine, s: int, vol: float, *, bid: float = 5e6, spread: float = 3.0) -> StepResult:
    """A tick `s` seconds after T0 (assessed at that time)."""
    return engine.step([tick(ts=T0 + s * SEC, vol=vol, bid=bid, spread=spread)], T0 + s * SEC)


def one(res: StepResult) -> dict[str, Any] | None:
    """The action a step published for p1 (None when suppressed)."""
    values = [o.value for o in res.outputs if o.position_id == "p1"]
    assert len(values) <= 1
    return values[0] if values else None


def opened(config: dict[str, Any] | None, vol: float, bid: float = 5e6) -> tuple[Engine, Any]:
    """p1 opened at T0 on a first tick of `vol`."""
    engine = Engine()
    res = engine.step([tick(vol=vol, bid=bid), position(config=config)], T0)
    return engine, one(res)


def kept_record(engine: Engine) -> dict[str, Any]:
    """What GET /positions shows for p1: made again from what the engine kept."""
    last = engine.table.positions["p1"].last
    assert last is not None
    out: dict[str, Any] = orjson.loads(last.value)
    return out


FLAPS = [(1, 0.044), (2, 0.0433), (3, 0.0405), (4, 0.04)]


def flap(config: dict[str, Any] | None) -> list[dict[str, Any] | None]:
    """44.92 → 45.22 → 44.80 → 43.12 → 42.82 (the demo's ETH-002, then falling away)."""
    engine, first = opened(config, 0.0435)
    return [first, *(one(at(engine, s, v)) for s, v in FLAPS)]


def actions(records: list[dict[str, Any] | None]) -> list[str | None]:
    return [None if r is None else r["action"] for r in records]


def test_without_hysteresis_the_advice_flaps_at_45() -> None:
    recs = flap(None)
    assert actions(recs) == ["REDUCE", "HEDGE_PARTIAL", "REDUCE", "REDUCE", None]
    assert [r["risk_score"] for r in recs if r is not None] == approx(
        [score(0.0435, 0), score(0.044, 1), score(0.0433, 2), score(0.0405, 3)]
    )
    assert recs[0] is not None and recs[0]["risk_score"] == approx(44.92)


def test_two_points_hold_hedge_partial_until_the_score_is_below_43() -> None:
    recs = flap({"hysteresis_points": 2})
    # Escalation at the reference threshold (45.22 ≥ 45); 44.80 holds HEDGE_PARTIAL (the
    # advice did not change and the score moved 0.42 < 1: nothing published); 43.12 ≥ 43
    # still holds it (moved 2.1: published, saying why); 42.82 < 43: REDUCE.
    assert actions(recs) == ["REDUCE", "HEDGE_PARTIAL", None, "HEDGE_PARTIAL", "REDUCE"]
    held = recs[3]
    assert held is not None
    assert held["risk_score"] == approx(score(0.0405, 3)) == approx(43.12, abs=0.01)
    assert held["hedge_pct"] == 0.5
    assert held["reason_code"] == "HYSTERESIS_HOLD"
    # Hedge 5 BTC at 44,000: 220,000 × 3 bps = 66.00; a short hedge receives the funding.
    hedge = held["suggested_hedge"]
    assert hedge["instrument"] == "perp_short" and hedge["size"] == 5.0
    assert hedge["total_cost_usd"] == approx(66.0) and hedge["total_cost_bps"] == approx(3.0)
    assert held["pnl_scenarios"]["hedged_down_5pct"] == approx(-22_000 * 0.5)
    assert held["reasoning"] == (
        "Risk score 43/100 (low-moderate). Holding HEDGE_PARTIAL until the score falls "
        "below 43 (hysteresis 2 points): recommend 50% hedge via perp_short (5 BTC), "
        "cost $66.00 (3.0bps); reduces downside while keeping upside."
    )
    assert held["re_evaluate_minutes"] == 60  # from the score, as always
    assert held["inputs"]["config"] == {"hysteresis_points": 2.0}
    released = recs[4]
    assert released is not None
    assert released["reason_code"] == "SCORE_LOW_MODERATE" and released["hedge_pct"] == 0.25


def test_the_held_record_is_made_again_identically_for_get_positions() -> None:
    engine, _ = opened({"hysteresis_points": 2}, 0.0435)
    at(engine, 1, 0.044)
    held = one(at(engine, 3, 0.0405))
    assert held is not None and held["reason_code"] == "HYSTERESIS_HOLD"
    assert kept_record(engine) == held
    assert engine.snapshot()[0]["latest_action"] == held


def test_escalation_stays_at_the_threshold_with_a_wide_margin() -> None:
    # 10 points: the held band needs the score below 35 to go; escalation still at 45.
    recs = flap({"hysteresis_points": 10})
    assert actions(recs) == ["REDUCE", "HEDGE_PARTIAL", None, "HEDGE_PARTIAL", None]
    engine, _ = opened({"hysteresis_points": 10}, 0.0435)
    assert one(at(engine, 1, 0.044))["action"] == "HEDGE_PARTIAL"  # type: ignore[index]
    # vol 0.08: 30 + 2.5 + 25 + 1.32 = 58.82; bid 2e6: liquidity 3.3: 60.80 ≥ 60.
    up = one(at(engine, 2, 0.08, bid=2e6))
    assert up is not None and up["action"] == "HEDGE_FULL" and up["reason_code"] == "SCORE_HIGH"
    assert up["risk_score"] == approx(30 + (60 + 2 / 60) / 24 + 25 + 3.3)


def test_a_two_band_drop_holds_the_riskiest_band_the_margin_allows() -> None:
    # 60.80 HEDGE_FULL, then 44.80 (the model: REDUCE).
    for points, expected, below in ((2, "HEDGE_PARTIAL", "43"), (20, "HEDGE_FULL", "40")):
        engine, first = opened({"hysteresis_points": points}, 0.08, bid=2e6)
        assert first["action"] == "HEDGE_FULL"
        assert first["risk_score"] == approx(60.8)
        held = one(at(engine, 1, 0.0433))
        assert held is not None and held["action"] == expected, points
        assert held["risk_score"] == approx(score(0.0433, 1))
        assert held["reason_code"] == "HYSTERESIS_HOLD"
        assert f"Holding {expected} until the score falls below {below} " in held["reasoning"]
        assert kept_record(engine) == held
    # 42.82 is below 60 − 2 and 45 − 2: straight to the model's REDUCE.
    engine, _ = opened({"hysteresis_points": 2}, 0.08, bid=2e6)
    down = one(at(engine, 1, 0.04))
    assert down is not None and down["action"] == "REDUCE"
    assert down["reason_code"] == "SCORE_LOW_MODERATE"


def test_a_held_reduce_advises_a_hedge_the_model_did_not() -> None:
    # max_loss_pct 0.1 halves the loss: vol 0.05 gives 15 + 2.5 + 15 + liquidity.
    # bid 2e6: 35.80 REDUCE; bid 5e6: 33.82 (the model: HOLD, no hedge) ≥ 35 − 2: REDUCE held;
    # bid 5e7: liquidity 0.132: 32.63 < 33: HOLD.
    cfg = {"max_loss_pct": 0.1, "hysteresis_points": 2}
    engine, first = opened(cfg, 0.05, bid=2e6)
    assert first["action"] == "REDUCE" and first["risk_score"] == approx(35.8)
    held = one(at(engine, 1, 0.05))
    assert held is not None
    assert held["risk_score"] == approx(score(0.05, 1, max_loss_pct=0.1)) == approx(33.82, abs=0.01)
    assert (held["action"], held["hedge_pct"], held["reason_code"]) == (
        "REDUCE",
        0.25,
        "HYSTERESIS_HOLD",
    )
    # The instrument is made for the held fraction: 2.5 BTC, 110,000 × 3 bps = 33.00.
    hedge = held["suggested_hedge"]
    assert hedge is not None and hedge["instrument"] == "perp_short" and hedge["size"] == 2.5
    assert hedge["total_cost_usd"] == approx(33.0)
    assert (
        "Holding REDUCE until the score falls below 33 (hysteresis 2 points): consider"
        in (held["reasoning"])
    )
    assert kept_record(engine) == held
    gone = one(at(engine, 2, 0.05, bid=5e7))
    assert gone is not None
    assert gone["risk_score"] == approx(score(0.05, 2, bid=5e7, max_loss_pct=0.1))
    assert (gone["action"], gone["suggested_hedge"], gone["reason_code"]) == (
        "HOLD",
        None,
        "SCORE_LOW",
    )


def test_a_hold_because_the_hedge_is_too_expensive_is_never_overridden() -> None:
    engine, first = opened({"hysteresis_points": 20}, 0.05)
    assert first["action"] == "HEDGE_PARTIAL" and first["risk_score"] == approx(48.82)
    # Spread 60 bps > 50: HOLD whatever the score (still 48.82 + s/1440).
    dear = one(at(engine, 1, 0.05, spread=60.0))
    assert dear is not None
    assert (dear["action"], dear["hedge_pct"], dear["reason_code"]) == (
        "HOLD",
        0.0,
        "HEDGE_TOO_EXPENSIVE",
    )
    # The desk then holds no hedge: back at 3 bps and 44.80 the model's REDUCE stands.
    after = one(at(engine, 2, 0.0433))
    assert after is not None
    assert (after["action"], after["reason_code"]) == ("REDUCE", "SCORE_LOW_MODERATE")


def test_the_default_0_changes_nothing_byte_for_byte() -> None:
    def run(config: dict[str, Any] | None) -> list[bytes]:
        engine = Engine()
        out = [o.data for o in engine.step([tick(vol=0.0435), position(config=config)], T0).outputs]
        for s, v in FLAPS:
            out += [o.data for o in at(engine, s, v).outputs]
        return [d for d in out if d is not None]

    default = run(None)
    assert run({"hysteresis_points": 0}) == default
    assert [orjson.loads(d)["action"] for d in default] == [
        "REDUCE",
        "HEDGE_PARTIAL",
        "REDUCE",
        "REDUCE",
    ]


def config_event(scope: str, value: dict[str, Any] | None, offset: int, ts: int) -> ConfigEvent:
    return ConfigEvent(scope, value, Lineage("risk-config", 0, offset, ts), "desk")


def test_set_and_removed_through_a_risk_config_scope() -> None:
    engine, _ = opened(None, 0.0435)
    at(engine, 1, 0.044)  # HEDGE_PARTIAL at 45.22
    now = T0 + 1500
    res = engine.step([config_event("asset:BTC", {"hysteresis_points": 2}, 7, now)], now)
    cfg = one(res)
    assert cfg is not None and cfg["trigger"] == "config" and cfg["action"] == "HEDGE_PARTIAL"
    assert cfg["config_version"] == {"asset:BTC": 7}
    held = one(at(engine, 3, 0.0405))
    assert held is not None and held["action"] == "HEDGE_PARTIAL"
    assert held["reason_code"] == "HYSTERESIS_HOLD"
    assert held["inputs"]["config"] == {"hysteresis_points": 2.0}
    # Removing the scope re-assesses: 43.12 with no margin is the model's REDUCE.
    now = T0 + 3500
    res = engine.step([config_event("asset:BTC", None, 8, now)], now)
    gone = one(res)
    assert gone is not None and gone["action"] == "REDUCE" and gone["trigger"] == "config"


def test_the_stale_policy_applies_after_hysteresis() -> None:
    # Held HEDGE_PARTIAL at 43.12, then a position update (age 60 as of T0 + 2 min: 43.12
    # again) with the tick 117 s old > 60 s: stale.
    for policy, action, code in (
        ("reduce", "HEDGE_PARTIAL", "HYSTERESIS_HOLD"),  # a stronger action stands
        ("hold", "HOLD", "STALE_MARKET_DATA"),
    ):
        cfg = {"hysteresis_points": 2, "stale_policy": policy}
        engine, _ = opened(cfg, 0.0435)
        at(engine, 1, 0.044)
        assert one(at(engine, 3, 0.0405))["reason_code"] == "HYSTERESIS_HOLD"  # type: ignore[index]
        later = T0 + 2 * 60_000
        a = one(engine.step([position(ts=later, config=cfg)], later))
        assert a is not None and a["stale_market_data"] is True
        assert a["risk_score"] == approx(24.3 + 2.5 + 15 + 1.32)
        assert (a["action"], a["reason_code"]) == (action, code), policy
        assert kept_record(engine) == a


def test_a_restart_keeps_holding_the_restored_band() -> None:
    cfg = {"hysteresis_points": 2}
    engine, _ = opened(cfg, 0.0435)
    before = one(at(engine, 1, 0.044))  # HEDGE_PARTIAL, as read back from risk-actions
    assert before is not None
    expected = one(at(engine, 2, 0.0420))  # 44.02: held (the score moved 1.2: published)
    assert expected is not None and expected["reason_code"] == "HYSTERESIS_HOLD"

    again = Engine(EngineConfig())
    again.step([tick(ts=T0 + SEC, vol=0.044)], T0 + SEC)
    again.load([position(config=cfg)])
    again.restore(0, "p1", before)
    assert again.settle(0, T0 + SEC).outputs == []
    res = at(again, 2, 0.0420)
    assert res.outputs[0].data == orjson.dumps(expected)


def test_assess_is_stateless_and_unaffected() -> None:
    body: dict[str, Any] = {
        "position": {"asset": "BTC", "size": 10, "entry_price": 45_000, "age_minutes": 60},
        "market": {
            "current_price": 44_000,
            "volatility_1d": 0.0433,
            "spot_spread_bps": 3,
            "perp_funding_rate": 0.08,
            "bid_depth_usd": 5e6,
            "ask_depth_usd": 5e6,
        },
    }
    _, plain = assess_body(orjson.dumps(body), T0)
    _, with_h = assess_body(orjson.dumps({**body, "config": {"hysteresis_points": 5}}), T0)
    assert with_h == plain
    assert plain["action"] == "REDUCE" and plain["risk_score"] == approx(44.80)
