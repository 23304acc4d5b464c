"""The options of a demo run and of the simulator alone (`DemoOptions`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class DemoOptions:
    duration: float | None = None  # seconds; None = until Ctrl-C
    assets: int = 5
    positions: int = 20
    seed: int | None = None
    tick_interval: float = 0.25  # seconds between market steps
    time_scale: float = 300.0  # simulated seconds per wall second (market dynamics only)
    outages_per_min: float = 0.25  # per asset: feed gaps, so stale data shows
    plain: bool | None = None  # None: plain lines unless stdout is a terminal
    workdir: Path | None = None  # logs; default: a fresh temporary directory
