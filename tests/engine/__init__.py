"""Tests of the pure core (`stream_risk.engine`): no broker, no asyncio, no wall clock.

Shared builders live here (test modules import them with `from . import ...`). The default
tick and position are DESIGN's worked example: BTC size 10 at entry 45,000, 60 minutes
old; price 44,000, vol 0.05, spread 3 bps, funding 0.08, depths 5e6 each. Worked by hand:
notional 440,000; loss 30 (5 % of 440,000 = 22,000 → loss_pct 0.05 / 0.05 × 30 × 1) +
age 2.5 (60 / 480 × 20) + vol 15 (0.04 ≤ 0.05 < 0.08) + liquidity 1.32
(440,000 / 5e6 × 15) = 48.82 → HEDGE_PARTIAL (h 0.5), re-evaluate in 60 minutes.
"""

from __future__ import annotations

from typing import Any

from stream_risk.engine import Engine, Lineage, Output, PositionEvent, StepResult, TickEvent
from stream_risk.models import MarketTick, PositionMessage

#: Event time origin of every test (2023-11-14T22:13:20Z), and one minute in ms.
T0 = 1_700_000_000_000
MIN = 60_000

#: Sentinel: "leave this field out of the record" (None is a value for some fields).
_UNSET: Any = object()


def tick(
    asset: str = "BTC",
    ts: int = T0,
    price: float = 44_000.0,
    *,
    vol: float | None = 0.05,
    spread: float | None = 3.0,
    funding: float | None = 0.08,
    bid: float | None = 5e6,
    ask: float | None = 5e6,
    partition: int = 0,
    offset: int = -1,
) -> TickEvent:
    """A `market-ticks` record; pass None for a field to leave it out of the tick."""
    return TickEvent(
        MarketTick(
            asset=asset,
            ts=ts,
            current_price=price,
            volatility_1d=vol,
            spot_spread_bps=spread,
            perp_funding_rate=funding,
            bid_depth_usd=bid,
            ask_depth_usd=ask,
        ),
        Lineage("market-ticks", partition, offset, ts),
    )


def price_tick(
    asset: str = "BTC", ts: int = T0, price: float = 44_000.0, *, offset: int = -1
) -> TickEvent:
    """A tick that carries the price only (every other field keeps its last value)."""
    return tick(
        asset, ts, price, vol=None, spread=None, funding=None, bid=None, ask=None, offset=offset
    )


def position(
    pid: str = "p1",
    asset: str = "BTC",
    size: float = 10.0,
    entry: float = 45_000.0,
    *,
    ts: int | None = T0,
    age: float | None = 60.0,
    opened_at: int | None = None,
    pnl: float | None = None,
    config: dict[str, Any] | None = None,
    key: str | None = None,
    body_id: Any = _UNSET,
    partition: int = 0,
    offset: int = -1,
    ts_fallback: int = 0,
) -> PositionEvent:
    """A `positions` record keyed by `key` (default: `pid`), body position_id `pid`."""
    body: dict[str, Any] = {
        "position_id": pid if body_id is _UNSET else body_id,
        "asset": asset,
        "size": size,
        "entry_price": entry,
        "ts": ts,
        "age_minutes": age,
        "opened_at": opened_at,
        "unrealized_pnl": pnl,
        "config": config,
    }
    msg = PositionMessage.model_validate(body)
    return PositionEvent(
        pid if key is None else key,
        msg,
        ts_fallback,
        Lineage("positions", partition, offset, ts if ts is not None else ts_fallback),
    )


def close(pid: str = "p1", *, partition: int = 0, offset: int = -1) -> PositionEvent:
    """A tombstone on `positions`: the position is closed."""
    return PositionEvent(pid, None, 0, Lineage("positions", partition, offset, -1))


def actions(res: StepResult) -> list[dict[str, Any]]:
    """The action records (not tombstones) a call published, in order."""
    return [o.value for o in res.outputs if o.value is not None]


def only(res: StepResult) -> dict[str, Any]:
    """The one action a call published (fails unless exactly one, and no tombstone)."""
    assert len(res.outputs) == 1, res.outputs
    value = res.outputs[0].value
    assert value is not None
    return value


def tombstones(res: StepResult) -> list[str]:
    return [o.position_id for o in res.outputs if o.value is None]


def by_pid(outputs: list[Output]) -> dict[str, dict[str, Any] | None]:
    return {o.position_id: o.value for o in outputs}


def index_of(engine: Engine) -> dict[str, set[str]]:
    """The engine's asset -> positions index, as sets."""
    return {asset: set(pids) for asset, pids in engine.table.by_asset.items()}
