"""`stream-risk tail`'s readable lines, from records made by hand."""

from __future__ import annotations

from typing import Any

from stream_risk.console.tail import clock, format_action, format_alert, format_dlq, usd

# 2026-01-01T12:00:01.234Z
T = 1_767_268_801_234


def test_clock_and_dollars() -> None:
    assert clock(T) == "12:00:01.234"
    assert clock(None) == "--:--:--.---"
    assert usd(6_100_000) == "$6.1M"
    assert usd(5_000_000) == "$5M"
    assert usd(12_500) == "$12.5k"
    assert usd(950) == "$950"
    assert usd(-2_000_000_000) == "-$2B"


def _action(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "position_id": "p-17",
        "asset": "BTC",
        "action": "HEDGE_PARTIAL",
        "risk_score": 48.84,
        "suggested_hedge": {
            "instrument": "perp_short",
            "size": 5.0,
            "total_cost_usd": 66.0,
            "total_cost_bps": 3.04,
        },
        "trigger": "tick",
        "event_ts": T,
        "stale_market_data": False,
    }
    return {**base, **over}


def test_action_line() -> None:
    line = format_action("p-17", _action(), record_ts=0)
    assert line == (
        "12:00:01.234 p-17 BTC HEDGE_PARTIAL score 48.8 hedge perp_short 5 BTC "
        "($66.00, 3.0 bps) trigger tick"
    )
    hold = format_action(
        "p-2",
        _action(
            position_id="p-2",
            action="HOLD",
            risk_score=12,
            suggested_hedge=None,
            trigger="timer",
            stale_market_data=True,
        ),
        record_ts=0,
    )
    assert hold == "12:00:01.234 p-2 BTC HOLD score 12.0 trigger timer [stale market data]"


def test_tombstone_is_closed() -> None:
    assert format_action("p-17", None, record_ts=T) == "12:00:01.234 p-17 closed"


def test_alert_lines() -> None:
    limit = {
        "key": "limit:asset:BTC:max_net_notional_usd",
        "kind": "exposure_limit",
        "state": "fired",
        "details": {
            "scope": "asset:BTC",
            "limit": "max_net_notional_usd",
            "limit_usd": 5_000_000.0,
            "value_usd": 6_100_000.0,
        },
        "ts": T,
    }
    assert format_alert(limit, 0) == "12:00:01.234 FIRED limit asset:BTC net notional $6.1M > $5M"
    cleared = {**limit, "state": "cleared"}
    assert format_alert(cleared, 0) == (
        "12:00:01.234 CLEARED limit asset:BTC net notional back within $5M (was $6.1M > $5M)"
    )
    liq: dict[str, Any] = {
        "key": "liquidate:position:p-9",
        "kind": "liquidate",
        "state": "fired",
        "details": {
            "position_id": "p-9",
            "asset": "ETH",
            "action": "LIQUIDATE",
            "risk_score": 91.34,
            "reason_code": "SCORE_CRITICAL",
        },
        "ts": T,
    }
    assert (
        format_alert(liq, 0) == "12:00:01.234 FIRED liquidate p-9 ETH score 91.3 (SCORE_CRITICAL)"
    )
    closed = {**liq, "state": "cleared", "details": {**liq["details"], "closed": True}}
    assert format_alert(closed, 0) == "12:00:01.234 CLEARED liquidate p-9 ETH closed"
    stale = {
        "key": "stale:asset:SOL",
        "kind": "stale_market_data",
        "state": "fired",
        "details": {"asset": "SOL", "tick_ts": T - 61_000, "max_tick_age_ms": 30_000},
        "ts": T,
    }
    assert format_alert(stale, 0) == (
        "12:00:01.234 FIRED stale market data SOL: last tick 11:59:00.234, older than 30 s"
    )
    dlq = {
        "key": "dlq_rate",
        "kind": "dlq_rate",
        "state": "fired",
        "details": {"dlq_last_minute": 14, "threshold_per_minute": 10.0},
        "ts": T,
    }
    assert format_alert(dlq, 0) == (
        "12:00:01.234 FIRED dead letters: 14 in the last minute (threshold 10/min)"
    )


def test_dlq_line() -> None:
    headers = [
        ("error", b"invalid position: size: Input should be a valid number"),
        ("error_kind", b"invalid"),
        ("source_topic", b"positions"),
        ("source_partition", b"2"),
        ("source_offset", b"17"),
    ]
    assert format_dlq(b"p-3", headers, T) == (
        "12:00:01.234 key p-3: invalid position: size: Input should be a valid number "
        "(from positions[2]@17)"
    )
    assert format_dlq(None, [], T) == "12:00:01.234 key (none): (no error header) (from ?[?]@?)"
