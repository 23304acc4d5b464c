"""The fast path: the same schedule as `runner.run_scalar`, skipping what cannot publish.

Between its own updates, a position's tick assessments depend only on its (fixed) fields
and its asset's market at each tick, so they are computed for a whole run of ticks at once
in numpy (`assess_arrays`, the assessor's arithmetic operation by operation, so the floats
are the same to the last bit). From those arrays and the last action the engine published,
the fast path finds, per position, the next point where the scalar schedule could do more
than a silent re-assessment:

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
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from stream_risk.assessor import PERP_LONG, PERP_SHORT, SPOT_BUY, SPOT_SELL
from stream_risk.config import RiskConfig
from stream_risk.engine import Engine
from stream_risk.engine.events import Event
from stream_risk.engine.record import advice_differs, score_moved
from stream_risk.engine.table import PositionState
from stream_risk.replay.runner import Progress, Sink, Timeline, finish
from stream_risk.rules import RANK, hedge_fractions, thresholds

INSTRUMENTS: tuple[str | None, ...] = (None, SPOT_SELL, SPOT_BUY, PERP_SHORT, PERP_LONG)
_INSTR_CODE = {name: i for i, name in enumerate(INSTRUMENTS)}
_EPS = 1e-9
#: action and instrument of each combo code (action * 5 + instrument).
_COMBO_ACTION = np.arange(25) // 5
_COMBO_INSTR = np.arange(25) % 5
_MIN = 60_000

#: Every _DENSE_POINTS interesting points, if they covered fewer than 3x as many event
#: times, the next _BURST event times run as the scalar schedule (no skipping to win).
_DENSE_POINTS = 128
_BURST = 4096

#: Flag bits of a precomputed tick assessment.
_INTERESTING = 1  # incomplete market, or a value within _EPS of a threshold
_GAP = 2  # the timer this assessment sets is due before the asset's next tick


@dataclass(slots=True)
class Arrays:
    """Vectorised assessments of one position over a run of ticks."""

    score: NDArray[np.float64]
    action: NDArray[np.int8]
    instrument: NDArray[np.int8]
    re_eval: NDArray[np.int64]
    bps: NDArray[np.float64]
    hedge_pct: NDArray[np.float64]


def assess_arrays(
    size: float,
    age_minutes: NDArray[np.float64],
    price: NDArray[np.float64],
    vol: NDArray[np.float64],
    spread: NDArray[np.float64],
    funding: NDArray[np.float64],
    bid: NDArray[np.float64],
    ask: NDArray[np.float64],
    cfg: RiskConfig,
) -> Arrays:
    """`assessor.assess` over arrays of market inputs (same operations in the same order)."""
    # The constants by name (the assessor unpacks `cfg.constants` on its hot path).
    max_loss_pct = cfg.max_loss_pct
    max_hold_minutes = cfg.max_hold_minutes
    max_hedge_cost_bps = cfg.max_hedge_cost_bps
    loss_w = cfg.loss_weight
    age_w = cfg.age_weight
    vol_extreme_points = cfg.vol_extreme_points
    vol_high_points = cfg.vol_high_points
    vol_low_points = cfg.vol_low_points
    liq_w = cfg.liquidity_weight
    high_vol = cfg.high_vol_threshold
    extreme_vol = cfg.extreme_vol_threshold
    vol_reference = cfg.vol_reference
    zero_vol_adjustment = cfg.zero_vol_adjustment
    funding_threshold = cfg.funding_threshold
    days_per_year = cfg.days_per_year
    large_move = cfg.large_move
    fast_score = cfg.fast_re_eval_score
    medium_score = cfg.medium_re_eval_score
    fast_minutes = cfg.fast_re_eval_minutes
    medium_minutes = cfg.medium_re_eval_minutes
    slow_minutes = cfg.slow_re_eval_minutes
    n = len(price)
    if size == 0:
        zeros = np.zeros(n)
        return Arrays(
            zeros,
            np.zeros(n, dtype=np.int8),
            np.zeros(n, dtype=np.int8),
            np.full(n, slow_minutes, dtype=np.int64),
            zeros,
            zeros,
        )
    with np.errstate(all="ignore"):
        down = size * (price * -large_move)
        up = size * (price * large_move)
        worst = np.abs(np.where(down < up, down, up))
        notional = np.abs(size * price)
        loss_pct = np.where(notional > 0, worst / notional, 0.0)
        vol_adj = np.where(
            vol > 0, np.minimum(1.0, 1.0 / (vol_reference / vol)), zero_vol_adjustment
        )
        loss = np.minimum(loss_w, (loss_pct / max_loss_pct) * loss_w * vol_adj)
        age = np.minimum(age_w, (age_minutes / max_hold_minutes) * age_w)
        vol_score = np.where(
            vol >= extreme_vol,
            vol_extreme_points,
            np.where(vol >= high_vol, vol_high_points, vol / high_vol * vol_low_points),
        )
        long = size > 0
        depth = bid if long else ask
        liquidity = np.where(depth > 0, np.minimum(liq_w, (notional / depth) * liq_w), liq_w)
        score = loss + age + vol_score + liquidity
        score = np.where(score > 100.0, 100.0, np.where(score < 0.0, 0.0, score))

        hedge_notional = abs(size) * price
        funding_1d = hedge_notional * (funding / days_per_year)
        if long:
            funding_1d = -funding_1d
            instrument = np.where(
                funding > funding_threshold, _INSTR_CODE[PERP_SHORT], _INSTR_CODE[SPOT_SELL]
            )
        else:
            instrument = np.where(
                funding < -funding_threshold, _INSTR_CODE[PERP_LONG], _INSTR_CODE[SPOT_BUY]
            )
        total = hedge_notional * (spread / 10000) + np.where(funding_1d > 0.0, funding_1d, 0.0)
        bps = np.where(hedge_notional > 0, (total / hedge_notional) * 10000, 0.0)

    bands = thresholds(cfg)  # stream_risk.rules: riskiest first
    action = np.select([score >= t for _, t, _ in bands], [i for i, _, _ in bands], 0).astype(
        np.int8
    )
    pct = np.array(hedge_fractions(cfg))
    too_expensive = bps > max_hedge_cost_bps
    action = np.where(too_expensive, 0, action).astype(np.int8)
    hedge_pct = np.where(too_expensive, 0.0, pct[action])
    instrument = np.where(hedge_pct > 0, instrument, 0).astype(np.int8)
    re_eval = np.where(
        score >= fast_score,
        fast_minutes,
        np.where(score >= medium_score, medium_minutes, slow_minutes),
    ).astype(np.int64)
    return Arrays(score, action, instrument, re_eval, bps, hedge_pct)


def _near(x: NDArray[np.float64], thresholds: Sequence[float]) -> NDArray[np.bool_]:
    out = np.zeros(len(x), dtype=bool)
    for thr in thresholds:
        out |= np.abs(x - thr) <= _EPS * max(1.0, abs(thr))
    return out


# ---------------------------------------------------------------------- per-asset data
class _Asset:
    """One asset's ticks, one entry per distinct time (the last tick at that time)."""

    __slots__ = (
        "all_price",
        "all_ts",
        "ask",
        "bid",
        "cursor",
        "dupc",
        "first_row",
        "funding",
        "given",
        "gts",
        "incomplete",
        "name",
        "price",
        "spread",
        "vol",
    )

    def __init__(self, name: str, rows: NDArray[np.int64], tl: Timeline) -> None:
        t = tl.ticks
        ts = t.ts[rows]
        self.name = name
        last = np.ones(len(rows), dtype=bool)
        last[:-1] = ts[1:] != ts[:-1]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = ts[1:] != ts[:-1]
        lr = rows[last]
        self.gts = ts[last]
        self.first_row = rows[first]
        self.price = t.price[lr]
        self.vol = t.vol[lr]
        self.spread = t.spread[lr]
        self.funding = t.funding[lr]
        self.bid = t.bid[lr]
        self.ask = t.ask[lr]
        assert t.given is not None  # set by Ticks.__post_init__
        self.given = t.given[lr]
        # Every tick of the asset, for the engine's vol estimate (fed as the engine would).
        self.all_ts = ts
        self.all_price = t.price[rows]
        self.incomplete = np.isnan(self.vol)
        # Duplicates (the engine's `same_as`): same time and values as the previous tick.
        dup = np.zeros(len(rows), dtype=bool)
        if len(rows) > 1:
            a, b = rows[:-1], rows[1:]
            va, vb = t.vol[a], t.vol[b]
            dup[1:] = (
                (ts[1:] == ts[:-1])
                & (t.price[b] == t.price[a])
                & ((va == vb) | np.isnan(vb))
                & (t.spread[b] == t.spread[a])
                & (t.funding[b] == t.funding[a])
                & (t.bid[b] == t.bid[a])
                & (t.ask[b] == t.ask[a])
            )
        group = np.cumsum(first) - 1
        per_group = np.bincount(group, weights=dup, minlength=len(self.gts)).astype(np.int64)
        self.dupc = np.concatenate(([0], np.cumsum(per_group)))
        self.cursor = 0

    def index_after(self, t: int) -> int:
        """First distinct index with time > t."""
        return int(np.searchsorted(self.gts, t, "right"))

    def index_from(self, t: int) -> int:
        """First distinct index with time >= t."""
        return int(np.searchsorted(self.gts, t, "left"))

    def set_market(self, engine: Engine, k: int, duplicates: int = 0) -> None:
        """The engine's market of this asset as after its tick at distinct index k
        (`Engine.apply_market`); `duplicates` of the ticks skipped were duplicates."""
        vol = float(self.vol[k])
        engine.apply_market(
            self.name,
            int(self.gts[k]),
            float(self.price[k]),
            vol if vol == vol else None,
            float(self.spread[k]),
            float(self.funding[k]),
            float(self.bid[k]),
            float(self.ask[k]),
            int(self.given[k]),
            self.history,
            duplicates,
        )

    def history(self, after: int, upto: int) -> list[tuple[int, float]]:
        """(ts, price) of every tick of the asset with after < ts <= upto, in order (what
        the engine's vol estimate would have been fed tick by tick)."""
        lo = int(np.searchsorted(self.all_ts, after, "right"))
        hi = int(np.searchsorted(self.all_ts, upto, "right"))
        return list(zip(self.all_ts[lo:hi].tolist(), self.all_price[lo:hi].tolist(), strict=True))


