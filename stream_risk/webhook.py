"""Alert delivery to `--alert-webhook URL` (the shell side of alerts; the rules are in
`stream_risk.alerting`).

`WebhookSender` delivers alerts from its own task: a bounded queue (a full queue drops the
oldest alert, counted), a POST with a timeout and bounded retries. The engine only ever
calls `submit`, which never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

import aiohttp
import orjson

from stream_risk.alerting import Alert

log = logging.getLogger("stream_risk.alerts")


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


__all__ = ["WebhookSender"]
