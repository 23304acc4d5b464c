"""What the parts of the engine share: its settings (`EngineConfig`), counters (`Stats`),
the state every part reads (`EngineParts`) and the record-time rules of the rebuild and the
live path alike (`future_reference`). The parts are mixins of `Engine` (core.py):
`rebuild.py` (load, restore, settle), `scopes.py` (risk-config), `exposure.py` (exposure,
limits), `replay_api.py` (replay's fast path). No I/O, no clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Container
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from stream_risk.config import (
    DEFAULT_CONFIG,
    RiskConfig,
)
from stream_risk.engine.actions import LastAction
from stream_risk.engine.estimates import MarketDefaults, VolEstimator
from stream_risk.engine.events import (
    PositionEvent,
    PositionFields,
    StepResult,
    Trigger,
)
from stream_risk.engine.market import DEFAULT_MARKET, DEFAULT_VOL
from stream_risk.engine.record import ReadAction
from stream_risk.engine.table import PositionState, Table
from stream_risk.engine.timers import Timers
from stream_risk.models import PositionMessage

EmitPolicy = Literal["changed", "all"]

#: The notional limits a scope may set (checked on exposure, not by the model).
LIMIT_FIELDS = ("max_net_notional_usd", "max_gross_notional_usd")
#: A `positions` record decoded for `Engine.load_rows`: (key, message, or its fields
#: (`PositionFields`), or None for a tombstone, offset, record timestamp).
PositionRow = tuple[str, PositionMessage | PositionFields | None, int, int]
#: How many config changes `config_view()` remembers.
CONFIG_HISTORY = 1000


@dataclass(frozen=True, slots=True)
class EngineConfig:
    risk: RiskConfig = DEFAULT_CONFIG
    emit: EmitPolicy = "changed"
    #: A tick older than this at assessment time marks the action `stale_market_data`.
    max_tick_age_ms: int = 60_000
    #: A record whose ts is further than this ahead of `now` is rejected (clock skew guard).
    max_future_ms: int = 300_000
    #: A timer firing later than this is re-based to `now - max_timer_lateness_ms`.
    max_timer_lateness_ms: int = 60_000
    #: `changed` emission publishes when the score moves by at least this many points.
    score_change_points: float = 1.0
    #: Market fields a feed never gives (spread None: wait for the feed's).
    market_defaults: MarketDefaults = DEFAULT_MARKET
    #: The vol estimate used while an asset's feed gives no volatility_1d (None: off, wait).
    vol: VolEstimator | None = DEFAULT_VOL
    #: Keep each (asset, positions partition)'s contribution to the book (D17), for the
    #: shell's aggregation stage (`Engine.drain_partials`). Off: no cost (replay).
    book_partials: bool = False


@dataclass(slots=True)
class Stats:
    """Counters the shells export as metrics. Plain ints: the core has no metrics library."""

    assessments: int = 0
    published: int = 0
    suppressed: int = 0
    tombstones: int = 0
    waiting: int = 0
    stale_assessments: int = 0
    out_of_order_ticks: int = 0
    out_of_order_positions: int = 0
    duplicate_ticks: int = 0
    duplicate_positions: int = 0
    future_records: int = 0
    config_changes: int = 0
    config_rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class Restored:
    """A position's last action read back from `risk-actions`, until its partition settles."""

    last: LastAction
    next_due: int
    position_ts: int
    tick_ts: int
    config_version: dict[str, int]

    @classmethod
    def of(cls, read: ReadAction) -> Restored:
        """What the rebuild keeps of an action record read back (its bytes as read)."""
        return cls(
            LastAction(
                read.action,
                read.hedge_pct,
                read.instrument,
                read.risk_score,
                read.stale,
                read.value,
            ),
            read.next_due,
            read.position_ts,
            read.tick_ts,
            read.config_version,
        )


#: A Kafka record timestamp below this (March 1973 in epoch ms) is not a usable clock:
#: e.g. epoch seconds written where milliseconds belong.
MIN_RECORD_TS_MS = 100_000_000_000


def future_reference(now_ms: int | None, record_ms: int) -> int | None:
    """The time a record's `ts` is checked against for "from the future" (D3).

    The earlier of `now` and the record's own Kafka timestamp (when it has one), so a record
    is refused, or accepted, alike when first consumed and whenever it is read again (a
    rebuild, a restart's tick catch-up): its timestamp does not change, and when first
    consumed `now` is not earlier than it. With `now` alone, a record refused live is applied
    by a rebuild (which had no clock) and then hides every newer update until its `ts` comes.
    """
    if record_ms < MIN_RECORD_TS_MS:
        # No timestamp, or one that is not epoch ms (seconds by mistake): not a clock.
        return now_ms
    return record_ms if now_ms is None else min(now_ms, record_ms)


def compact(data: bytes) -> bytes:
    """`data` in a bytes object of its own size (orjson over-allocates what it returns)."""
    return bytes(memoryview(data))


class EngineParts:
    """The state of an `Engine` its parts read and write (set by `Engine.__init__`), and
    the live path's methods they call (defined by `Engine`)."""

    config: EngineConfig
    table: Table
    timers: Timers
    stats: Stats
    scopes: dict[str, tuple[dict[str, Any], int]]
    config_history: deque[dict[str, Any]]
    _config_cache: dict[tuple[tuple[str, Any], ...], RiskConfig]
    _restored: dict[int, dict[str, Restored]]
    _pos_topic: str

    if TYPE_CHECKING:

        def next_due(self) -> int | None: ...

        def schedule(self, pos: PositionState, due: int) -> None: ...

        def _fire_timers(self, now_ms: int, res: StepResult, skip: Container[str] = ()) -> None: ...

        def _apply_position(
            self,
            ev: PositionEvent,
            now_ms: int | None,
            affected: dict[str, Trigger],
            res: StepResult,
            rebuilding: bool = False,
        ) -> None: ...

        def _assess(
            self, pos: PositionState, trigger: Trigger, now_ms: int, due_ms: int, res: StepResult
        ) -> None: ...

        def _effective(
            self,
            pid: str,
            asset: str,
            own: dict[str, Any],
            scopes: dict[str, tuple[dict[str, Any], int]],
        ) -> tuple[RiskConfig | None, dict[str, int] | None]: ...
