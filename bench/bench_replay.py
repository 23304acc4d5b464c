"""Benchmark: offline replay, scalar path vs fast path, side by side on the same ticks.

    python -m bench.bench_replay [N_TICKS]        (default 1,000,000)

Two seeded workloads of N ticks each:

* `feed`: a tick feed of 4 assets, one tick per asset per second (N/4 seconds, ~2.9 days
  at 1M), prices a random walk at ~3 % daily vol, `volatility_1d` and spread from the feed
  every 5 minutes, funding every hour; 12 positions (3 per asset, long and short), each
  resized every ~2 hours.
* `candles`: one-minute candles of 4 assets (N/4 minutes), no vol in the data (estimated:
  EWMA span 60), 8 positions (2 per asset) resized every ~day. Vol moves every minute, so
  far more actions are published.

Each workload is replayed by both paths from the same prepared columns (reading the files
is not timed); the actions must be byte-identical (checked) and the engine counters equal.
Ticks/s = ticks / replay time, best of `REPEAT` for the fast path, one run of the scalar.
"""

from __future__ import annotations

import gc
import io
import sys
import time
from typing import Any

import numpy as np

from stream_risk.engine import Engine, EngineConfig
from stream_risk.engine.estimates import VolEstimator, estimate_series
from stream_risk.models import PositionMessage
from stream_risk.replay.fastpath import run_fast
from stream_risk.replay.positions import PositionRecord
from stream_risk.replay.runner import ActionLog, Timeline, run_scalar
from stream_risk.replay.ticks import Ticks, ffill

SEED = 20240611
T0 = 1_717_200_000_000  # 2024-06-01
ASSETS = ("BTC", "ETH", "SOL", "XRP")
PRICES = (67_000.0, 3_700.0, 165.0, 0.52)
REPEAT = 3


