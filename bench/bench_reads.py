"""Benchmark 8: sidecar reads of a big table, and what they cost the event loop.

    python -m bench.bench_reads [N]          (default 1000000)

In this process: an `Engine` (the pure core) with N positions on 1,000 assets, loaded the
way the Kafka shell loads them (`codec.decode_position`, batches of 10,000, as in
bench_memory) and assessed once (a full tick per asset: every position keeps its last
action), the table frozen out of the collector's reach and the collector tuned as the
processor does (`tune_gc`, `gc.freeze`); then the sidecar app (`create_app` over an
`EngineState`) served on a loopback port by aiohttp, with a *loop monitor*: a coroutine
that sleeps 1 ms and records how late it wakes (the longest hold of the loop by anything
else).

A client in another process (so its own work is not on the server's loop) runs, one after
the other:

1. `/healthz` alone: the baseline latency, and the monitor's lag with nothing to do;
2. `GET /positions?limit=100` at random cursors;
3. `GET /positions?action=LIQUIDATE&limit=100` at random cursors (a sparse filter: the scan
   budget ends its pages);
4. `GET /positions?limit=1000` (the largest page: read in chunks);
5. `GET /positions/{id}` of random ids;
6. `GET /exposure`;
7. reads under load: two clients looping over 2-4 while `/healthz` is probed every 10 ms.

Reported: p50/p99 of each read, the loop's longest hold during the reads (phases 2-7; the
target is ≤ 5 ms at 1M positions), and `/healthz` under reads beside `/healthz` alone.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import Row, percentile

ROOT = Path(__file__).resolve().parent.parent
N_ASSETS = 1_000
T0 = 1_717_200_000_000
#: The loop monitor's period.
TICK_S = 0.001
TARGET_HOLD_MS = 5.0


def build_engine(n: int) -> Any:
    """N positions loaded and assessed once (see the module's doc)."""
    import orjson

    from bench.bench_engine import full_tick, load_positions
    from stream_risk.engine import Engine, EngineConfig, TickEvent
    from stream_risk.engine.events import Lineage
    from stream_risk.models import MarketTick

    engine = Engine(EngineConfig())
    gc.disable()  # as a rebuild does: loading only adds long-lived objects
    load_positions(engine, n, N_ASSETS, T0 - 60_000)
    rnd = random.Random(1)
    for a in range(N_ASSETS):
        tick = MarketTick.model_validate_json(orjson.dumps(full_tick(a, T0, rnd)))
        engine.step([TickEvent(tick, Lineage("market-ticks", 0, a, T0))], T0)
    gc.enable()
    return engine


async def _serve_and_measure(engine: Any, n: int, quick: bool) -> dict[str, Any]:
    from aiohttp import web

    from stream_risk.sidecar import create_app
    from stream_risk.state import EngineState

    app = create_app(EngineState(engine))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    #: (monotonic time woken, wall lag s, CPU s the loop's thread used in between)
    samples: list[tuple[float, float, float]] = []
    running = True
    gc_pauses: list[tuple[float, float]] = []  # (monotonic end, seconds)
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[0] = time.monotonic()
        else:
            now = time.monotonic()
            gc_pauses.append((now, now - gc_start[0]))

    async def monitor() -> None:
        loop = asyncio.get_running_loop()
        cpu = time.thread_time
        while running:
            t, c = loop.time(), cpu()
            await asyncio.sleep(TICK_S)
            now = loop.time()
            samples.append((now, now - t - TICK_S, cpu() - c))

    # The longest single callback (a task's step between two awaits): the loop's hold by
    # one piece of code, in CPU time of the loop's thread, so that other processes taking
    # this shared machine's cores do not count (they do in the monitor's wall-clock lag).
    holds: list[tuple[float, float, str]] = []  # (monotonic end, CPU s, what) over 0.5 ms
    handle_run = asyncio.events.Handle._run

    def timed_run(self: asyncio.events.Handle) -> None:
        what = _what(self)
        c = time.thread_time()
        handle_run(self)
        took = time.thread_time() - c
        if took > 0.0005:
            holds.append((time.monotonic(), took, what))

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)

    mon = asyncio.create_task(monitor())
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_reads_client",
            f"http://127.0.0.1:{port}",
            str(n),
            "1" if quick else "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"read client failed:\n{err.decode()[-3000:]}")
        phases: list[dict[str, Any]] = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        running = False
        await mon
        gc.callbacks.remove(on_gc)
        asyncio.events.Handle._run = handle_run  # type: ignore[method-assign]
        await runner.cleanup()
    result: dict[str, Any] = {"positions": n, "phases": {}}
    for ph in phases:
        lat = sorted(ph["lat"])
        lags = [lag for t, lag, _ in samples if ph["t0"] <= t <= ph["t1"]]
        cpus = [c for t, _, c in samples if ph["t0"] <= t <= ph["t1"]]
        gcs = [d for t, d in gc_pauses if ph["t0"] <= t <= ph["t1"]]
        held = [d for t, d, _ in holds if ph["t0"] <= t <= ph["t1"]]
        result["phases"][ph["name"]] = {
            "requests": len(lat),
            "p50_ms": percentile(lat, 0.5) * 1e3,
            "p99_ms": percentile(lat, 0.99) * 1e3,
            "max_ms": lat[-1] * 1e3 if lat else float("nan"),
            "max_loop_hold_ms": max(lags, default=0.0) * 1e3,
            "loop_lag_p99_ms": percentile(sorted(lags), 0.99) * 1e3 if lags else 0.0,
            "max_loop_cpu_ms": max(cpus, default=0.0) * 1e3,
            "max_callback_ms": max(held, default=0.0) * 1e3,
            "gc_runs": len(gcs),
            "gc_max_ms": max(gcs, default=0.0) * 1e3,
            **({"reads": ph["reads"]} if "reads" in ph else {}),
        }
    reads = [v for k, v in result["phases"].items() if k != "healthz"]
    during = [(d, w) for t, d, w in holds if phases[1]["t0"] <= t <= phases[-1]["t1"]]
    during.sort(reverse=True)
    result["longest_holds"] = [(round(d * 1e3, 1), w) for d, w in during[:5]]
    result["holds_over_target"] = sum(1 for d, _ in during if d * 1e3 > TARGET_HOLD_MS)
    result["callbacks_over_half_ms"] = len(during)
    result["max_loop_hold_ms"] = max(v["max_loop_hold_ms"] for v in reads)
    lags = sorted(lag for t, lag, _ in samples if phases[1]["t0"] <= t <= phases[-1]["t1"])
    result["loop_lag_p99_ms"] = percentile(lags, 0.99) * 1e3 if lags else 0.0
    result["max_loop_cpu_ms"] = max(v["max_loop_cpu_ms"] for v in reads)
    result["max_callback_ms"] = max(v["max_callback_ms"] for v in reads)
    return result


