"""The `risk-actions` record of an assessment (DESIGN §2), and how to make it again.

A running engine keeps, for every position, the last action it published (`GET /positions`
shows it). Keeping that record's bytes costs ~1.1 KB a position; keeping what made it
costs a fifth of that: the assessor's inputs and the record's own fields, references to
objects the table mostly holds anyway. Making it again is deterministic: the same inputs
give the same floats, so the same dict and the same bytes (`tests/engine` checks it).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import orjson

from stream_risk import __version__
from stream_risk.assessor import (
    HOLD,
    PERP_LONG,
    PERP_SHORT,
    REDUCE,
    SPOT_BUY,
    SPOT_SELL,
    Assessment,
    hedge_at,
)
from stream_risk.engine.events import NO_LINEAGE, Lineage
from stream_risk.models import SCHEMA_VERSION
from stream_risk.rules import BANDS, RANK, hedge_fractions, thresholds

#: reason_code when the stale-data policy decided the action (docs/design.md D9).
REASON_STALE: Final = "STALE_MARKET_DATA"
#: reason_code when hysteresis held a riskier band than the score's (docs/design.md D11).
REASON_HYSTERESIS: Final = "HYSTERESIS_HOLD"
#: The `policy` of an action hysteresis decided: this prefix and the band held, e.g.
#: "hysteresis:HEDGE_PARTIAL" (what `MadeAction.record()` needs to make the record again).
HYSTERESIS: Final = "hysteresis:"
#: The `policy` string of each band held, made once (a kept action references it).
_HELD: Final = {b.action: HYSTERESIS + b.action for b in BANDS}


#: The action and instrument names, to hold one string of each, not one per record read.
_NAMES: Final = {b.action: b.action for b in BANDS} | {
    n: n for n in (SPOT_SELL, SPOT_BUY, PERP_SHORT, PERP_LONG)
}


class ReadAction(NamedTuple):
    """A `risk-actions` record read back on a rebuild: its bytes as published (kept, not
    encoded again) and the fields the core compares (`changed` emission) and settles on."""

    value: bytes
    action: str
    hedge_pct: float
    instrument: str | None
    risk_score: float
    stale: bool
    next_due: int
    position_ts: int
    tick_ts: int
    config_version: dict[str, int]


def read_action(value: bytes) -> ReadAction | None:
    """`value` (a `risk-actions` record) decoded once into a `ReadAction`; None when it is
    not a JSON object or its fields are not of their types (what cannot be compared)."""
    try:
        d = orjson.loads(value)
        if not isinstance(d, dict):
            return None
        hedge = d.get("suggested_hedge") or {}
        action = str(d.get("action", ""))
        instrument = hedge.get("instrument")
        return ReadAction(
            value,
            _NAMES.get(action, action),
            float(d.get("hedge_pct", 0.0)),
            instrument if instrument is None else _NAMES.get(instrument, instrument),
            float(d.get("risk_score", 0.0)),
            bool(d.get("stale_market_data", False)),
            int(d.get("next_evaluation_ts", -1)),
            int(d.get("position_ts", -1)),
            int(d.get("tick_ts", -1)),
            d.get("config_version") or {},
        )
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return None


def advice_differs(last: Any, action: Any, hedge_pct: Any, instrument: Any, stale: Any) -> Any:
    """Whether the advice differs from `last` (the last published action: `action`,
    `hedge_pct`, `instrument`, `stale`): one half of `changed` emission's tick rule
    (DESIGN §3; `score_moved` is the other). Scalars, or numpy arrays (elementwise: replay's
    fast path evaluates the rule over runs of ticks, with codes for action and instrument)."""
    return (
        (action != last.action)
        | (hedge_pct != last.hedge_pct)
        | (instrument != last.instrument)
        | (stale != last.stale)
    )


def score_moved(last_score: Any, risk_score: Any, points: Any) -> Any:
    """Whether the risk score moved at least `points` from the last published one: the
    other half of the tick rule (scalars or numpy arrays, as `advice_differs`)."""
    return abs(risk_score - last_score) >= points


def should_emit(
    emit: str,
    trigger: str,
    last: Any,
    action: str,
    hedge_pct: float,
    instrument: str | None,
    stale: bool,
    risk_score: float,
    points: float,
) -> bool:
    """`changed` emission (DESIGN §3), the one rule: publish under `emit="all"`, on a
    position's first assessment (`last` None), on every trigger but a tick (an update of
    the position itself, a timer, a config change: the latest record always describes the
    position as it is), and on a tick when the advice differs from the last published or
    the score moved at least `points`."""
    return (
        emit == "all"
        or last is None
        or trigger != "tick"
        or bool(
            advice_differs(last, action, hedge_pct, instrument, stale)
            or score_moved(last.risk_score, risk_score, points)
        )
    )


def apply_stale_policy(a: Assessment, policy: str) -> bool:
    """Change the advice of `a` (made on stale market data) per `stale_policy`.

    `hold`: HOLD, no hedge (no trading on old prices). `reduce`: at least REDUCE at the
    config's `reduce_pct` (a stronger model action stands). Returns True when the policy
    decided the action (its reason_code is then STALE_MARKET_DATA). A flat position is
    never changed.

    A `policy` naming a hysteresis hold (`HYSTERESIS` + band, see `apply_hysteresis`) holds
    that band again: how a kept action makes its record again.
    """
    if a.size == 0 or policy == "flag":
        return False
    if policy.startswith(HYSTERESIS):
        held = policy[len(HYSTERESIS) :]
        _hold(a, held, hedge_fractions(a.cfg)[RANK[held]])
        return True
    if policy == "hold":
        a.action = HOLD
        a.hedge_pct = 0.0
        a.instrument = None
        return True
    if a.action != HOLD:
        return False
    h = a.cfg.reduce_pct
    a.action = REDUCE
    a.hedge_pct = h
    a.too_expensive = False
    a.instrument = (
        hedge_at(a.size, a.price, a.spread_bps, a.funding, h, a.cfg).instrument if h > 0 else None
    )
    return True


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
    *,
    policy: str | None = None,
    config_version: dict[str, int] | None = None,
    position_lineage: Lineage = NO_LINEAGE,
    tick_lineage: Lineage = NO_LINEAGE,
    age_minutes: float = 0.0,
    entry_price: float = 0.0,
    unrealized_pnl: float | None = None,
    market: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0),
    refs: tuple[dict[str, Any], dict[str, Any], list[str]] | None = None,
    position_ref: dict[str, Any] | None = None,
    estimated: list[str] | None = None,
) -> dict[str, Any]:
    """The action record of assessment `a` (the `/assess` fields first, in their order),
    with its decision record: `config_version`, `inputs` (what `POST /assess` needs to give
    the same numbers) and `lineage`. `policy`: the stale-data policy that decided the
    action (already applied to `a`), or None. `market`: vol, spread, funding, bid, ask;
    `estimated`: the market inputs the feed did not give (`estimated_inputs`); `refs`:
    `MarketState.decision_refs()` (the same market dict, tick lineage and estimated list,
    built once per tick) instead of building them here."""
    value = a.to_dict()
    if policy is not None and policy.startswith(HYSTERESIS):
        value["reason_code"] = REASON_HYSTERESIS
        value["reasoning"] = _hysteresis_reasoning(a, value["reasoning"])
    elif policy is not None:
        value["reason_code"] = REASON_STALE
        if policy == "hold":
            value["reasoning"] = (
                f"Market data is stale (stale_policy=hold): no trade on old prices. "
                f"Risk score {a.risk_score:.0f}/100 ({a.band}). Hold."
            )
        else:
            value["reasoning"] = "Market data is stale (stale_policy=reduce). " + value["reasoning"]
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
    value["estimated_inputs"] = (estimated or []) if refs is None else refs[2]
    value["next_evaluation_ts"] = due
    value["config_version"] = config_version or {}
    if refs is None:
        vol, spread, funding, bid, ask = market
        market_in: dict[str, Any] = {
            "current_price": a.price,
            "volatility_1d": vol,
            "spot_spread_bps": spread,
            "perp_funding_rate": funding,
            "bid_depth_usd": bid,
            "ask_depth_usd": ask,
        }
        tick_ref: dict[str, Any] = {
            "topic": tick_lineage.topic,
            "partition": tick_lineage.partition,
            "offset": tick_lineage.offset,
        }
    else:
        market_in, tick_ref, _ = refs
    value["inputs"] = {
        "position": {
            "asset": asset,
            "size": a.size,
            "entry_price": entry_price,
            "age_minutes": age_minutes,
            "unrealized_pnl": unrealized_pnl,
        },
        "market": market_in,
        "config": a.cfg.diff_from_defaults,
    }
    if position_ref is None:
        position_ref = {
            "topic": position_lineage.topic,
            "partition": position_lineage.partition,
            "offset": position_lineage.offset,
        }
    value["lineage"] = {"position": position_ref, "tick": tick_ref}
    return value


def _hold(a: Assessment, action: str, h: float) -> None:
    a.action = action
    a.hedge_pct = h
    a.instrument = (
        hedge_at(a.size, a.price, a.spread_bps, a.funding, h, a.cfg).instrument if h > 0 else None
    )


def apply_hysteresis(a: Assessment, held: str) -> str | None:
    """Hold a riskier band than the score's, per `hysteresis_points` (DESIGN §12, D11).

    `held`: the action of the position's previous published record (the band a desk holds).
    Moving to a riskier band happens at the model's thresholds (nothing to do here); moving
    to a safer one only once the score is below the held band's threshold by more than
    `hysteresis_points`. So when the model's action is a score band safer than `held`, the
    advice becomes the riskiest band b at or below `held` with score >= threshold(b) - h
    (at b's fraction of the current config; the instrument made again, as a hedge may now
    be advised where the model advised none). A HOLD because the hedge is too expensive and
    a flat position are not score bands: never overridden. Call before the stale policy.

    Returns the `policy` to record (`HYSTERESIS` + the band held) when it held, else None.
    """
    cfg = a.cfg
    points = cfg.hysteresis_points
    if points <= 0 or a.size == 0 or a.too_expensive:
        return None
    rank = RANK.get(held)
    model = RANK[a.action]
    if rank is None or rank <= model:
        return None
    score = a.risk_score
    for band, threshold, h in thresholds(cfg):
        if band > rank:
            continue
        if band <= model:
            break
        if score >= threshold - points:
            action = BANDS[band].action
            _hold(a, action, h)
            return _HELD[action]
    return None


def _hysteresis_reasoning(a: Assessment, model_reasoning: str) -> str:
    """ "Risk score 44/100 (low-moderate). Holding HEDGE_PARTIAL until the score falls below
    43 (hysteresis 2 points): recommend 50% hedge via ..." (the held action's own advice)."""
    points = a.cfg.hysteresis_points
    field = BANDS[RANK[a.action]].threshold_field
    assert field is not None  # a held band is above the lowest
    threshold: float = getattr(a.cfg, field)
    head = f"Risk score {a.risk_score:.0f}/100 ({a.band})."
    advice = model_reasoning[len(head) :].strip()
    advice = advice[:1].lower() + advice[1:]
    return (
        f"{head} Holding {a.action} until the score falls below {threshold - points:g} "
        f"(hysteresis {points:g} points): {advice}"
    )
