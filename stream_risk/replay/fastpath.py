"""The fast path: the same schedule as `runner.run_scalar`, skipping what cannot publish.

Between its own updates, a position's tick assessments depend only on its (fixed) fields
and its asset's market at each tick, so they are computed for a whole run of ticks at once
in numpy (`fast_assess.assess_arrays`, the assessor's arithmetic operation by operation,
so the floats are the same to the last bit). From those arrays and the last action the
engine published, the fast path finds, per position, the next point where the scalar
schedule could do more than a silent re-assessment (`fast_scan.PositionScan`):

- a tick whose assessment would be published under `changed` emission (action, hedge_pct
  or instrument differ from the last published, the score moved ≥ 1 point, the stale flag
  flips), or one within 1e-9 of a threshold (a margin: predicting too many is only slower);
- a tick of an incomplete market (the position waits);
- a re-evaluation timer due before the asset's next tick (a quiet market).

Everything else is a *quiet* assessment: assessed, suppressed, timer moved. The engine
itself — the same `Engine` — processes every interesting point in event-time order, with
the same `step` / `fire_timers` calls as the scalar schedule, so every published record
is made by the core. Before each, the quiet assessments since the last one are applied to
the engine in bulk, through its public API, exactly as the scalar path would have left it:
each market at its last tick (`Engine.apply_market`, duplicate ticks counted), each quiet
assessment counted and its re-evaluation due (`Engine.assess_quietly`), scheduled
(`Engine.schedule`) in the order the scalar path scheduled them, so timers due at the same
instant fire in the same order. Which tick would publish is the core's rule
(`record.should_emit`), its two halves evaluated over arrays.

Under `--emit all` every assessment is published, so there is nothing to skip: that runs
the scalar schedule. A rare case the bulk step does not model (a position re-assessed while
its market is incomplete, holding a timer already due) switches to the scalar schedule
from that point on, with the same engine. `tests/replay/test_fastpath.py` replays the same
data both ways and compares the bytes.

This module is the driver (`run_fast`): the event-time loop over those points, the bulk
step, the dense stretches run as the scalar schedule, and the fallback.
"""

from __future__ import annotations

import heapq

import numpy as np

from stream_risk.config import RiskConfig
from stream_risk.engine import Engine
from stream_risk.engine.events import Event
from stream_risk.engine.table import PositionState
from stream_risk.replay.fast_scan import AssetTicks, PositionScan
from stream_risk.replay.runner import Progress, Sink, Timeline, finish, step_at

#: Every _DENSE_POINTS interesting points, if they covered fewer than 3x as many event
#: times, the next _BURST event times run as the scalar schedule (no skipping to win).
_DENSE_POINTS = 128
_BURST = 4096


class _Fallback(Exception):
    pass


def run_fast(
    timeline: Timeline,
    engine: Engine,
    sink: Sink,
    progress: Progress | None = None,
) -> None:
    """Replay `timeline` through `engine`: the same outputs as `run_scalar`, faster."""
    if engine.config.emit != "changed" or timeline.configs or _hysteresis(timeline, engine):
        # risk-config records change configs mid-run: the scalar schedule (D9). Hysteresis
        # makes an action depend on the previous one, which the bulk step does not model
        # (D11): the scalar schedule too.
        from stream_risk.replay.runner import run_scalar

        run_scalar(timeline, [engine], [sink], progress)
        return
    _FastRun(timeline, engine, sink, progress).run()


def _hysteresis(timeline: Timeline, engine: Engine) -> bool:
    """Whether `hysteresis_points` is in force: the engine's config or any position's own."""
    if engine.config.risk.hysteresis_points > 0:
        return True
    for rec in timeline.positions:
        msg = rec.message
        if msg is not None and msg.config is not None:
            points = getattr(msg.config, "hysteresis_points", None)
            if points is not None and points > 0:
                return True
    return False


