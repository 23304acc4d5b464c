"""The dashboard's live feed: `DashboardHub`, one per app, which polls the state for the open
pages and fans the same SSE frames out to each (the routes: `stream_risk.sidecar.dashboard`).

How updates are found, in bounded work whatever the table's size (docs/design.md D14): one
`DashboardHub` per app polls every `interval` seconds (0.5 s; longer when a poll is slow,
so that polling takes at most a fifth of the event loop) while at least one page is
connected (never otherwise). A poll reads the status, the count and the exposure from the
state's own sums (O(assets)), and *sweeps* the table: the next `SWEEP_ROWS` rows in
position-id order (`positions_page`), wrapping around at the end. A row whose latest
`assessed_at` changed since the sweep last passed it is a new action; an id the sweep
passed before and no longer finds is a closed position. A table of up to `SWEEP_ROWS`
positions is swept whole at every poll (every action seen, as before); a bigger one is
swept a slice per poll (1,000,000 positions: a lap in ≈ 80 min), so its feed is a sample,
and the hub remembers at most `MAX_TRACKED` positions (what their last action was). The
first lap seeds `recent` with the table's latest actions (history, not news). Actions
published for one position within one lap are conflated (the latest is shown), as the
table is. Every page gets the same frames, encoded once. A page that cannot keep up (256
frames queued) is disconnected; its `EventSource` reconnects and starts again from a
snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Generator, Mapping
from typing import Any, Final

import orjson
from aiohttp import web
from sortedcontainers import SortedDict

from stream_risk.engine.views import PositionQuery, PositionsPage
from stream_risk.rules import ACTIONS
from stream_risk.sidecar.exposure import Exposure, exposure_from_view, state_exposure
from stream_risk.state import SidecarState

log = logging.getLogger("stream_risk.sidecar.dashboard")

#: How many recent actions a new page gets for its feed.
RECENT_ACTIONS: Final = 60
#: How many of the latest alerts (fired / cleared) the page shows.
RECENT_ALERTS: Final = 5
#: Frames queued for one page before it is disconnected as too slow.
MAX_QUEUED_FRAMES: Final = 256
#: The pause between polls is at least this many times the last poll's duration.
MAX_LOOP_SHARE_FACTOR: Final = 4.0
#: Rows one poll sweeps (≈ 1-2 ms of formatting at 1M positions): a table this small is
#: seen whole at each poll.
SWEEP_ROWS: Final = 100
#: Positions whose last action the hub remembers (beyond it, the feed is a sample).
MAX_TRACKED: Final = 20_000


def frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One SSE frame. orjson never emits a raw newline, so the data is a single line."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"data: " + orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS) + b"\n\n"


def action_summary(
    row: Mapping[str, Any], prev: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The feed entry for a row's latest action (None when it has none yet)."""
    a = row.get("latest_action")
    if not isinstance(a, Mapping):
        return None
    hedge = a.get("suggested_hedge")
    out: dict[str, Any] = {
        "position_id": row.get("position_id"),
        "asset": row.get("asset"),
        "action": a.get("action"),
        "risk_score": a.get("risk_score"),
        "hedge_pct": a.get("hedge_pct"),
        "trigger": a.get("trigger"),
        "reason_code": a.get("reason_code"),
        "stale_market_data": a.get("stale_market_data"),
        "assessed_at": a.get("assessed_at"),
        "event_ts": a.get("event_ts"),
        "instrument": hedge.get("instrument") if isinstance(hedge, Mapping) else None,
        "hedge_size": hedge.get("size") if isinstance(hedge, Mapping) else None,
        "hedge_cost_bps": hedge.get("total_cost_bps") if isinstance(hedge, Mapping) else None,
        "prev_action": None,
        "prev_score": None,
    }
    if prev is not None:
        out["prev_action"] = prev.get("action")
        out["prev_score"] = prev.get("risk_score")
    return out