def _ticks(n: int, step_ms: int, with_vol: bool, rng: np.random.Generator) -> Ticks:
    per = n // len(ASSETS)
    n = per * len(ASSETS)
    k = np.arange(per)
    ts = np.repeat(T0 + k * step_ms, len(ASSETS)).astype(np.int64)
    asset = np.tile(np.arange(len(ASSETS), dtype=np.int32), per)
    step_vol = 0.03 / np.sqrt(86_400_000 / step_ms)
    rets = rng.standard_normal((per, len(ASSETS))) * step_vol
    price = (np.array(PRICES) * np.exp(np.cumsum(rets, axis=0))).reshape(-1)
    nan = np.full(n, np.nan)
    if with_vol:
        every = max(1, 300_000 // step_ms)  # vol and spread every 5 minutes
        vol_levels = np.clip(0.03 + 0.004 * rng.standard_normal((per, len(ASSETS))), 0.005, 0.2)
        spread_levels = np.round(np.clip(2 + rng.standard_normal((per, len(ASSETS))), 0.5, 9), 1)
        mask = (k % every == 0)[:, None] & np.ones(len(ASSETS), dtype=bool)
        vol = np.where(mask, vol_levels, np.nan).reshape(-1)
        spread = np.where(mask, spread_levels, np.nan).reshape(-1)
        hourly = (k % max(1, 3_600_000 // step_ms) == 0)[:, None] & np.ones(len(ASSETS), bool)
        funding = np.where(hourly, rng.uniform(-0.05, 0.05, (per, len(ASSETS))), np.nan)
        funding = funding.reshape(-1)
    else:
        vol, spread, funding = nan.copy(), np.full(n, 2.0), np.zeros(n)
    # Carry forward per asset (as the loader does), then estimate vol where absent.
    fields = [vol, spread, funding]
    for c in range(len(ASSETS)):
        m = asset == c
        starts = np.zeros(int(m.sum()), dtype=bool)
        starts[0] = True
        for f in fields:
            f[m] = ffill(f[m], starts)
        if not with_vol:
            vol[m] = estimate_series(VolEstimator(60, 20), ts[m], price[m])
    spread = np.where(np.isnan(spread), 2.0, spread)
    funding = np.where(np.isnan(funding), 0.0, funding)
    depth = np.full(n, 5e6)
    # What the "feed" gave (MarketState.given bits): everything but vol when it is estimated.
    given = np.full(n, 0b11111 if with_vol else 0b11110, dtype=np.int8)
    return Ticks("bench", list(ASSETS), asset, ts, price, vol, spread, funding, depth, depth, given)


def _positions(
    ticks: Ticks, per_asset: int, resize_ms: int, rng: np.random.Generator
) -> list[PositionRecord]:
    out = []
    t_end = int(ticks.ts[-1])
    for c, name in enumerate(ASSETS):
        price = PRICES[c]
        for j in range(per_asset):
            pid = f"{name}-{j}"
            side = 1 if j % 2 == 0 else -1
            base = 400_000.0 / price
            t = T0 + int(rng.integers(0, 60_000))
            while t < t_end:
                size = side * base * float(rng.uniform(0.5, 1.5))
                msg = PositionMessage(
                    position_id=pid,
                    asset=name,
                    size=size,
                    entry_price=price,
                    ts=t,
                    age_minutes=float(rng.uniform(0, 60)),
                )
                out.append(PositionRecord(pid, name, t, msg))
                t += int(resize_ms * rng.uniform(0.5, 1.5))
    return out


def workload(name: str, n: int) -> Timeline:
    rng = np.random.default_rng(SEED)
    if name == "feed":
        ticks = _ticks(n, 1_000, True, rng)
        return Timeline(ticks, _positions(ticks, 3, 2 * 3_600_000, rng), 0)
    ticks = _ticks(n, 60_000, False, rng)
    return Timeline(ticks, _positions(ticks, 2, 86_400_000, rng), 0)


def _replay(tl: Timeline, fast: bool) -> tuple[float, bytes, dict[str, int]]:
    buf = io.BytesIO()
    engine = Engine(EngineConfig())
    log = ActionLog(buf)
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        if fast:
            run_fast(tl, engine, log)
        else:
            run_scalar(tl, [engine], [log])
        dt = time.perf_counter() - t
    finally:
        gc.enable()
    return dt, buf.getvalue(), engine.stats.as_dict()


def run(n: int = 1_000_000) -> dict[str, Any]:
    """Both workloads, both paths; ticks/s and whether the outputs are identical."""
    results: dict[str, Any] = {"ticks": n}
    for name in ("feed", "candles"):
        tl = workload(name, n)
        fast_s, fast_out, fast_stats = min(
            (_replay(tl, True) for _ in range(REPEAT)), key=lambda r: r[0]
        )
        scalar_s, scalar_out, scalar_stats = _replay(tl, False)
        ticks = len(tl.ticks)
        results[name] = {
            "ticks": ticks,
            "position_records": len(tl.positions),
            "actions": fast_out.count(b"\n"),
            "assessments": fast_stats["assessments"],
            "scalar_s": scalar_s,
            "fast_s": fast_s,
            "scalar_ticks_per_s": ticks / scalar_s,
            "fast_ticks_per_s": ticks / fast_s,
            "speedup": scalar_s / fast_s,
            "identical": fast_out == scalar_out and fast_stats == scalar_stats,
        }
    return results


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    res = run(n)
    print(f"offline replay, {n:,} ticks per workload (best of {REPEAT} for fast, 1 scalar run)")
    print(
        f"{'workload':<9} {'actions':>8} {'assessments':>12} {'scalar ticks/s':>15} "
        f"{'fast ticks/s':>13} {'speed-up':>9}  identical"
    )
    for name in ("feed", "candles"):
        r = res[name]
        print(
            f"{name:<9} {r['actions']:>8,} {r['assessments']:>12,} "
            f"{r['scalar_ticks_per_s']:>15,.0f} {r['fast_ticks_per_s']:>13,.0f} "
            f"{r['speedup']:>8.1f}x  {r['identical']}"
        )
        if not r["identical"]:
            print(f"!! {name}: the fast path's output differs from the scalar path's")


if __name__ == "__main__":
    main()