# ---------------------------------------------------------------------- per-position scan
class _Scan:
    """A position's precomputed tick assessments, valid until its own next update."""

    __slots__ = (
        "asset",
        "bound",
        "cfg",
        "combo",
        "flags",
        "kend",
        "pid",
        "pos",
        "re_eval",
        "ref",
        "score",
        "version",
        "w0",
        "w1",
        "window",
    )

    def __init__(
        self, pid: str, pos: PositionState, asset: _Asset | None, bound: int, cfg: RiskConfig
    ) -> None:
        self.pid = pid
        self.pos = pos
        self.asset = asset
        self.bound = bound
        self.cfg = cfg
        self.kend = asset.index_from(bound) if asset is not None else 0
        self.version = 0
        #: The engine's last published action when the candidate was computed.
        self.ref: object = None
        self.w0 = self.w1 = 0
        self.window = 4096
        self.score = np.empty(0)
        self.combo = np.empty(0, dtype=np.int8)
        self.re_eval = np.empty(0, dtype=np.int64)
        self.flags = np.empty(0, dtype=np.uint8)

    def _compute(self, k: int) -> None:
        a = self.asset
        assert a is not None
        w1 = min(self.kend, k + self.window)
        self.window = min(self.window * 2, 32768)
        pos = self.pos
        t = a.gts[k:w1]
        if pos.opened_at is not None:
            age = (t - pos.opened_at) / _MIN
        else:
            age = pos.age_at_ts + (t - pos.ts) / _MIN
        age = np.where(age > 0, age, 0.0)
        s = slice(k, w1)
        arr = assess_arrays(
            pos.size,
            age,
            a.price[s],
            a.vol[s],
            a.spread[s],
            a.funding[s],
            a.bid[s],
            a.ask[s],
            self.cfg,
        )
        cfg = self.cfg
        near = _near(
            arr.score,
            (
                cfg.liquidate_score,
                cfg.hedge_full_score,
                cfg.hedge_partial_score,
                cfg.reduce_score,
                cfg.fast_re_eval_score,
                cfg.medium_re_eval_score,
            ),
        ) | _near(arr.bps, (cfg.max_hedge_cost_bps,))
        interesting = a.incomplete[s] | near
        tnext = np.empty(w1 - k, dtype=np.int64)
        tnext[:-1] = t[1:]
        tnext[-1] = a.gts[w1] if w1 < self.kend else self.bound
        gap = (t + arr.re_eval * _MIN) < tnext
        self.flags = (interesting * _INTERESTING + gap * _GAP).astype(np.uint8)
        self.score = arr.score
        self.combo = (arr.action * 5 + arr.instrument).astype(np.int8)
        self.re_eval = arr.re_eval
        self.w0, self.w1 = k, w1

    def candidate(self, after: int, engine: Engine, points: float) -> int | None:
        """The next time > `after` this position needs the engine, or None before `bound`."""
        pos = self.pos
        a = self.asset
        self.ref = pos.last
        k = a.index_after(after) if a is not None else 0
        first_t = int(a.gts[k]) if a is not None and k < self.kend else self.bound
        due = pos.next_due
        if 0 <= due < first_t:
            return due
        if k >= self.kend:
            return None
        assert a is not None
        last = pos.last
        if last is None:
            return first_t  # a first assessment: published (`should_emit`)
        # The tick rule (`record.advice_differs` | `record.score_moved`), over every
        # (action, instrument) combination once and over the scores of a run of ticks: a
        # tick at its own time is never stale, so a stale last action differs at once.
        differs = advice_differs(
            _Coded(RANK[last.action], last.hedge_pct, _INSTR_CODE[last.instrument], last.stale),
            _COMBO_ACTION,
            np.array(hedge_fractions(self.cfg))[_COMBO_ACTION],
            _COMBO_INSTR,
            False,
        )
        ref_score = last.risk_score
        limit = points - _EPS  # a margin: predicting too many is only slower
        while k < self.kend:
            if not (self.w0 <= k < self.w1):
                self._compute(k)
            lo = k
            step = 512
            w0 = self.w0
            while lo < self.w1:
                hi = min(self.w1, lo + step)
                s = slice(lo - w0, hi - w0)
                flags = self.flags[s]
                hit = (
                    ((flags & _INTERESTING) != 0)
                    | differs[self.combo[s]]
                    | score_moved(ref_score, self.score[s], limit)
                )
                gap = (flags & _GAP) != 0
                any_hit = bool(hit.any())
                any_gap = bool(gap.any())
                if any_hit or any_gap:
                    j_hit = int(np.argmax(hit)) if any_hit else hi
                    j_gap = int(np.argmax(gap)) if any_gap else hi
                    if j_hit <= j_gap:
                        return int(a.gts[lo + j_hit])
                    i = lo + j_gap
                    return int(a.gts[i]) + int(self.re_eval[i - w0]) * _MIN
                lo = hi
                step *= 4
            k = self.w1
        return None


