"""The `risk-actions` record of an assessment (DESIGN §2), and how to make it again.

A running engine keeps, for every position, the last action it published (`GET /positions`
shows it). Keeping that record's bytes costs ~1.1 KB a position; keeping what made it
costs a fifth of that: the assessor's inputs and the record's own fields, references to
objects the table mostly holds anyway. Making it again is deterministic: the same inputs
give the same floats, so the same dict and the same bytes (`tests/engine` checks it).
"""

from __future__ import annotations

from typing import Any

from stream_risk import __version__
from stream_risk.assessor import Assessment
from stream_risk.models import SCHEMA_VERSION


def action_record(
    a: Assessment,
    position_id: str,
    asset: str,
    trigger: str,
    event_ts: int,
    tick_ts: int,
    position_ts: int,
    now_ms: int,
    stale: bool,
    due: int,
) -> dict[str, Any]:
    """The action record of assessment `a` (the `/assess` fields first, in their order)."""
    value = a.to_dict()
    value["version"] = __version__
    value["ts_ms"] = now_ms
    value["schema_version"] = SCHEMA_VERSION
    value["position_id"] = position_id
    value["asset"] = asset
    value["trigger"] = trigger
    value["event_ts"] = event_ts
    value["tick_ts"] = tick_ts
    value["position_ts"] = position_ts
    value["assessed_at"] = now_ms
    value["stale_market_data"] = stale
    value["next_evaluation_ts"] = due
    return value
