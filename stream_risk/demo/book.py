"""A simulated market-maker book for the demo: records for the `positions` topic (DESIGN §2).

Deterministic for a seed, like `MarketSimulator`. A market maker's inventory is the residue
of client flow: positions are opened by fills, resized by further fills (adding at a new
price moves the entry to the volume-weighted average; trading through zero opens the other
side at the fill price), and closed (a tombstone: the key with a null value) when flattened.

The opening book is inventory carried from earlier in the session (ages up to ~8 hours), so
the age component of the risk score shows from the first second; positions opened during
the demo start at age zero (ages are real time: `opened_at` is epoch ms).

Each position's notional is drawn log-uniformly (20k .. 3M USD by default), so some are
large against their asset's book depth and the liquidity component shows too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

EventKind = Literal["open", "resize", "close"]

_MINUTE_MS: Final = 60_000


@dataclass(slots=True)
class Position:
    position_id: str
    asset: str
    size: float
    entry_price: float
    opened_at: int

    def message(self, ts: int) -> dict[str, Any]:
        """The `positions` record value."""
        return {
            "position_id": self.position_id,
            "asset": self.asset,
            "size": self.size,
            "entry_price": self.entry_price,
            "opened_at": self.opened_at,
            "ts": ts,
        }


@dataclass(frozen=True, slots=True)
class BookEvent:
    """One record for `positions`: key = position_id, value = the position or None (closed)."""

    kind: EventKind
    position_id: str
    asset: str
    value: dict[str, Any] | None

    @property
    def key(self) -> str:
        return self.position_id


class BookSimulator:
    """The inventory of one market maker across several assets.

    Args:
        assets: asset symbols (with a price source, usually `MarketSimulator.price`).
        price: current price of an asset (the fill price before slippage).
        target_positions: the book hovers around this many open positions.
        seed: the random seed (None: not reproducible).
        events_per_position_per_min: how active the flow is (wall minutes).
        min_notional_usd, max_notional_usd: range of a position's notional (log-uniform).
        max_age_min: the oldest opening inventory, minutes.
    """

    def __init__(
        self,
        assets: list[str],
        price: Callable[[str], float],
        *,
        target_positions: int = 20,
        seed: int | None = None,
        events_per_position_per_min: float = 3.0,
        min_notional_usd: float = 20_000.0,
        max_notional_usd: float = 3_000_000.0,
        max_age_min: float = 480.0,
    ) -> None:
        if not assets:
            raise ValueError("at least one asset is needed")
        if target_positions < 1:
            raise ValueError("target_positions must be >= 1")
        if not 0 < min_notional_usd <= max_notional_usd:
            raise ValueError("need 0 < min_notional_usd <= max_notional_usd")
        self.rng = random.Random(seed)
        self.assets = list(assets)
        self.price = price
        self.target = target_positions
        self.rate = events_per_position_per_min
        self.min_notional = min_notional_usd
        self.max_notional = max_notional_usd
        self.max_age_min = max_age_min
        self.positions: dict[str, Position] = {}
        self._serial: dict[str, int] = dict.fromkeys(self.assets, 0)
        self.counts: dict[EventKind, int] = {"open": 0, "resize": 0, "close": 0}
        self._carry = 0.0  # fractional events owed from earlier steps

    # ------------------------------------------------------------------ events
    def open_book(self, now_ms: int) -> list[BookEvent]:
        """The opening inventory: `target_positions` positions of various ages."""
        out = []
        for i in range(self.target):
            # Round-robin first, so every asset holds at least one position when possible.
            asset = self.assets[i % len(self.assets)] if i < len(self.assets) else self._asset()
            age_min = self.rng.uniform(2.0, self.max_age_min)
            out.append(self._open(asset, now_ms, opened_at=now_ms - int(age_min * _MINUTE_MS)))
        return out

    def step(self, now_ms: int, dt_s: float) -> list[BookEvent]:
        """Flow over `dt_s` wall seconds: a Poisson number of fills and closes."""
        if dt_s < 0:
            raise ValueError("dt_s must be >= 0")
        expected = self.rate * max(1, len(self.positions)) * dt_s / 60.0 + self._carry
        n = int(expected)
        self._carry = expected - n
        out: list[BookEvent] = []
        for _ in range(n):
            out.append(self._event(now_ms))
        return out

    def _event(self, now_ms: int) -> BookEvent:
        rng = self.rng
        count = len(self.positions)
        # Keep the book near its target size: open more when small, close more when big.
        p_open = 0.12 + 0.5 * max(0.0, (self.target - count) / self.target)
        p_close = 0.08 + 0.5 * max(0.0, (count - self.target) / self.target)
        r = rng.random()
        if count == 0 or r < p_open:
            return self._open(self._asset(), now_ms)
        pid = rng.choice(sorted(self.positions))
        if r < p_open + p_close:
            return self._close(pid)
        return self._fill(pid, now_ms)

    def _asset(self) -> str:
        # The majors see more flow: weight by position in the list (BTC first).
        weights = [1.0 / math.sqrt(i + 1) for i in range(len(self.assets))]
        return self.rng.choices(self.assets, weights)[0]

    def _open(self, asset: str, now_ms: int, opened_at: int | None = None) -> BookEvent:
        rng = self.rng
        self._serial[asset] += 1
        pid = f"{asset}-{self._serial[asset]:03d}"
        price = self.price(asset)
        notional = math.exp(rng.uniform(math.log(self.min_notional), math.log(self.max_notional)))
        side = 1.0 if rng.random() < 0.5 else -1.0
        size = side * _round_size(notional / price)
        entry = _round_price(price * (1.0 + rng.gauss(0.0, 0.002)))
        pos = Position(pid, asset, size, entry, now_ms if opened_at is None else opened_at)
        self.positions[pid] = pos
        self.counts["open"] += 1
        return BookEvent("open", pid, asset, pos.message(now_ms))

    def _fill(self, pid: str, now_ms: int) -> BookEvent:
        rng = self.rng
        pos = self.positions[pid]
        price = _round_price(self.price(pos.asset) * (1.0 + rng.gauss(0.0, 0.0005)))
        # Mostly small fills either way; occasionally a block that flips the position.
        # Adds and cuts are symmetric in log-size (x(1+f) or /(1+f)), so sizes do not drift.
        if rng.random() < 0.93:
            f = rng.uniform(0.05, 0.6)
            frac = f if rng.random() < 0.5 else -f / (1.0 + f)
        else:
            frac = -rng.uniform(1.1, 1.8)
        delta = pos.size * frac
        delta = math.copysign(_round_size(abs(delta)), delta)
        new_size = _round_size_signed(pos.size + delta)
        if new_size == 0.0:
            return self._close(pid)
        if (new_size > 0) != (pos.size > 0):  # traded through zero: a new position
            pos.entry_price = price
            pos.opened_at = now_ms
        elif abs(new_size) > abs(pos.size):  # added: the entry moves to the VWAP
            pos.entry_price = _round_price(
                (pos.entry_price * abs(pos.size) + price * abs(delta)) / abs(new_size)
            )
        pos.size = new_size
        self.counts["resize"] += 1
        return BookEvent("resize", pid, pos.asset, pos.message(now_ms))

    def _close(self, pid: str) -> BookEvent:
        pos = self.positions.pop(pid)
        self.counts["close"] += 1
        return BookEvent("close", pid, pos.asset, None)


def _round_size(units: float) -> float:
    """A size with 4 significant digits (never zero for a positive input)."""
    if units <= 0:
        return 0.0
    digits = 3 - math.floor(math.log10(units))
    rounded = round(units, digits)
    return rounded if rounded > 0 else units


def _round_size_signed(units: float) -> float:
    if abs(units) < 1e-12:
        return 0.0
    return math.copysign(_round_size(abs(units)), units)


def _round_price(price: float) -> float:
    digits = 5 - math.floor(math.log10(price))
    rounded = round(price, max(0, digits))
    return rounded if rounded > 0 else price


__all__ = ["BookEvent", "BookSimulator", "EventKind", "Position"]
