"""The alert rules (stream_risk.alerting), pure, by hand-worked cases."""

from __future__ import annotations

from stream_risk import alerting
from stream_risk.alerting import AlertTracker, limit_transitions, liquidate_transitions
from stream_risk.engine.events import Output

T = 1_700_000_000_000


def action(pid: str, act: str, score: float = 50.0) -> Output:
    return Output(
        pid, {}, action=act, asset="BTC", risk_score=score, reason_code="R", trigger="tick"
    )


def tombstone(pid: str) -> Output:
    return Output(pid, None)


def test_liquidate_fires_once_and_clears_on_a_safer_action() -> None:
    tr = AlertTracker()
    fired = liquidate_transitions(tr, [action("p1", "LIQUIDATE", 80.0)], T)
    assert fired == [
        {
            "key": "liquidate:position:p1",
            "kind": alerting.LIQUIDATE,
            "state": "fired",
            "details": {
                "position_id": "p1",
                "asset": "BTC",
                "action": "LIQUIDATE",
                "risk_score": 80.0,
                "reason_code": "R",
            },
            "ts": T,
        }
    ]
    # Still LIQUIDATE: no new alert, whatever the number of actions.
    assert liquidate_transitions(tr, [action("p1", "LIQUIDATE", 90.0)] * 3, T + 1) == []
    cleared = liquidate_transitions(tr, [action("p1", "HEDGE_FULL", 60.0)], T + 2)
    assert [(a["state"], a["details"]["action"], a["details"]["risk_score"]) for a in cleared] == [
        ("cleared", "HEDGE_FULL", 60.0)
    ]
    assert tr.active == {} and (tr.fired, tr.cleared) == (1, 1)


def test_liquidate_clears_on_close_and_the_latest_output_decides() -> None:
    tr = AlertTracker()
    # Within one step: LIQUIDATE then HOLD then LIQUIDATE: fired, cleared, fired.
    out = liquidate_transitions(
        tr, [action("p", "LIQUIDATE"), action("p", "HOLD"), action("p", "LIQUIDATE")], T
    )
    assert [a["state"] for a in out] == ["fired", "cleared", "fired"]
    closed = liquidate_transitions(tr, [tombstone("p")], T + 5)
    assert len(closed) == 1 and closed[0]["state"] == "cleared"
    assert closed[0]["details"]["closed"] is True and closed[0]["details"]["position_id"] == "p"
    # A tombstone of a position with no alert, and a safe action: nothing.
    assert liquidate_transitions(tr, [tombstone("q"), action("q", "HOLD")], T + 6) == []


def test_limit_transitions_by_hand() -> None:
    tr = AlertTracker()
    breach = {"scope": "asset:BTC", "limit": "max_gross_notional_usd", "value": 2e6}
    stale = alerting.stale_markets([("BTC", T - 61_000), ("ETH", T - 1_000), ("X", -1)], T, 60_000)
    assert stale == {
        "stale:asset:BTC": {"asset": "BTC", "tick_ts": T - 61_000, "max_tick_age_ms": 60_000}
    }
    out = limit_transitions(
        tr, breaches=[breach], stale=stale, dlq_last_minute=11, dlq_per_minute=10, now_ms=T
    )
    assert [(a["kind"], a["key"], a["state"]) for a in out] == [
        (alerting.EXPOSURE_LIMIT, "limit:asset:BTC:max_gross_notional_usd", "fired"),
        (alerting.STALE, "stale:asset:BTC", "fired"),
        (alerting.DLQ_RATE, "dlq_rate", "fired"),
    ]
    # The same conditions: no transitions. At the threshold (10 of 10): not above it.
    assert (
        limit_transitions(
            tr, breaches=[breach], stale=stale, dlq_last_minute=12, dlq_per_minute=10, now_ms=T
        )
        == []
    )
    # breaches None (no limit set, computed by the shell): exposure alerts are left alone.
    out = limit_transitions(
        tr, breaches=None, stale={}, dlq_last_minute=10, dlq_per_minute=10, now_ms=T + 1
    )
    assert [(a["kind"], a["state"]) for a in out] == [
        (alerting.STALE, "cleared"),
        (alerting.DLQ_RATE, "cleared"),
    ]
    assert tr.has_kind(alerting.EXPOSURE_LIMIT)
    out = limit_transitions(
        tr, breaches=[], stale={}, dlq_last_minute=0, dlq_per_minute=10, now_ms=T + 2
    )
    assert [(a["kind"], a["state"], a["details"]["value"]) for a in out] == [
        (alerting.EXPOSURE_LIMIT, "cleared", 2e6)
    ]
    assert tr.active == {}


class _Last:
    def __init__(self, action: str, risk_score: float) -> None:
        self.action = action
        self.risk_score = risk_score


def test_adopted_liquidations_do_not_fire_again_and_clear_once() -> None:
    # The next owner of a partition reads back p1 LIQUIDATE and p2 HOLD.
    t = AlertTracker()
    n = alerting.adopt_liquidations(
        t, [("p1", _Last("LIQUIDATE", 90.0)), ("p2", _Last("HOLD", 10))]
    )
    assert n == 1 and set(t.active) == {"liquidate:position:p1"} and t.fired == 0
    assert alerting.adopt_liquidations(t, [("p1", _Last("LIQUIDATE", 91.0))]) == 0
    still = Output("p1", {}, action="LIQUIDATE", asset="SOL", risk_score=92.0)
    assert alerting.liquidate_transitions(t, [still], 1) == []
    calm = Output("p1", {}, action="REDUCE", asset="SOL", risk_score=40.0)
    [cleared] = alerting.liquidate_transitions(t, [calm], 2)
    assert (cleared["key"], cleared["state"]) == ("liquidate:position:p1", "cleared")


def test_forgotten_liquidations_are_neither_cleared_nor_kept() -> None:
    t = AlertTracker()
    alerting.adopt_liquidations(t, [("p1", _Last("LIQUIDATE", 90.0))])
    alerting.forget_liquidations(t, ["p1", "unknown"])
    assert t.active == {} and t.cleared == 0
