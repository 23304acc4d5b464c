"""The fast path's look-ahead: per asset its ticks, per position the next point where the
scalar schedule could do more than a silent re-assessment (see `fastpath`'s doc).

`AssetTicks` holds one asset's ticks, one entry per distinct time, and sets the engine's
market as after any of them. `PositionScan` assesses a position over runs of its asset's
ticks (`fast_assess.assess_arrays`) and finds its next *candidate*: a tick that would
publish under `changed` emission (the core's `record.advice_differs` / `score_moved`,
over arrays), one within 1e-9 of a threshold, one of an incomplete market, or a
re-evaluation timer due before the asset's next tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from stream_risk.config import RiskConfig
from stream_risk.engine import Engine
from stream_risk.engine.record import advice_differs, score_moved
from stream_risk.engine.table import PositionState
from stream_risk.replay.fast_assess import INSTR_CODE, assess_arrays
from stream_risk.replay.runner import Timeline
from stream_risk.rules import RANK, hedge_fractions

_EPS = 1e-9
#: action and instrument of each combo code (action * 5 + instrument).
_COMBO_ACTION = np.arange(25) // 5
_COMBO_INSTR = np.arange(25) % 5
_MIN = 60_000

#: Flag bits of a precomputed tick assessment.
_INTERESTING = 1  # incomplete market, or a value within _EPS of a threshold
_GAP = 2  # the timer this assessment sets is due before the asset's next tick


def _near(x: NDArray[np.float64], thresholds: Sequence[float]) -> NDArray[np.bool_]:
    out = np.zeros(len(x), dtype=bool)
    for thr in thresholds:
        out |= np.abs(x - thr) <= _EPS * max(1.0, abs(thr))
    return out


class AssetTicks:
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


class PositionScan:
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
        self, pid: str, pos: PositionState, asset: AssetTicks | None, bound: int, cfg: RiskConfig
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
            _Coded(RANK[last.action], last.hedge_pct, INSTR_CODE[last.instrument], last.stale),
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