def _what(handle: asyncio.events.Handle) -> str:
    """What a callback is: the request a task serves (its path), or the callback's name."""
    cb = handle._callback  # type: ignore[attr-defined]
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        frame = getattr(task.get_coro(), "cr_frame", None)
        request = frame.f_locals.get("request") if frame is not None else None
        if request is not None:
            return f"{request.method} {request.path_qs[:48]}"
        return task.get_name()
    return getattr(cb, "__qualname__", type(cb).__name__)


def measure(n: int, quick: bool = False) -> dict[str, Any]:
    """In this process (a fresh one: `python -m bench` runs each benchmark so)."""
    from bench._common import rss_bytes
    from stream_risk.kafka.config import tune_gc

    t0 = time.perf_counter()
    engine = build_engine(n)
    built = time.perf_counter() - t0
    tune_gc()
    gc.collect()
    gc.freeze()  # as the processor does after a rebuild: the table is out of the GC's walk
    result = asyncio.run(_serve_and_measure(engine, n, quick))
    result["build_s"] = built
    result["rss_mb"] = rss_bytes() / 2**20
    result["with_action"] = sum(1 for p in engine.table.positions.values() if p.last is not None)
    result["liquidate"] = sum(
        1 for p in engine.table.positions.values() if p.last and p.last.action == "LIQUIDATE"
    )
    return result


