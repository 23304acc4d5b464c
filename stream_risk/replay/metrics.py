"""The risk figures of a P&L path a quant reads first (issue 16): daily P&L, max drawdown and
when, time under water, daily volatility and a return/risk ratio.

A path is its values after each point, in time order (`PnlPath.unhedged` / `.hedged`); it
starts at 0 before its first point, and each value holds until the next point (the last
until the path's end).

- Daily P&L (UTC days): the path's value at the end of the day (after its last point
  before the next midnight) less its value at the end of the day before (0 before the
  first). Every day from the first point's to the last point's is a row, a day without
  points 0.
- Max drawdown: the largest fall from a running peak (the start, 0, counts as a peak),
  with the time of that peak (the first point, for the start) and of the trough.
- Under water: while the value is below its running peak. Each point's value counts from
  its time to the next point's; a spell is a run of consecutive points under water, from
  the first of them to the point that regains the peak (or the path's end). The longest
  spell (hours, from, to) and the total.
- Daily volatility: the sample standard deviation (n − 1) of the daily P&L, USD; needs 2
  days.
- Return/risk: Sharpe-like, annualised: mean daily P&L / daily volatility × √365 (no
  risk-free rate; crypto trades every day). None with fewer than 2 days or no volatility.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stream_risk.replay.pnl import max_drawdown
from stream_risk.replay.timestamps import ms_to_iso

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DAYS_PER_YEAR = 365


def day_of(ms: int) -> str:
    """The UTC day of epoch ms, e.g. `2024-03-04`."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")


def days(ts: NDArray[np.int64]) -> NDArray[np.int64]:
    """The UTC midnights (epoch ms) of every day from the first point's to the last's."""
    if len(ts) == 0:
        return np.empty(0, dtype=np.int64)
    first = int(ts[0]) // DAY_MS * DAY_MS
    last = int(ts[-1]) // DAY_MS * DAY_MS
    return np.arange(first, last + DAY_MS, DAY_MS, dtype=np.int64)


def daily_pnl(
    ts: NDArray[np.int64], values: NDArray[np.float64], midnights: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Each day's P&L (the module doc) on the days starting at `midnights`."""
    if len(midnights) == 0:
        return np.empty(0)
    ends = np.searchsorted(ts, midnights + DAY_MS, "left") - 1  # last point of each day
    at_end = np.where(ends >= 0, values[np.maximum(ends, 0)] if len(values) else 0.0, 0.0)
    return np.asarray(np.diff(at_end, prepend=0.0), dtype=np.float64)


def daily_sums(
    ts: NDArray[np.int64], amounts: NDArray[np.float64], midnights: NDArray[np.int64]
) -> NDArray[np.float64]:
    """The sum of `amounts` at the points of each day (e.g. the hedge costs paid)."""
    if len(midnights) == 0:
        return np.empty(0)
    return daily_pnl(ts, np.cumsum(amounts), midnights)


def under_water(
    ts: NDArray[np.int64], values: NDArray[np.float64], end: int
) -> tuple[int, int, int, int]:
    """(longest spell ms, its start, its end, total ms) under water (the module doc)."""
    if len(ts) == 0:
        return 0, -1, -1, 0
    peak = np.maximum.accumulate(np.maximum(values, 0.0))
    below = values < peak
    nxt = np.append(ts[1:], max(end, int(ts[-1])))
    span = nxt - ts
    total = int(span[below].sum())
    best = (0, -1, -1)
    i = 0
    n = len(ts)
    while i < n:
        if not below[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and below[j + 1]:
            j += 1
        length = int(nxt[j] - ts[i])
        if length > best[0]:
            best = (length, int(ts[i]), int(nxt[j]))
        i = j + 1
    return best[0], best[1], best[2], total


def path_risk(
    ts: NDArray[np.int64],
    values: NDArray[np.float64],
    end: int,
    midnights: NDArray[np.int64],
) -> dict[str, Any]:
    """Final P&L, max drawdown and when, time under water, daily vol and return/risk."""
    final = float(values[-1]) if len(values) else 0.0
    mdd, peak_i, trough_i = max_drawdown(values)
    longest, l_from, l_to, total = under_water(ts, values, end)
    daily = daily_pnl(ts, values, midnights)
    vol: float | None = float(np.std(daily, ddof=1)) if len(daily) >= 2 else None
    ratio: float | None = None
    if vol is not None and vol > 0:
        ratio = float(np.mean(daily)) / vol * math.sqrt(DAYS_PER_YEAR)
    return {
        "final_pnl_usd": final,
        "max_drawdown_usd": mdd,
        "max_drawdown_peak": None if trough_i < 0 else ms_to_iso(int(ts[max(peak_i, 0)])),
        "max_drawdown_trough": None if trough_i < 0 else ms_to_iso(int(ts[trough_i])),
        "longest_under_water_hours": longest / HOUR_MS,
        "longest_under_water_from": None if l_from < 0 else ms_to_iso(l_from),
        "longest_under_water_to": None if l_to < 0 else ms_to_iso(l_to),
        "total_under_water_hours": total / HOUR_MS,
        "days": len(daily),
        "daily_vol_usd": vol,
        "return_risk": ratio,
    }