class _Coded(NamedTuple):
    """A last published action with its action and instrument as the fast path's codes."""

    action: int
    hedge_pct: float
    instrument: int
    stale: bool


class _Fallback(Exception):
    pass


# ---------------------------------------------------------------------- the run
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
        self.assets: dict[str, _Asset] = {}
        self.asset_of_code: list[_Asset | None] = []
        if len(ticks):
            order = np.argsort(ticks.asset, kind="stable")
            codes = ticks.asset[order]
            bounds = np.flatnonzero(np.diff(codes)) + 1
            for rows in np.split(order.astype(np.int64), bounds):
                if len(rows) == 0:
                    continue
                name = ticks.assets[int(ticks.asset[rows[0]])]
                self.assets[name] = _Asset(name, rows, timeline)
        self.asset_of_code = [self.assets.get(name) for name in ticks.assets]
        self.own_events: dict[str, list[int]] = {}
        for rec in timeline.positions:
            self.own_events.setdefault(rec.position_id, []).append(rec.ts)
        self.hard = np.unique(timeline.pos_ts).tolist()
        self.scans: dict[str, _Scan] = {}
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
            scan = _Scan(
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
                    while (due := engine.next_due()) is not None and due < t:
                        sink(due, engine.fire_timers(due), engine)
                    sink(t, engine.step(events, t), engine)
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
            events = tl.events_at(t)
            while (due := engine.next_due()) is not None and due < t:
                sink(due, engine.fire_timers(due), engine)
            sink(t, engine.step(events, t), engine)
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
            events = tl.events_at(t)
            while (due := engine.next_due()) is not None and due < t:
                sink(due, engine.fire_timers(due), engine)
            sink(t, engine.step(events, t), engine)
        finish(engine, sink, tl.until)


__all__ = ["Arrays", "assess_arrays", "run_fast"]