def run(quick: bool = False, n: int | None = None) -> dict[str, Any]:
    return measure(n or (100_000 if quick else 1_000_000), quick)


def rows(r: dict[str, Any]) -> list[Row]:
    n = r["positions"]
    ph = r["phases"]
    base = ph["healthz"]
    loaded = ph["healthz_under_reads"]
    hold = r["max_callback_ms"]

    def lat(name: str) -> str:
        x = ph[name]
        return f"p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms"

    return [
        Row(
            "9",
            f"longest event-loop hold during reads, {n:,} positions (one callback, CPU time)",
            f"{hold:.1f} ms",
            f"{base['max_callback_ms']:.1f} ms (`/healthz` alone)",
            "–",
            f"≤ {TARGET_HOLD_MS:g} ms",
            hold <= TARGET_HOLD_MS,
        ),
        Row(
            "9",
            "1 ms ticker's longest wake-up lag during reads (wall clock: counts other "
            "processes on the shared cores too)",
            f"max {r['max_loop_hold_ms']:.1f} ms, p99 {r['loop_lag_p99_ms']:.1f} ms",
            f"max {base['max_loop_hold_ms']:.1f} ms, p99 {base['loop_lag_p99_ms']:.1f} ms "
            "(`/healthz` alone)",
        ),
        Row("9", "GET /positions?limit=100 at random cursors", lat("page")),
        Row("9", "GET /positions?action=LIQUIDATE&limit=100 (sparse: budget)", lat("filtered")),
        Row("9", "GET /positions?limit=1000 (read in chunks of 50)", lat("page1000")),
        Row("9", "GET /positions/{id}", lat("one")),
        Row("9", "GET /exposure (the engine's sums, no row)", lat("exposure")),
        Row(
            "9",
            f"GET /healthz while 2 clients read pages ({loaded.get('reads', 0):,} reads)",
            f"p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms, "
            f"max {loaded['max_ms']:.1f} ms",
            f"p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms, "
            f"max {base['max_ms']:.1f} ms (alone)",
        ),
    ]


def notes(r: dict[str, Any]) -> list[str]:
    ph = r["phases"]
    per = ", ".join(
        f"{k} {v['max_callback_ms']:.1f} / {v['max_loop_hold_ms']:.1f} ms" for k, v in ph.items()
    )
    gcs = sum(v["gc_runs"] for v in ph.values())
    gc_max = max(v["gc_max_ms"] for v in ph.values())
    return [
        f"9: pure core in-process, {r['positions']:,} positions on {N_ASSETS:,} assets "
        f"({r['with_action']:,} with an action, {r['liquidate']:,} LIQUIDATE), built in "
        f"{r['build_s']:.0f} s, RSS {r['rss_mb']:,.0f} MiB; the sidecar app served by aiohttp "
        "in the same process, the client in another. Longest hold by one callback / "
        f"ticker lag per phase: {per}; {gcs} collections during the reads "
        f"(longest {gc_max:.1f} ms). Callbacks over {TARGET_HOLD_MS:g} ms during the reads: "
        f"{r['holds_over_target']} of {r['callbacks_over_half_ms']:,} over 0.5 ms; the "
        "longest: " + "; ".join(f"{d} ms {w}" for d, w in r["longest_holds"]) + ". CPU time "
        "of the loop's thread counts the kernel's work in it too (loopback sends)."
    ]


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else None
    r = run(n=n)
    print(json.dumps(r, indent=2))
    for row in rows(r):
        print(row)
    for note in notes(r):
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
