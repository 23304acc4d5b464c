"""`Assessment.to_dict()` (inlined for the publish path) against the plain composition of
the properties it replaces: the same dict, the same orjson bytes, for a wide mix."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from stream_risk.assessor import Assessment, assess
from stream_risk.config import DEFAULT_CONFIG


def mix(n: int, seed: int) -> list[tuple[Any, ...]]:
    """`assess` arguments: longs, shorts, flats, every band, expensive hedges, configs."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        price = 10 ** rnd.uniform(0, 5)
        side = rnd.random()
        size = 0.0 if side < 0.05 else 10 ** rnd.uniform(4, 7.3) / price * (1 if side < 0.5 else -1)
        funding = rnd.uniform(-0.3, 0.3) if rnd.random() < 0.8 else rnd.uniform(-4, 4)
        cfg = DEFAULT_CONFIG
        if i % 4 == 3:
            cfg = DEFAULT_CONFIG.merged(
                {"max_loss_pct": rnd.uniform(0.02, 0.2), "max_hedge_cost_bps": rnd.uniform(10, 100)}
            )
        out.append(
            (
                size,
                price * rnd.uniform(0.9, 1.1),
                rnd.uniform(0, 600),
                rnd.uniform(-1e5, 1e5) if rnd.random() < 0.3 else None,
                price,
                0.0 if rnd.random() < 0.05 else rnd.uniform(0.0, 0.12),
                rnd.uniform(30, 120) if rnd.random() < 0.12 else rnd.uniform(0, 10),
                funding,
                10 ** rnd.uniform(5.3, 7.7),
                10 ** rnd.uniform(5.3, 7.7),
                cfg,
                rnd.choice(("BTC", "ETH", "SOL", "")),
            )
        )
    return out


def plain_dict(a: Assessment) -> dict[str, Any]:
    """The record built from the public properties, one by one (the plain path)."""
    h = a.suggested_hedge
    return {
        "action": a.action,
        "hedge_pct": a.hedge_pct,
        "risk_score": a.risk_score,
        "reasoning": a.reasoning,
        "suggested_hedge": None if h is None else h.to_dict(),
        "pnl_scenarios": a.pnl_scenarios,
        "position_notional_usd": a.notional,
        "current_unrealized_pnl": a.unrealized_pnl,
        "re_evaluate_minutes": a.re_evaluate_minutes,
        "risk_breakdown": a.risk_breakdown,
        "reason_code": a.reason_code,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_to_dict_equals_the_properties_byte_for_byte(seed: int) -> None:
    args = mix(3_000, seed)
    actions = set()
    for a_args in args:
        a = assess(*a_args)
        fast, plain = a.to_dict(), plain_dict(a)
        assert fast == plain
        assert orjson.dumps(fast) == orjson.dumps(plain)
        actions.add((a.action, a.too_expensive, a.size == 0))
    # The mix covers every action, the too-expensive HOLD and flat positions.
    assert {x[0] for x in actions} == {"HOLD", "REDUCE", "HEDGE_PARTIAL", "HEDGE_FULL", "LIQUIDATE"}
    assert any(x[1] for x in actions) and any(x[2] for x in actions)


def test_reason_codes_of_every_band() -> None:
    for band, code in (
        ("low", "SCORE_LOW"),
        ("low-moderate", "SCORE_LOW_MODERATE"),
        ("moderate", "SCORE_MODERATE"),
        ("high", "SCORE_HIGH"),
        ("critical", "SCORE_CRITICAL"),
    ):
        a = assess(10, 45_000, 60, None, 44_000, 0.05, 3, 0.08, 5e6, 5e6)
        a.band = band
        assert a.reason_code == code
