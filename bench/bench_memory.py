"""Benchmark 6: memory per tracked position in the pure core (RSS growth).

    python -m bench.bench_memory [N ...]        (default 100000 1000000)

Each size runs in a fresh interpreter (a subprocess), so nothing else lives in its heap:

1. RSS is read (from /proc) after the imports and a collection;
2. N positions on 1,000 assets are decoded from their JSON bytes the way the Kafka shell
   decodes them (`codec.decode_position`) and loaded into an `Engine` in batches of
   10,000 (as a rebuild does): RSS growth / N = **loaded**;
3. three rounds of one tick per asset (a full tick, then two price moves of ~1 %) are
   stepped through the engine, one asset at a time: every position is assessed three
   times and keeps what a running engine keeps per position (its last published action,
   for `GET /positions`, and its re-evaluation timer, whose superseded heap entries
   accumulate as they do live); the actions themselves are dropped, as the shell drops
   them once acknowledged: RSS growth / N = **tracked** (the figure against the 1 KiB
   target).

RSS counts what the process really holds: object headers, dict tables, allocator slack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench._common import Row

ROOT = Path(__file__).resolve().parent.parent
N_ASSETS = 1_000
T0 = 1_717_200_000_000
#: Rounds of one tick per asset: every position is assessed this many times, so its timer
#: entries churn (stale heap entries are compacted away at 2x the table) as they do live.
ROUNDS = 3


def measure(n: int) -> dict[str, Any]:
    """In this process (call it in a fresh one): RSS growth per position, loaded and tracked."""
    import gc
    import random

    import orjson

    from bench._common import rss_bytes
    from bench.bench_engine import full_tick, load_positions
    from stream_risk.engine import Engine, EngineConfig, TickEvent
    from stream_risk.engine.events import Lineage
    from stream_risk.models import MarketTick

    rnd = random.Random(1)
    ticks = [full_tick(a, T0, rnd) for a in range(N_ASSETS)]
    engine = Engine(EngineConfig())
    gc.collect()
    rss0 = rss_bytes()
    load_positions(engine, n, N_ASSETS, T0 - 60_000)
    gc.collect()
    rss_loaded = rss_bytes()
    assessed = 0
    for r in range(ROUNDS):
        for a, body in enumerate(ticks):
            if r:
                body = {**body, "ts": T0 + r * 1_000, "current_price": body["current_price"]}
                body["current_price"] *= 1 + rnd.gauss(0, 0.01)
            tick = MarketTick.model_validate_json(orjson.dumps(body))
            lineage = Lineage("market-ticks", 0, r * N_ASSETS + a, T0)
            res = engine.step([TickEvent(tick, lineage)], T0 + r * 1_000)
            assessed += res.assessments
            del res
    gc.collect()
    rss_tracked = rss_bytes()
    table = len(engine.table.positions)
    with_action = sum(1 for p in engine.table.positions.values() if p.last is not None)
    return {
        "positions": n,
        "table": table,
        "assessed": assessed,
        "with_last_action": with_action,
        "rss_base_mb": rss0 / 2**20,
        "loaded_bytes_per_position": (rss_loaded - rss0) / n,
        "tracked_bytes_per_position": (rss_tracked - rss0) / n,
    }


def measure_in_subprocess(n: int) -> dict[str, Any]:
    code = f"import json; from bench.bench_memory import measure; print(json.dumps(measure({n})))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory benchmark ({n:,}) failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool = False, sizes: list[int] | None = None) -> dict[str, Any]:
    sizes = sizes or ([20_000, 100_000] if quick else [100_000, 1_000_000])
    return {"runs": [measure_in_subprocess(n) for n in sizes]}


def rows(r: dict[str, Any]) -> list[Row]:
    out = []
    for x in r["runs"]:
        ok = x["table"] == x["positions"] == x["with_last_action"]
        tracked = x["tracked_bytes_per_position"]
        out.append(
            Row(
                "6",
                f"memory per tracked position, {x['positions']:,} positions (RSS growth; "
                f"loaded only: {x['loaded_bytes_per_position']:,.0f} B)"
                + ("" if ok else " — NOT EVERY POSITION TRACKED"),
                f"{tracked:,.0f} B",
                "–",
                "–",
                "≤ 1 KiB",
                ok and tracked <= 1024,
            )
        )
    return out


def notes(r: dict[str, Any]) -> list[str]:
    return [
        "6: pure core in a fresh interpreter per size; 'tracked' = loaded, then assessed "
        f"{ROUNDS} times (last action kept for GET /positions, timer armed, superseded "
        "timer entries awaiting compaction as live); base RSS "
        + ", ".join(f"{x['rss_base_mb']:.0f} MiB" for x in r["runs"])
        + "."
    ]


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or None
    r = run(sizes=sizes)
    print(json.dumps(r, indent=2))
    for row in rows(r):
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
