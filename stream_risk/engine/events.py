"""What flows into and out of the pure core. Plain slotted classes, no I/O.

The input records (`Lineage`, `PositionEvent`, `TickEvent`) are named tuples: immutable
and hashable like the frozen dataclasses they replace, and about twice as cheap to build
(the shell builds one of each per consumed record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from stream_risk.models import MarketTick, PositionMessage

Trigger = Literal["position", "tick", "timer", "config"]


class Lineage(NamedTuple):
    """Where an input record came from (topic, partition, offset); -1 when not from Kafka."""

    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp_ms: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


NO_LINEAGE = Lineage()


class PositionEvent(NamedTuple):
    """A `positions` record. `message` None closes the position (a tombstone).

    `ts_fallback` is the record's own timestamp, used when the message carries no `ts`.
    """

    position_id: str
    message: PositionMessage | None
    ts_fallback: int = 0
    lineage: Lineage = NO_LINEAGE


class PositionFields(NamedTuple):
    """A `positions` record's fields as `PositionMessage` validates them, of a record
    without a `config` of its own: what the codec's fast decode makes of the common record
    for `Engine.load_rows` (a tuple is several times cheaper to build than the model)."""

    position_id: str | None
    asset: str
    size: float
    entry_price: float
    ts: int | None
    opened_at: int | None
    age_minutes: float | None
    unrealized_pnl: float | None

    def message(self) -> PositionMessage:
        """The same fields as a `PositionMessage` (for the rules that take the model)."""
        return PositionMessage.model_construct(
            position_id=self.position_id,
            asset=self.asset,
            size=self.size,
            entry_price=self.entry_price,
            ts=self.ts,
            opened_at=self.opened_at,
            age_minutes=self.age_minutes,
            unrealized_pnl=self.unrealized_pnl,
        )


class TickEvent(NamedTuple):
    """A `market-ticks` record."""

    tick: MarketTick
    lineage: Lineage = NO_LINEAGE


class ConfigEvent(NamedTuple):
    """A `risk-config` record: `scope` is `global`, `asset:<ASSET>` or `position:<ID>`;
    `patch` the fields it sets (validated by the codec), None removes the scope's override.
    `changed_by` is the record's `changed-by` header, if any."""

    scope: str
    patch: dict[str, Any] | None
    lineage: Lineage = NO_LINEAGE
    changed_by: str | None = None


Event = PositionEvent | TickEvent | ConfigEvent


@dataclass(slots=True)
class Output:
    """One record for `risk-actions`: an action, or a tombstone when `value` is None.

    `data` is the record; the typed fields after it are what the shells need (metrics,
    alert rules, latency) so that none reads `value` back. `value` is the same record as a
    dict, for replay and the tests."""

    position_id: str
    value: dict[str, Any] | None
    #: Lineage of the tick the action used (for latency: its record timestamp), if any.
    tick_lineage: Lineage = NO_LINEAGE
    #: `value` serialised (orjson), ready to publish; None for a tombstone.
    data: bytes | None = None
    #: The `positions` partition the position lives in (actions are co-partitioned).
    partition: int = -1
    #: The action (`LIQUIDATE`, ...); None for a tombstone.
    action: str | None = None
    asset: str = ""
    risk_score: float = 0.0
    reason_code: str = ""
    #: What made the assessment (`Trigger`); "" for a tombstone.
    trigger: str = ""


@dataclass(slots=True)
class Rejected:
    """An input the core refused (it is valid JSON but cannot be applied); goes to the DLQ."""

    reason: str
    lineage: Lineage


@dataclass(slots=True)
class StepResult:
    """What one call into the core produced."""

    outputs: list[Output] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    assessments: int = 0