class _FastRun:
    def __init__(
        self, timeline: Timeline, engine: Engine, sink: Sink, progress: Progress | None
    ) -> None:
        self.tl = timeline
        self.engine = engine
        self.sink = sink
        self.progress = progress
        self.end = timeline.until + 1
        ticks = timeline.ticks
        self.assets: dict[str, AssetTicks] = {}
        self.asset_of_code: list[AssetTicks | None] = []
        if len(ticks):
            order = np.argsort(ticks.asset, kind="stable")
            codes = ticks.asset[order]
            bounds = np.flatnonzero(np.diff(codes)) + 1
            for rows in np.split(order.astype(np.int64), bounds):
                if len(rows) == 0:
                    continue
                name = ticks.assets[int(ticks.asset[rows[0]])]
                self.assets[name] = AssetTicks(name, rows, timeline)
        self.asset_of_code = [self.assets.get(name) for name in ticks.assets]
        self.own_events: dict[str, list[int]] = {}
        for rec in timeline.positions:
            self.own_events.setdefault(rec.position_id, []).append(rec.ts)
        self.hard = np.unique(timeline.pos_ts).tolist()
        self.scans: dict[str, PositionScan] = {}
        self.heap: list[tuple[int, int, str, int]] = []
        self.seq = 0
        self.points = engine.config.score_change_points

    # -------------------------------------------------------------- helpers
    def _next_own_event(self, pid: str, after: int) -> int:
        times = self.own_events.get(pid, [])
        i = int(np.searchsorted(times, after, "right"))
        return min(times[i], self.end) if i < len(times) else self.end

    def _rescan(self, pid: str, after: int, rebuild: bool, quiet: bool = False) -> None:
        """Recompute `pid`'s next candidate after the engine processed time `after`.

        `quiet`: the position's own candidate was later than `after` (it was only touched
        by a tick of its asset); if the engine did not publish for it, nothing changed.
        """
        pos = self.engine.table.positions.get(pid)
        scan = self.scans.get(pid)
        if pos is None:
            if scan is not None:
                del self.scans[pid]
            return
        if pos.next_due >= 0 and pos.next_due <= after:
            raise _Fallback  # a timer left due by a waiting position: scalar from here
        if (
            quiet
            and scan is not None
            and scan.pos is pos
            and scan.ref is pos.last
            and after < scan.bound
        ):
            return  # assessed at `after` and not published: its candidate still stands
        if rebuild or scan is None or scan.pos is not pos or scan.cfg is not self._cfg(pos):
            version = scan.version + 1 if scan is not None else 0
            scan = PositionScan(
                pid,
                pos,
                self.assets.get(pos.asset),
                self._next_own_event(pid, after),
                self._cfg(pos),
            )
            scan.version = version
            self.scans[pid] = scan
        else:
            scan.version += 1
        cand = scan.candidate(after, self.engine, self.points)
        if cand is not None:
            self.seq += 1
            heapq.heappush(self.heap, (cand, self.seq, pid, scan.version))

    def _cfg(self, pos: PositionState) -> RiskConfig:
        return pos.config or self.engine.config.risk

    def _top(self) -> int:
        heap = self.heap
        while heap:
            t, _, pid, version = heap[0]
            scan = self.scans.get(pid)
            if scan is not None and scan.version == version:
                return t
            heapq.heappop(heap)
        return self.end

    def _pop_at(self, t: int) -> set[str]:
        out: set[str] = set()
        heap = self.heap
        while heap and heap[0][0] <= t:
            _, _, pid, version = heapq.heappop(heap)
            scan = self.scans.get(pid)
            if scan is not None and scan.version == version:
                out.add(pid)
        return out

    def _sync(self, t: int, extra: set[str] | None = None, every_asset: bool = False) -> None:
        """Apply the quiet ticks before `t` to the engine (see the module doc)."""
        engine = self.engine
        by_asset = engine.table.by_asset
        names: set[str] | list[str]
        if every_asset:
            names = list(self.assets)
        else:
            names = {n for n in by_asset if n in self.assets}
            if extra:
                names |= {n for n in extra if n in self.assets}
        dirty: list[tuple[int, int, PositionState, int]] = []
        positions = engine.table.positions
        for name in names:
            a = self.assets[name]
            k0 = a.cursor
            k1 = a.index_from(t)
            if k1 <= k0:
                continue
            a.cursor = k1
            k = k1 - 1
            a.set_market(engine, k, int(a.dupc[k1] - a.dupc[k0]))
            pids = by_asset.get(name)
            if not pids:
                continue
            n = k1 - k0
            t_last = int(a.gts[k])
            first_row = int(a.first_row[k])
            for idx, pid in enumerate(pids):
                due = engine.assess_quietly(pid, t_last, n)
                dirty.append((first_row, idx, positions[pid], due))
        if dirty:
            dirty.sort(key=lambda d: (d[0], d[1]))
            for _, _, pos, due in dirty:
                engine.schedule(pos, due)

    def _is_time(self, t: int) -> bool:
        times = self.tl.times
        i = int(np.searchsorted(times, t, "left"))
        return i < len(times) and int(times[i]) == t

    # -------------------------------------------------------------- main loop
    def run(self) -> None:
        engine, sink, tl = self.engine, self.sink, self.tl
        hard = self.hard
        hi = 0
        start = tl.start
        span = max(1, self.end - start)
        last_progress = -1.0
        last_t = start - 1
        n_points = 0
        window_gi = 0
        self.last_t = last_t
        try:
            while True:
                t_hard = hard[hi] if hi < len(hard) else self.end
                t = min(t_hard, self._top())
                if t >= self.end:
                    break
                involved = self._pop_at(t)
                rebuild: set[str] = set()
                events: list[Event] = []
                is_hard = t == t_hard
                extra: set[str] = set()
                tick_assets: set[str] = set()
                touched: set[str] = set()
                if self._is_time(t):
                    events = tl.events_at(t)
                    lo, hi_row = tl.tick_rows(t)
                    codes = np.unique(tl.ticks.asset[lo:hi_row]).tolist()
                    tick_assets = {tl.ticks.assets[c] for c in codes}
                    extra |= tick_assets
                    if is_hard:
                        lo_p = int(np.searchsorted(tl.pos_ts, t, "left"))
                        hi_p = int(np.searchsorted(tl.pos_ts, t, "right"))
                        for rec in tl.positions[lo_p:hi_p]:
                            rebuild.add(rec.position_id)
                            if rec.message is not None:
                                extra.add(rec.message.asset)
                            old = engine.table.positions.get(rec.position_id)
                            if old is not None:
                                extra.add(old.asset)
                self._sync(t, extra)
                if events:
                    step_at(engine, sink, t, events)
                    for name in tick_assets:
                        a = self.assets[name]
                        a.cursor = a.index_after(t)
                        touched.update(engine.table.by_asset.get(name, ()))
                else:
                    while (due := engine.next_due()) is not None and due <= t:
                        sink(due, engine.fire_timers(due), engine)
                if is_hard:
                    hi += 1
                last_t = self.last_t = t
                for pid in rebuild:
                    self._rescan(pid, t, rebuild=True)
                for pid in touched - rebuild - involved:
                    self._rescan(pid, t, rebuild=False, quiet=True)
                for pid in involved - rebuild:
                    self._rescan(pid, t, rebuild=False)
                # Dense stretch (most event times interesting): run them as the scalar
                # schedule does, then resume skipping.
                gi = int(np.searchsorted(tl.times, t, "right"))
                n_points += 1
                if n_points == _DENSE_POINTS:
                    if gi - window_gi < _DENSE_POINTS * 3:
                        hi = self._burst(t, gi, hi)
                        gi = int(np.searchsorted(tl.times, self.last_t, "right"))
                        t = self.last_t
                    n_points, window_gi = 0, gi
                if self.progress is not None:
                    frac = (t - start) / span
                    if frac - last_progress >= 0.005:
                        last_progress = frac
                        self.progress(frac)
        except _Fallback:
            last_t = self.last_t
            self._sync(last_t + 1, every_asset=True)
            self._scalar_after(last_t)
            return
        self._sync(self.end, every_asset=True)
        finish(engine, sink, tl.until)
        if self.progress is not None:
            self.progress(1.0)

    def _burst(self, after: int, gi: int, hi: int) -> int:
        """The scalar schedule for the next `_BURST` event times after `after` (all synced
        through it); then every position is rescanned. Returns the new hard-time index."""
        engine, sink, tl = self.engine, self.sink, self.tl
        self._sync(after + 1, every_asset=True)
        times = tl.times[gi : gi + _BURST].tolist()
        if not times:
            return hi
        for t in times:
            step_at(engine, sink, t, tl.events_at(t))
        t_end = times[-1]
        self.last_t = t_end
        for a in self.assets.values():
            a.cursor = max(a.cursor, a.index_after(t_end))
        while hi < len(self.hard) and self.hard[hi] <= t_end:
            hi += 1
        for pid in sorted(set(self.scans) | set(engine.table.positions)):
            scan = self.scans.get(pid)
            self._rescan(pid, t_end, rebuild=scan is None or scan.bound <= t_end)
        return hi

    def _scalar_after(self, after: int) -> None:
        """The scalar schedule for every event time after `after`, on the same engine."""
        engine, sink, tl = self.engine, self.sink, self.tl
        times = tl.times
        for t in times[int(np.searchsorted(times, after, "right")) :].tolist():
            step_at(engine, sink, t, tl.events_at(t))
        finish(engine, sink, tl.until)


__all__ = ["run_fast"]
