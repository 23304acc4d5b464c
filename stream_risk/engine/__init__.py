"""The pure core of the stream processor: table, timers, conflation, emission. No I/O."""

from stream_risk.engine.core import Engine, EngineConfig, Stats
from stream_risk.engine.events import (
    ConfigEvent,
    Event,
    Lineage,
    Output,
    PositionEvent,
    PositionFields,
    Rejected,
    StepResult,
    TickEvent,
)
from stream_risk.engine.views import PositionQuery, PositionsPage

__all__ = [
    "ConfigEvent",
    "Engine",
    "EngineConfig",
    "Event",
    "Lineage",
    "Output",
    "PositionEvent",
    "PositionFields",
    "PositionQuery",
    "PositionsPage",
    "Rejected",
    "Stats",
    "StepResult",
    "TickEvent",
]
