"""The rebuild's load path in-process, no broker: what benchmark 7 spends beyond reading.

    python -m bench.bench_load [--n 1000000] [--mode events|rows|both] [--profile]

N positions (`bench_engine.position_records`, 1 % with a config of their own) as records of
6 partitions, fed in batches of 10,000 of one partition (as `read_to_end` feeds them), to

- `events`: `codec.decode_position` per record + `Engine.load` (the shell's path so far);
- `rows`: `codec.decode_position_rows` + `Engine.load_rows` (the batch API).

Then `Engine.settle` of every partition (no market: every position waits). Prints µs per
record of the decode + load and of the settle; `--profile` also prints cProfile's top
functions of the decode + load. The collector is off while loading, as in the shell.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.bench_engine import position_records
from stream_risk.engine import Engine
from stream_risk.kafka.codec import DeadLetter, decode_position, decode_position_rows

PARTITIONS = 6
BATCH = 10_000
T0 = 1_700_000_000_000


@dataclass(slots=True)
class Record:
    """The parts of an aiokafka ConsumerRecord the codec reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def batches(n: int) -> list[tuple[int, list[Record]]]:
    """The records of n positions as (partition, batch) in the order a read feeds them."""
    parts: list[list[Record]] = [[] for _ in range(PARTITIONS)]
    for i, rec in enumerate(position_records(n, 1_000, T0 - 60_000)):
        p = i % PARTITIONS
        parts[p].append(Record("positions", p, len(parts[p]), T0 - 60_000, rec.key, rec.value))
    out: list[tuple[int, list[Record]]] = []
    longest = max(len(recs) for recs in parts)
    for start in range(0, longest, BATCH):
        for p, recs in enumerate(parts):
            if start < len(recs):
                out.append((p, recs[start : start + BATCH]))
    return out


def load_events(engine: Engine, feed: list[tuple[int, list[Record]]]) -> int:
    dead = 0
    for _p, recs in feed:
        events = []
        for rec in recs:
            ev = decode_position(rec)
            if isinstance(ev, DeadLetter):
                dead += 1
            else:
                events.append(ev)
        dead += len(engine.load(events, T0))
    return dead


def load_rows(engine: Engine, feed: list[tuple[int, list[Record]]]) -> int:
    dead_letters: list[DeadLetter] = []
    rejected = 0
    for p, recs in feed:
        rows = decode_position_rows(recs, dead_letters)
        rejected += len(engine.load_rows("positions", p, rows, T0))
    return len(dead_letters) + rejected


MODES: dict[str, Callable[[Engine, list[tuple[int, list[Record]]]], int]] = {
    "events": load_events,
    "rows": load_rows,
}


def run(mode: str, feed: list[tuple[int, list[Record]]], n: int, profile: bool) -> None:
    engine = Engine()
    gc.collect()
    gc.disable()
    try:
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        dead = MODES[mode](engine, feed)
        if prof is not None:
            prof.disable()
        t1 = time.perf_counter()
        for p in range(PARTITIONS):
            engine.settle(p, T0)
        t2 = time.perf_counter()
    finally:
        gc.enable()
    assert len(engine.table.positions) == n and dead == 0, (len(engine.table.positions), dead)
    assert len(engine.table.ids) == n
    print(
        f"{mode:>6}: load {(t1 - t0) / n * 1e6:.2f} µs/record ({t1 - t0:.2f} s), "
        f"settle {(t2 - t1) / n * 1e6:.2f} µs/record ({t2 - t1:.2f} s)"
        + (" [profiled]" if profile else "")
    )
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--mode", choices=[*MODES, "both"], default="both")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    feed = batches(args.n)
    for mode in MODES if args.mode == "both" else [args.mode]:
        run(mode, feed, args.n, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
