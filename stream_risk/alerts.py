"""Alerts (DESIGN §10, docs/design.md D9): fire once when a condition starts, once when it
clears, whatever the number of ticks in between.

- `AlertTracker` is pure: the shell tells it, per kind, the conditions true now
  (`sync`) or one condition's state (`observe`); it returns the transitions only.
- `WebhookSender` delivers alerts to `--alert-webhook URL` from its own task: a bounded
  queue (a full queue drops the oldest alert, counted), a POST with a timeout and bounded
  retries. The engine only ever calls `submit`, which never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import aiohttp
import orjson

log = logging.getLogger("stream_risk.alerts")

EXPOSURE_LIMIT: Final = "exposure_limit"
LIQUIDATE: Final = "liquidate"
STALE: Final = "stale_market_data"
DLQ_RATE: Final = "dlq_rate"
KINDS: Final = (EXPOSURE_LIMIT, LIQUIDATE, STALE, DLQ_RATE)

Alert = dict[str, Any]


class AlertTracker:
    """Which conditions are active, and the transitions of each."""

    def __init__(self) -> None:
        #: key -> (kind, details when it fired)
        self.active: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fired = 0
        self.cleared = 0

    def observe(
        self, kind: str, key: str, active: bool, details: Mapping[str, Any], now_ms: int
    ) -> Alert | None:
        """One condition's state now: an alert if it started or cleared, else None."""
        held = self.active.get(key)
        if active and held is None:
            self.active[key] = (kind, dict(details))
            self.fired += 1
            return _alert(key, kind, "fired", details, now_ms)
        if not active and held is not None:
            del self.active[key]
            self.cleared += 1
            return _alert(key, kind, "cleared", {**held[1], **details}, now_ms)
        return None

    def sync(self, kind: str, now: Mapping[str, Mapping[str, Any]], now_ms: int) -> list[Alert]:
        """Every condition of `kind` true now (key -> details): fires the new ones, clears
        the ones of that kind no longer true."""
        out = []
        for key, details in now.items():
            a = self.observe(kind, key, True, details, now_ms)
            if a is not None:
                out.append(a)
        for key in [k for k, (kd, _) in self.active.items() if kd == kind and k not in now]:
            a = self.observe(kind, key, False, {}, now_ms)
            if a is not None:
                out.append(a)
        return out


def _alert(key: str, kind: str, state: str, details: Mapping[str, Any], ts: int) -> Alert:
    return {"key": key, "kind": kind, "state": state, "details": dict(details), "ts": ts}


class WebhookSender:
    """POST each alert (JSON) to `url`, from a task of its own: never blocks the engine.

    timeout_s per attempt; attempts in all (1 + retries), backoff_s doubling between them.
    `on_result(result)` is told "delivered", "failed" (every attempt failed) or "dropped"
    (the queue was full: the oldest alert made room).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 2.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        max_queue: int = 1000,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._queue: deque[Alert] = deque()
        self._max_queue = max_queue
        self._wake = asyncio.Event()
        self._on_result = on_result or (lambda _r: None)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="alert-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def submit(self, alert: Alert) -> None:
        """Queue an alert for delivery; returns at once."""
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            self._on_result("dropped")
        self._queue.append(alert)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                alert = self._queue.popleft()
                await self._deliver(session, alert)

    async def _deliver(self, session: aiohttp.ClientSession, alert: Alert) -> None:
        body = orjson.dumps(alert)
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                async with session.post(
                    self.url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    if resp.status < 300:
                        self.delivered += 1
                        self._on_result("delivered")
                        return
                    why = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        self._on_result("failed")
        log.warning(
            "alert %s (%s) not delivered to the webhook after %d attempts: %s",
            alert.get("key"),
            alert.get("state"),
            self.attempts,
            why,
        )


__all__ = ["KINDS", "Alert", "AlertTracker", "WebhookSender"]
