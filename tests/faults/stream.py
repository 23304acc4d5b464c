"""A synthetic, seeded market and book for the fault tests, recorded in a `Book` as it is
produced so the test knows what every position's latest action must be."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import orjson

from .support import Book, MarketView, PositionView, Producer, Topics, now_ms


@dataclass
class StreamShape:
    positions: int
    assets: int
    ticks: int
    chunk: int = 1000  # ticks per produce call
    pause_s: float = 0.05  # between chunks (paces the stream)
    updates_every: int = 500  # a position update (resize, or a close) every N ticks
    seed: int = 8


class SyntheticStream:
    def __init__(self, shape: StreamShape, topics: Topics, book: Book | None = None) -> None:
        self.shape = shape
        self.topics = topics
        self.book = book or Book()
        self.rng = random.Random(shape.seed)
        self.assets = [f"X{j:03d}" for j in range(shape.assets)]
        self.pids = [f"pos-{i:05d}" for i in range(shape.positions)]
        self.ticks_sent = 0
        self.updates_sent = 0
        self.closes_sent = 0
        self._last_ts: dict[str, int] = {}

    def _ts(self, key: str) -> int:
        ts = max(self._last_ts.get(key, 0) + 1, now_ms())
        self._last_ts[key] = ts
        return ts

    # -------------------------------------------------------------- records
    def initial_ticks(self) -> list[tuple[bytes, bytes]]:
        out = []
        for j, a in enumerate(self.assets):
            tick = {
                "asset": a,
                "ts": self._ts(a),
                "current_price": round(50.0 + 37.0 * j, 4),
                "volatility_1d": round(0.01 + 0.1 * self.rng.random(), 5),
                "spot_spread_bps": round(0.5 + 6 * self.rng.random(), 3),
                "perp_funding_rate": round(self.rng.uniform(-0.1, 0.1), 4),
                "bid_depth_usd": float(self.rng.choice([2e5, 5e5, 1e6, 3e6])),
                "ask_depth_usd": float(self.rng.choice([2e5, 5e5, 1e6, 3e6])),
            }
            self.book.markets.setdefault(a, MarketView()).apply(tick)
            out.append((a.encode(), orjson.dumps(tick)))
        return out

    def _position(self, pid: str) -> tuple[bytes, bytes]:
        asset = self.rng.choice(self.assets)
        price = self.book.markets[asset].price
        # Notional from 1k to ~3M USD: the liquidity component spans its range.
        notional = math.exp(self.rng.uniform(math.log(1e3), math.log(3e6)))
        size = round(notional / price * self.rng.choice([1, -1]), 6) or 1.0
        view = PositionView(
            asset,
            size,
            round(price * self.rng.uniform(0.9, 1.1), 4),
            self._ts(pid),
            round(self.rng.uniform(0, 600), 2),
        )
        self.book.positions[pid] = view
        return pid.encode(), orjson.dumps(view.body(pid))

    def initial_positions(self) -> list[tuple[bytes, bytes]]:
        return [self._position(pid) for pid in self.pids]

    def _tick(self) -> tuple[bytes, bytes]:
        a = self.rng.choice(self.assets)
        m = self.book.markets[a]
        tick: dict[str, Any] = {
            "asset": a,
            "ts": self._ts(a),
            "current_price": round(m.price * math.exp(self.rng.gauss(0, 0.01)), 6),
        }
        r = self.rng.random()
        if r < 0.05:
            tick["volatility_1d"] = round(0.005 + 0.11 * self.rng.random(), 5)
        elif r < 0.07:
            tick["bid_depth_usd"] = float(self.rng.choice([1e5, 5e5, 2e6]))
            tick["ask_depth_usd"] = float(self.rng.choice([1e5, 5e5, 2e6]))
        elif r < 0.08:
            tick["perp_funding_rate"] = round(self.rng.uniform(-0.1, 0.1), 4)
        m.apply(tick)
        return a.encode(), orjson.dumps(tick)

    def _update(self) -> tuple[bytes, bytes | None]:
        pid = self.rng.choice(self.pids)
        if self.book.positions.get(pid) is not None and self.rng.random() < 0.2:
            self.book.positions[pid] = None
            self.closes_sent += 1
            return pid.encode(), None
        self.updates_sent += 1
        return self._position(pid)

    # -------------------------------------------------------------- producing
    async def open_book(self, producer: Producer) -> None:
        await producer.send_many(self.topics.ticks, self.initial_ticks())
        metas = await producer.send_many(self.topics.positions, self.initial_positions())
        for pid, md in zip(self.pids, metas, strict=True):
            self.book.partition_of[pid] = md.partition

    async def produce_ticks(self, producer: Producer, n: int) -> None:
        """`n` more ticks (and the position updates that come with them), paced."""
        import asyncio

        shape = self.shape
        left = n
        while left > 0:
            k = min(shape.chunk, left)
            ticks = []
            updates = []
            for _ in range(k):
                ticks.append(self._tick())
                self.ticks_sent += 1
                if self.ticks_sent % shape.updates_every == 0:
                    updates.append(self._update())
            await producer.send_many(self.topics.ticks, ticks)
            if updates:
                await producer.send_many(self.topics.positions, updates)
            left -= k
            if shape.pause_s:
                await asyncio.sleep(shape.pause_s)
