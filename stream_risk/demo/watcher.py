"""A downstream consumer of `risk-actions` (what a hedging bot would be): `ActionWatcher` keeps
the latest action per position, counts and a ticker of `ActionEvent`s for the views."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

log = logging.getLogger("stream_risk.demo")


@dataclass
class ActionEvent:
    """One record read from `risk-actions`, with what the position showed before."""

    position_id: str
    action: dict[str, Any] | None  # None: a tombstone (the position closed)
    prev: dict[str, Any] | None
    received_at: float  # monotonic


@dataclass
class ActionWatcher:
    """A downstream consumer of `risk-actions`: the latest action per position."""

    bootstrap: str
    topic: str
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    ticker: deque[ActionEvent] = field(default_factory=lambda: deque(maxlen=200))
    counts: Counter[str] = field(default_factory=Counter)
    received: int = 0
    first_at: float | None = None  # monotonic time of the first action
    on_event: Callable[[ActionEvent], None] | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            client_id="stream-risk-demo-view",
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **self.client_kwargs,
        )
        await self._consumer.start()

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not stop.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            except KafkaError as exc:
                log.warning("view: fetching actions failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            records = sorted(
                (r for recs in batch.values() for r in recs), key=lambda r: r.timestamp
            )
            for rec in records:
                self._apply(rec.key, rec.value)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        pid = key.decode(errors="replace")
        prev = self.latest.get(pid)
        if value is None:
            if prev is None:
                return
            del self.latest[pid]
            action = None
            self.counts["CLOSED"] += 1
        else:
            try:
                action = orjson.loads(value)
            except orjson.JSONDecodeError:
                return
            if not isinstance(action, dict):
                return
            self.latest[pid] = action
            self.counts[str(action.get("action"))] += 1
            self.received += 1
            if self.first_at is None:
                self.first_at = time.monotonic()
        ev = ActionEvent(pid, action, prev, time.monotonic())
        self.ticker.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError):
                await consumer.stop()
