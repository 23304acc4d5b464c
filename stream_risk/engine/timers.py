"""Re-evaluation timers: one per position, in a heap, in event time.

Rescheduling or cancelling does not search the heap: the position's own `next_due` and
`timer_seq` are the truth, and a heap entry that disagrees with them is stale and skipped
when popped. Both are checked: a position rescheduled to the same due time again has a
stale entry with the same due and an earlier sequence number, which must neither fire
nor decide the firing order (else the order of positions due at one instant would depend
on whether a stale entry had been dropped already).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

#: live(due, seq, position_id): is this heap entry the position's current timer?
Live = Callable[[int, int, str], bool]


class Timers:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0

    def schedule(self, due_ms: int, position_id: str) -> int:
        """Add a timer; returns its sequence number (the position keeps it)."""
        self._seq += 1
        heapq.heappush(self._heap, (due_ms, self._seq, position_id))
        return self._seq

    def pop_due(self, now_ms: int, live: Live) -> list[tuple[int, str]]:
        """Every (due, position_id) with due <= now whose entry is still current, in order."""
        heap = self._heap
        fired: list[tuple[int, str]] = []
        while heap and heap[0][0] <= now_ms:
            due, seq, pid = heapq.heappop(heap)
            if live(due, seq, pid):
                fired.append((due, pid))
        return fired

    def next_due(self, live: Live) -> int | None:
        """The earliest live due time, dropping stale entries on the way; None if none."""
        heap = self._heap
        while heap:
            due, seq, pid = heap[0]
            if live(due, seq, pid):
                return due
            heapq.heappop(heap)
        return None

    def compact(self, live: Live) -> None:
        """Drop stale entries (call when the heap has grown well past the live timers)."""
        self._heap = [e for e in self._heap if live(*e)]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)
