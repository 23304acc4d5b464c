"""Re-evaluation timers: one per position, in a heap, in event time.

Rescheduling or cancelling does not search the heap: the position's own `next_due` is
the truth, and a heap entry that disagrees with it is stale and skipped when popped.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


class Timers:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0

    def schedule(self, due_ms: int, position_id: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due_ms, self._seq, position_id))

    def pop_due(self, now_ms: int, current_due: Callable[[str], int]) -> list[tuple[int, str]]:
        """Every (due, position_id) with due <= now whose entry is still current, in order."""
        heap = self._heap
        fired: list[tuple[int, str]] = []
        while heap and heap[0][0] <= now_ms:
            due, _, pid = heapq.heappop(heap)
            if current_due(pid) == due:
                fired.append((due, pid))
        return fired

    def next_due(self, current_due: Callable[[str], int]) -> int | None:
        """The earliest live due time, dropping stale entries on the way; None if none."""
        heap = self._heap
        while heap:
            due, _, pid = heap[0]
            if current_due(pid) == due:
                return due
            heapq.heappop(heap)
        return None

    def compact(self, current_due: Callable[[str], int]) -> None:
        """Drop stale entries (call when the heap has grown well past the live timers)."""
        self._heap = [e for e in self._heap if current_due(e[2]) == e[0]]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)
