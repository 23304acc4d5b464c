"""The simulated market and book published to Kafka: `Feeder`, the demo's and the simulator's
source of `market-ticks` and `positions` (the models are `market.py` and `book.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_risk.demo.book import BookSimulator
from stream_risk.demo.market import MarketSimulator
from stream_risk.demo.options import DemoOptions
from stream_risk.demo.stopping import wait_stop
from stream_risk.settings import Settings

log = logging.getLogger("stream_risk.demo")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Feeder:
    """The simulated market and book, published to Kafka."""

    def __init__(
        self,
        bootstrap: str,
        settings: Settings,
        opts: DemoOptions,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.ticks_topic = settings.topic_market_ticks
        self.positions_topic = settings.topic_positions
        self.opts = opts
        seed = opts.seed
        self.market = MarketSimulator(
            opts.assets,
            seed=seed,
            time_scale=opts.time_scale,
            outages_per_min=opts.outages_per_min,
        )
        self.book = BookSimulator(
            self.market.symbols,
            self.market.price,
            target_positions=opts.positions,
            seed=None if seed is None else seed + 1,
        )
        self.client_kwargs = client_kwargs or {}
        self.producer: AIOKafkaProducer | None = None
        self.ticks_sent = 0
        self.position_updates = 0
        self.closes = 0
        self.opening_prices: dict[str, float] = {}

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id="stream-risk-demo-feed",
            acks="all",
            linger_ms=5,
            **self.client_kwargs,
        )
        await self.producer.start()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.flush()
            with contextlib.suppress(KafkaError):
                await producer.stop()

    async def open(self) -> None:
        """The opening prints of every asset and the opening book, acknowledged."""
        now = wall_ms()
        ticks = self.market.snapshot_ticks(now)
        self.opening_prices = {t["asset"]: t["current_price"] for t in ticks}
        await self._send(ticks, self.book.open_book(now))

    async def run(self, stop: asyncio.Event) -> None:
        """Publish the flow until `stop` is set."""
        interval = self.opts.tick_interval
        last = time.monotonic()
        while not stop.is_set():
            await wait_stop(stop, interval)
            if stop.is_set():
                break
            t = time.monotonic()
            dt, last = t - last, t
            now = wall_ms()
            try:
                await self._send(self.market.step(now, dt), self.book.step(now, dt))
            except KafkaError as exc:  # the broker is ours: only at shutdown, in practice
                log.warning("feed: publishing failed: %s", exc)

    async def _send(self, ticks: list[dict[str, Any]], book: list[Any]) -> None:
        producer = self.producer
        assert producer is not None
        futures = []
        for tick in ticks:
            futures.append(
                await producer.send(
                    self.ticks_topic, key=tick["asset"].encode(), value=orjson.dumps(tick)
                )
            )
        for ev in book:
            value = None if ev.value is None else orjson.dumps(ev.value)
            futures.append(
                await producer.send(self.positions_topic, key=ev.key.encode(), value=value)
            )
            if ev.value is None:
                self.closes += 1
            else:
                self.position_updates += 1
        if futures:
            await asyncio.gather(*futures)
        self.ticks_sent += len(ticks)