def _signature(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a row worth re-sending (a new tick alone is not: the action carries it)."""
    a = row.get("latest_action")
    stamp = (a.get("assessed_at"), a.get("event_ts")) if isinstance(a, Mapping) else None
    return (
        row.get("size"),
        row.get("entry_price"),
        row.get("position_ts"),
        row.get("next_evaluation_ts"),
        tuple(row.get("waiting_for") or ()),
        repr(row.get("waiting")),  # the warm-up's progress (n of 20 returns)
        stamp,
    )


def _stamp(row: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """What identifies an action: when it was made, and as of which event time."""
    a = row.get("latest_action")
    return (a.get("assessed_at"), a.get("event_ts")) if isinstance(a, Mapping) else None


def _advance(steps: Generator[None, None, list[bytes]]) -> list[bytes] | None:
    """One step of a poll: its frames when it is over, else None."""
    try:
        next(steps)
    except StopIteration as done:
        frames: list[bytes] = done.value
        return frames
    return None


class DashboardHub:
    """Polls the state for the open pages and fans the frames out to each of them."""

    def __init__(self, state: SidecarState, interval: float = 0.5) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.state = state
        self.interval = interval
        self._subs: set[asyncio.Queue[bytes | None]] = set()
        #: position id -> (row signature, stamp, action, score, asset) when the sweep last
        #: passed it; sorted, so a slice of the sweep finds the ids it passed before.
        self._tracked: SortedDict = SortedDict()
        #: Where the sweep goes on from (None: the start of the table).
        self._sweep_after: str | None = None
        self._exposure: Exposure = {}
        self._desk_view: dict[str, Any] | None = None
        self._status: dict[str, Any] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ACTIONS)
        self._primed = False
        #: The first lap's latest actions, until it ends (then the feed's history).
        self._history: list[dict[str, Any]] = []
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.polls = 0
        self.frames_sent = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # ------------------------------------------------------------------ subscribers
    def subscribe(self) -> asyncio.Queue[bytes | None]:
        """A queue of frames for one page, starting with a snapshot."""
        q: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_QUEUED_FRAMES)
        if self._closed:
            q.put_nowait(None)
            return q
        if not self._subs:
            self._poll()  # the table may have moved on while nobody watched: no diff frames
        q.put_nowait(self._snapshot_frame())
        self._subs.add(q)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="dashboard-hub")
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes | None]) -> None:
        self._subs.discard(q)

    async def close(self, app: web.Application | None = None) -> None:
        """End every stream (on app shutdown, so it is not held up by open pages)."""
        self._closed = True
        for q in list(self._subs):
            self._drop(q)
        self._subs.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def _drop(self, q: asyncio.Queue[bytes | None]) -> None:
        """Tell a page's handler to end its stream (even if its queue is full)."""
        self._subs.discard(q)
        while True:
            try:
                q.put_nowait(None)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()

    def _broadcast(self, frames: list[bytes]) -> None:
        if not frames:
            return
        data = b"".join(frames)
        for q in list(self._subs):
            try:
                q.put_nowait(data)
                self.frames_sent += 1
            except asyncio.QueueFull:
                log.info("dashboard page too slow (%d frames queued): disconnected", q.qsize())
                self._drop(q)

    # ------------------------------------------------------------------ polling
    async def _loop(self) -> None:
        took = 0.0
        try:
            while self._subs and not self._closed:
                # A big table makes a poll slow: wait longer, so the dashboard never takes
                # more than a fifth of the event loop from the engine.
                await asyncio.sleep(max(self.interval, MAX_LOOP_SHARE_FACTOR * took))
                if not self._subs:
                    break
                t0 = time.perf_counter()
                frames = await self._poll_yielding()
                took = time.perf_counter() - t0
                self._broadcast(frames)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let a bug leave pages hanging without a word
            log.exception("dashboard hub failed")
            for q in list(self._subs):
                self._drop(q)

    def _poll(self) -> list[bytes]:
        """One poll at once (`subscribe`, tests): see `_polling`."""
        steps = self._polling()
        while (frames := _advance(steps)) is None:
            pass
        return frames

    async def _poll_yielding(self) -> list[bytes]:
        """One poll, the event loop free between its reads (each a few ms at most)."""
        steps = self._polling()
        while (frames := _advance(steps)) is None:
            await asyncio.sleep(0)
        return frames

    def _polling(self) -> Generator[None, None, list[bytes]]:
        """Read the state (the next slice of the sweep, the status, the exposure), update
        the hub's memory, return the frames describing the change. Yields between its
        steps: the caller may give the loop back there."""
        self.polls += 1
        lo = self._sweep_after
        try:
            page = self.state.positions_page(
                PositionQuery(after=lo, limit=SWEEP_ROWS, budget=SWEEP_ROWS)
            )
            yield
            count = self.state.count()
            ready, reasons = self.state.is_ready()
            view = self.state.exposure_view()
            yield
            exposure = state_exposure(self.state) if view is None else exposure_from_view(view)
            desk = self._desk(view)
            yield
        except Exception as exc:
            log.exception("dashboard: reading the state failed")
            page = PositionsPage(next_after=lo)  # the sweep stays where it was
            count = int(self._status.get("positions", 0))
            exposure, desk = self._exposure, self._desk_view
            ready, reasons = False, [f"reading the table failed: {type(exc).__name__}: {exc}"]
        status = {
            "mode": self.state.mode,
            "ready": ready,
            "reasons": list(reasons),
            "positions": count,
        }
        hi = page.next_after  # this slice is (lo, hi]; None: to the end
        tracked = self._tracked
        upserts: list[dict[str, Any]] = []
        actions: list[dict[str, Any]] = []
        seen: set[str] = set()
        for row in page.rows:
            pid = str(row.get("position_id"))
            seen.add(pid)
            old = tracked.get(pid)
            if old is None and len(tracked) >= MAX_TRACKED:
                continue  # not followed: the feed of a very big table is a sample
            sig = _signature(row)
            if old is not None and old[0] == sig:
                continue
            upserts.append(row)
            stamp = _stamp(row)
            act = score = None
            if old is not None:
                act, score = old[2], old[3]
            if stamp is not None and (old is None or old[1] != stamp):
                prev = (
                    None if old is None or old[1] is None else {"action": act, "risk_score": score}
                )
                summary = action_summary(row, prev)
                if summary is not None:
                    actions.append(summary)
                    act, score = summary["action"], summary["risk_score"]
            tracked[pid] = (sig, stamp, act, score, row.get("asset"))
        now_ms = time.time_ns() // 1_000_000
        passed = tracked.irange(minimum=lo, maximum=hi, inclusive=(False, True))
        removed = [pid for pid in passed if pid not in seen]
        for pid in removed:
            old = tracked.pop(pid)
            actions.append(
                {
                    "position_id": pid,
                    "asset": old[4],
                    "closed": True,
                    "prev_action": old[2],
                    "prev_score": old[3],
                    "assessed_at": now_ms,
                }
            )
        self._sweep_after = hi
        if not self._primed:
            # The first lap of the table: its latest actions seed the feed, oldest first;
            # they are history, not news, so no `action` frames for them.
            history = self._history
            history.extend(actions)
            if hi is None or len(history) > 4 * RECENT_ACTIONS:
                history.sort(key=lambda s: s.get("assessed_at") or 0)
                del history[:-RECENT_ACTIONS]
            if hi is None:
                self._primed = True
                self._recent.extend(history)
                history.clear()
            actions = []
        else:
            actions.sort(key=lambda s: s.get("assessed_at") or 0)
            self._recent.extend(actions)
        changed = bool(
            upserts
            or removed
            or status != self._status
            or exposure != self._exposure
            or desk != self._desk_view
        )
        self._status, self._exposure, self._desk_view = status, exposure, desk
        if not changed:
            return []
        self._seq += 1
        frames = [
            frame(
                "update",
                {
                    "upserts": upserts,
                    "removed": removed,
                    "exposure": exposure,
                    "desk": desk,
                    "status": status,
                    "server_ts": now_ms,
                },
                self._seq,
            )
        ]
        frames.extend(frame("action", a) for a in actions)
        return frames

    @staticmethod
    def _desk(view: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Limits in force, their breaches and the active alerts (docs/design.md D9);
        whose positions the exposure sums (`scope`: "book" | "instance", D17) and, when the
        state says, how many of the positions partitions this instance holds."""
        if view is None:
            return None
        return {
            "scope": view.get("scope", "instance"),
            "partitions": view.get("partitions"),
            "book": view.get("book"),
            "limits": view.get("limits", {}),
            "breaches": view.get("breaches", []),
            "alerts_active": view.get("alerts_active", []),
            # The latest transitions (fired / cleared), newest last, for the page's lines.
            "alerts_recent": list(view.get("alerts_recent") or [])[-RECENT_ALERTS:],
        }

    def _snapshot_frame(self) -> bytes:
        return frame(
            "snapshot",
            {
                "exposure": self._exposure,
                "desk": self._desk_view,
                "recent": list(self._recent),
                "status": self._status,
                "interval_ms": int(self.interval * 1000),
                # The bands' actions, safest first (stream_risk.rules): the page's order.
                "actions": list(ACTIONS),
                "server_ts": time.time_ns() // 1_000_000,
            },
            self._seq,
        )


__all__ = [
    "MAX_QUEUED_FRAMES",
    "SWEEP_ROWS",
    "DashboardHub",
    "action_summary",
    "frame",
]
