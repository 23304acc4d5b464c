"""Alert rules (DESIGN §10, docs/design.md D9), pure: fire once when a condition starts,
once when it clears, whatever the number of ticks in between.

- `AlertTracker`: the shell tells it, per kind, the conditions true now (`sync`) or one
  condition's state (`observe`); it returns the transitions only.
- `liquidate_transitions`: the LIQUIDATE alerts of what one step produced (its outputs).
- `limit_transitions`: exposure limits, stale markets and the DLQ rate, from plain values
  the shell reads off the engine (breaches, market times, DLQ records in the last minute).

No I/O here: the shell publishes what these return (risk-alerts, the webhook, metrics).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from stream_risk.engine.events import Output

EXPOSURE_LIMIT: Final = "exposure_limit"
LIQUIDATE: Final = "liquidate"
STALE: Final = "stale_market_data"
DLQ_RATE: Final = "dlq_rate"
KINDS: Final = (EXPOSURE_LIMIT, LIQUIDATE, STALE, DLQ_RATE)

Alert = dict[str, Any]


class AlertTracker:
    """Which conditions are active, and the transitions of each."""

    def __init__(self) -> None:
        #: key -> (kind, details when it fired)
        self.active: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fired = 0
        self.cleared = 0

    def observe(
        self, kind: str, key: str, active: bool, details: Mapping[str, Any], now_ms: int
    ) -> Alert | None:
        """One condition's state now: an alert if it started or cleared, else None."""
        held = self.active.get(key)
        if active and held is None:
            self.active[key] = (kind, dict(details))
            self.fired += 1
            return _alert(key, kind, "fired", details, now_ms)
        if not active and held is not None:
            del self.active[key]
            self.cleared += 1
            return _alert(key, kind, "cleared", {**held[1], **details}, now_ms)
        return None

    def sync(self, kind: str, now: Mapping[str, Mapping[str, Any]], now_ms: int) -> list[Alert]:
        """Every condition of `kind` true now (key -> details): fires the new ones, clears
        the ones of that kind no longer true."""
        out = []
        for key, details in now.items():
            a = self.observe(kind, key, True, details, now_ms)
            if a is not None:
                out.append(a)
        for key in [k for k, (kd, _) in self.active.items() if kd == kind and k not in now]:
            a = self.observe(kind, key, False, {}, now_ms)
            if a is not None:
                out.append(a)
        return out

    def has_kind(self, kind: str) -> bool:
        return any(k == kind for k, _ in self.active.values())


def _alert(key: str, kind: str, state: str, details: Mapping[str, Any], ts: int) -> Alert:
    return {"key": key, "kind": kind, "state": state, "details": dict(details), "ts": ts}


def liquidate_key(position_id: str) -> str:
    return "liquidate:position:" + position_id


def liquidate_transitions(
    tracker: AlertTracker, outputs: Iterable[Output], now_ms: int
) -> list[Alert]:
    """A position's LIQUIDATE alert fires when an action says LIQUIDATE and none is active
    for it; it clears when a later action says something else or the position closes (a
    tombstone). Outputs in the order the core made them (the latest decides)."""
    active = tracker.active
    fired: list[Alert] = []
    for out in outputs:
        key = liquidate_key(out.position_id)
        action = out.action
        if action is None:
            if key in active:
                a = tracker.observe(LIQUIDATE, key, False, {"closed": True}, now_ms)
                if a is not None:
                    fired.append(a)
            continue
        liquidate = action == "LIQUIDATE"
        if liquidate != (key in active):
            a = tracker.observe(
                LIQUIDATE,
                key,
                liquidate,
                {
                    "position_id": out.position_id,
                    "asset": out.asset,
                    "action": action,
                    "risk_score": out.risk_score,
                    "reason_code": out.reason_code,
                },
                now_ms,
            )
            if a is not None:
                fired.append(a)
    return fired


def adopt_liquidations(tracker: AlertTracker, restored: Iterable[tuple[str, Any]]) -> int:
    """A rebuilt partition's positions whose last published action (read back, `.action`,
    `.risk_score`) is LIQUIDATE: their alert was fired by the instance before; it is active
    here now, without firing again (cleared here once a later action is not LIQUIDATE).
    Returns how many were adopted."""
    n = 0
    for pid, last in restored:
        key = liquidate_key(pid)
        if last.action == "LIQUIDATE" and key not in tracker.active:
            tracker.active[key] = (
                LIQUIDATE,
                {"position_id": pid, "action": last.action, "risk_score": last.risk_score},
            )
            n += 1
    return n


def forget_liquidations(tracker: AlertTracker, position_ids: Iterable[str]) -> None:
    """Positions moved to another instance: their LIQUIDATE alerts are the next owner's
    (it adopts them from the actions it reads back), neither cleared nor kept here."""
    active = tracker.active
    for pid in position_ids:
        active.pop(liquidate_key(pid), None)


def stale_markets(
    market_ts: Iterable[tuple[str, int]], now_ms: int, max_age_ms: int
) -> dict[str, dict[str, Any]]:
    """The stale-market conditions true now: assets (with positions) whose latest tick
    (`ts` >= 0: one was seen) is older than `max_age_ms`."""
    return {
        "stale:asset:" + asset: {"asset": asset, "tick_ts": ts, "max_tick_age_ms": max_age_ms}
        for asset, ts in market_ts
        if ts >= 0 and now_ms - ts > max_age_ms
    }


def limit_transitions(
    tracker: AlertTracker,
    *,
    breaches: Iterable[Mapping[str, Any]] | None,
    stale: Mapping[str, Mapping[str, Any]],
    dlq_last_minute: int,
    dlq_per_minute: float,
    now_ms: int,
) -> list[Alert]:
    """Exposure limits, stale markets and the DLQ rate: the transitions since the last call.

    `breaches`: the exposure view's breaches (`scope`, `limit`, ...), or None when there
    are no limits and none of their alerts is active (nothing to compute or clear).
    """
    out: list[Alert] = []
    if breaches is not None:
        now = {f"limit:{b['scope']}:{b['limit']}": b for b in breaches}
        out += tracker.sync(EXPOSURE_LIMIT, now, now_ms)
    out += tracker.sync(STALE, stale, now_ms)
    a = tracker.observe(
        DLQ_RATE,
        "dlq_rate",
        dlq_last_minute > dlq_per_minute,
        {"dlq_last_minute": dlq_last_minute, "threshold_per_minute": dlq_per_minute},
        now_ms,
    )
    if a is not None:
        out.append(a)
    return out


__all__ = [
    "KINDS",
    "Alert",
    "AlertTracker",
    "adopt_liquidations",
    "forget_liquidations",
    "limit_transitions",
    "liquidate_transitions",
    "stale_markets",
]
