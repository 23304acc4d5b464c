"""Re-evaluation timers: one per position, in a heap, in event time.

A position's own `next_due` and `timer_seq` are the truth: its timer fires at `next_due`,
and timers due at one instant fire in the order they were scheduled (`timer_seq`).

The heap holds at most one entry a position tracks (`timer_entry`), whose key (due, seq)
is never after the position's (next_due, timer_seq). Rescheduling to a later time (what
every assessment does: the next re-evaluation moves on) pushes nothing: when the earlier
entry comes up it is pushed again under the position's current key, which sorts where
an entry pushed at scheduling would have, so the firing order is the same. Only a move
to an earlier time pushes a new entry; the one it replaces is no longer tracked and is
dropped when popped or compacted. So the heap holds about one entry per position, not
one per assessment (docs/design.md D8).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Protocol


class TimerOwner(Protocol):
    """What a timer reads and sets on its position (`PositionState`)."""

    position_id: str
    next_due: int
    timer_seq: int
    timer_entry: tuple[int, int, str] | None


#: lookup(position_id): the position now holding that id, or None.
Lookup = Callable[[str], TimerOwner | None]


class Timers:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0

    def schedule(self, pos: TimerOwner, due_ms: int) -> None:
        """Set `pos`'s timer to `due_ms` (replacing any other), after every timer already
        scheduled at that time."""
        self._seq += 1
        seq = self._seq
        pos.next_due = due_ms
        pos.timer_seq = seq
        entry = pos.timer_entry
        if entry is None or due_ms < entry[0]:
            entry = (due_ms, seq, pos.position_id)
            heapq.heappush(self._heap, entry)
            pos.timer_entry = entry

    def _settle(self, entry: tuple[int, int, str], lookup: Lookup) -> bool:
        """`entry` was popped: True if its position's timer is due at it; else, when it
        was the entry the position tracks and the timer moved later, push it again."""
        due, seq, pid = entry
        pos = lookup(pid)
        if pos is None or pos.timer_entry is not entry:
            return False  # superseded by an earlier entry, or the position is gone
        pos.timer_entry = None
        nd = pos.next_due
        if nd < 0:
            return False  # cancelled
        if nd == due and pos.timer_seq == seq:
            return True
        moved = (nd, pos.timer_seq, pid)
        heapq.heappush(self._heap, moved)
        pos.timer_entry = moved
        return False

    def pop_due(self, now_ms: int, lookup: Lookup) -> list[tuple[int, str]]:
        """Every (due, position_id) with due <= now whose timer is current, in order."""
        heap = self._heap
        fired: list[tuple[int, str]] = []
        settle = self._settle
        while heap and heap[0][0] <= now_ms:
            entry = heapq.heappop(heap)
            if settle(entry, lookup):
                fired.append((entry[0], entry[2]))
        return fired

    def next_due(self, lookup: Lookup) -> int | None:
        """The earliest due time of a current timer; None if none."""
        heap = self._heap
        while heap:
            entry = heap[0]
            due, seq, pid = entry
            pos = lookup(pid)
            if (
                pos is not None
                and pos.timer_entry is entry
                and pos.next_due == due
                and pos.timer_seq == seq
            ):
                return due
            heapq.heappop(heap)
            # Not current: dropped, or pushed again under its position's later key.
            self._settle(entry, lookup)
        return None

    def compact(self, lookup: Lookup) -> None:
        """Drop the entries no position tracks (call when the heap has grown well past
        the positions)."""
        kept = []
        for entry in self._heap:
            pos = lookup(entry[2])
            if pos is not None and pos.timer_entry is entry:
                kept.append(entry)
        heapq.heapify(kept)
        self._heap = kept

    def __len__(self) -> int:
        return len(self._heap)
