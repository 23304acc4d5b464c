"""Net hedging vs each position hedged on its own, on a simulated two-sided book (issue 14,
docs/design.md D17b).

    python -m bench.bench_net_hedging [N_POSITIONS] [DAYS] [SEED]     (default 200 2 20261130)

Four assets (the demo's BTC, ETH, SOL, XRP: starting price, base daily vol, spread, depth),
one-minute ticks for DAYS days: log-price a GBM whose daily vol is the asset's base vol times
a regime multiplier (calm 0.7, normal 1, stressed 2.5, redrawn every ~6 hours, the same
regime for all assets); the ticks carry price, spread and depths, no vol (estimated by the
engine, as on the shipped candles). N positions spread evenly over the assets, each long or
short at random (fair coin), notional log-normal around $250k, entry within 0.2 % of the
price, opened at a random minute of the first day; a third of them closed at a random later
minute. The data goes through `stream-risk replay` (fast path) and the report's
`net_hedging` section is printed.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream_risk.demo.market import ASSETS
from stream_risk.replay.cli import main as replay_main

T0 = 1_717_200_000_000  # 2024-06-01
MIN = 60_000
REGIMES = (0.7, 1.0, 2.5)


def simulate(n_positions: int, days: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    specs = ASSETS[:4]
    n = days * 1440
    mult = np.empty(n)
    i = 0
    while i < n:
        span = int(rng.exponential(360)) + 30
        mult[i : i + span] = REGIMES[int(rng.integers(len(REGIMES)))]
        i += span
    ticks: list[dict[str, Any]] = []
    prices: dict[str, np.ndarray] = {}
    for s in specs:
        sigma = s.daily_vol * mult / math.sqrt(1440)
        steps = rng.normal(-0.5 * sigma**2, sigma)
        steps[0] = 0.0
        prices[s.symbol] = s.price * np.exp(np.cumsum(steps))
    for k in range(n):
        for s in specs:
            ticks.append(
                {
                    "asset": s.symbol,
                    "ts": T0 + k * MIN,
                    "current_price": round(float(prices[s.symbol][k]), 6),
                    "spot_spread_bps": s.spread_bps,
                    "bid_depth_usd": s.depth_usd,
                    "ask_depth_usd": s.depth_usd,
                }
            )
    positions: list[dict[str, Any]] = []
    for j in range(n_positions):
        s = specs[j % len(specs)]
        k_open = int(rng.integers(0, 1440))
        price = float(prices[s.symbol][k_open])
        notional = float(rng.lognormal(math.log(250_000), 0.6))
        side = 1.0 if rng.random() < 0.5 else -1.0
        size = side * float(f"{notional / price:.4g}")
        pid = f"p{j:03d}"
        positions.append(
            {
                "position_id": pid,
                "asset": s.symbol,
                "size": size,
                "entry_price": round(price * (1 + rng.normal(0, 0.002)), 6),
                "ts": T0 + k_open * MIN,
            }
        )
        if rng.random() < 1 / 3:
            k_close = int(rng.integers(k_open + 1, n))
            positions.append({"position_id": pid, "closed": True, "ts": T0 + k_close * MIN})
    positions.sort(key=lambda p: p["ts"])
    return [orjson.dumps(t) for t in ticks], [orjson.dumps(p) for p in positions]


def run(n_positions: int = 200, days: int = 2, seed: int = 20261130) -> dict[str, Any]:
    ticks, positions = simulate(n_positions, days, seed)
    with tempfile.TemporaryDirectory() as d:
        tp, pp, out = Path(d, "ticks.jsonl"), Path(d, "positions.jsonl"), Path(d, "out")
        tp.write_bytes(b"\n".join(ticks) + b"\n")
        pp.write_bytes(b"\n".join(positions) + b"\n")
        t = time.perf_counter()
        rc = replay_main(
            ["--ticks", str(tp), "--positions", str(pp), "--out", str(out), "--no-progress"]
        )
        seconds = time.perf_counter() - t
        if rc != 0:
            raise SystemExit(rc)
        report = orjson.loads((out / "report.json").read_bytes())
    nh: dict[str, Any] = report["net_hedging"]
    return {
        "ticks": len(ticks),
        "position_records": len(positions),
        "seconds": seconds,
        "net_hedging": nh,
    }


def main() -> None:
    args = [int(a) for a in sys.argv[1:]]
    r = run(*args)
    nh = r["net_hedging"]
    each, net = nh["per_position"], nh["net"]
    print(
        f"\n{r['ticks']:,} ticks, {r['position_records']} position records, "
        f"replay + report {r['seconds']:.2f} s"
    )
    print(f"{'':34}{'each on its own':>18}{'net hedging':>18}")
    for k in (
        "hedge_cost_usd",
        "hedge_changes",
        "traded_notional_usd",
        "final_pnl",
        "max_drawdown",
    ):
        print(f"{k:34}{each[k]:>18,.2f}{net[k]:>18,.2f}")
    pct = nh["saving_pct"]
    print(f"saving: {nh['saving_usd']:,.2f} USD ({pct:.1f} %)" if pct is not None else "")
    for a, v in nh["net_by_asset"].items():
        print(f"  {a}: net hedge cost {v['hedge_cost_usd']:,.2f}, {v['hedge_changes']} changes")


if __name__ == "__main__":
    main()
