"""Shared expectations of the tests (importable from any test module: `tests/` is on the
path, as for `kafka_helpers`)."""

from __future__ import annotations

#: The fields of a risk action that `POST /assess` answers too, with the same meaning
#: (all of its fields but `version` and `ts_ms`): an action equals a fresh assessment of
#: its inputs on these.
ASSESS_FIELDS = (
    "action",
    "hedge_pct",
    "risk_score",
    "reasoning",
    "suggested_hedge",
    "pnl_scenarios",
    "position_notional_usd",
    "current_unrealized_pnl",
    "re_evaluate_minutes",
    "risk_breakdown",
    "reason_code",
)
