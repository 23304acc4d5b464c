"""What the sidecar asks of the process it runs beside (DESIGN §5).

The sidecar never reaches into the engine: it asks a `SidecarState` whether the process is
ready and, for `GET /positions`, what the current table holds. The engine subclasses
`SidecarState`; `stream-risk serve` (no broker) uses `StatelessState`.

`GET /positions` contract, the same in both modes so a dashboard needs no special case::

    200 {"mode": "engine" | "stateless", "count": N, "positions": [...],
         "exposure": {asset: {...}}}          # see stream_risk.sidecar.exposure

In stateless mode there is no table, so the answer is 200 with an empty list and
`"mode": "stateless"` (not a 404): a dashboard pointed at a serve-only sidecar sees an
empty book and, from `mode`, why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar


class SidecarState(ABC):
    """The sidecar's view of its process. Subclass it; only `is_ready` is required.

    Every method is called on the event loop, per request: keep them cheap and never block.
    """

    #: Reported by `GET /positions` (and `GET /readyz`): "engine" or "stateless".
    mode: ClassVar[str] = "engine"

    @abstractmethod
    def is_ready(self) -> tuple[bool, list[str]]:
        """(ready, reasons it is not). `GET /readyz` answers 200 when ready, else 503.

        Reasons are short sentences an operator reads, e.g. "positions partition 3 still
        rebuilding" or "broker unreachable: localhost:9092". Empty when ready.
        """

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        """The current table, one JSON-ready dict per position with its latest action;
        only positions in `asset` when given. The default has no table: an empty list."""
        return []

    def risk_config(self) -> dict[str, Any] | None:
        """`GET /config`: the risk config in force per scope and its history of changes
        (docs/design.md D9). None: this process has no live config (stateless)."""
        return None

    def exposure_view(self) -> dict[str, Any] | None:
        """`GET /exposure`: exposure per asset and for the book, limits and breaches.
        None: the sidecar derives what it can from `positions()`."""
        return None


class StatelessState(SidecarState):
    """`stream-risk serve`: no broker, no table. Always ready; `/positions` is empty."""

    mode: ClassVar[str] = "stateless"

    def is_ready(self) -> tuple[bool, list[str]]:
        return True, []
