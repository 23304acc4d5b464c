"""The options of a demo run and of the simulator alone (`DemoOptions`)."""

from __future__ import annotations

import argparse
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

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, plain: bool | None) -> DemoOptions:
        """From the flags `stream-risk demo` and the simulator share: `--duration`,
        `--assets`, `--positions`, `--seed`, `--tick-interval`."""
        return cls(
            duration=args.duration,
            assets=args.assets,
            positions=args.positions,
            seed=args.seed,
            tick_interval=args.tick_interval,
            plain=plain,
        )
