"""The HTTP sidecar: health, readiness, metrics, stateless `/assess`, `/positions` (DESIGN §5)."""

from stream_risk.metrics import Metrics
from stream_risk.sidecar.app import (
    DEFAULT_MAX_BODY_BYTES,
    METRICS_KEY,
    STATE_KEY,
    create_app,
)
from stream_risk.state import SidecarState, StatelessState

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "METRICS_KEY",
    "STATE_KEY",
    "Metrics",
    "SidecarState",
    "StatelessState",
    "create_app",
]
