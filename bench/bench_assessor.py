"""Benchmark: the assessor against a baseline written in the reference's style.

    python -m bench.bench_assessor [N] [REPEAT]

A fixed, seeded mix of N requests (longs, shorts, flats; every action band; hedges too
expensive to place; some per-request config) is assessed by

* ours, core:        `assess(...)` on pre-validated floats (reasoning stays lazy);
* ours, core+dict:   the same plus `to_dict()` (reasoning formatted);
* ours, full path:   `AssessRequest.model_validate(dict)` + assess + `response()` dict;
* baseline, core:    `assess_inventory_risk(...)` on pre-built dataclasses;
* baseline, full:    request model → dataclasses → recommendation → response model → dict.

Each is timed over the whole mix with `time.perf_counter`, garbage collection off, best of
REPEAT, and reported in µs per call with the ratio baseline / ours. Before timing, every
request's answers are compared (action, hedge_pct, instrument, re-evaluation, and the
score to 1e-9): a disagreement is printed loudly and reported in the result.
"""

from __future__ import annotations

import gc
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from bench import baseline_reference as ref
from stream_risk.api import assess_args, assess_request, response
from stream_risk.assessor import assess
from stream_risk.models import AssessRequest

SEED = 20240611


def make_requests(n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """N varied `/assess` bodies, the same for a given seed."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        price = 10 ** rnd.uniform(0, 5)
        notional = 10 ** rnd.uniform(4, 7.3)
        side = rnd.random()
        size = 0.0 if side < 0.05 else notional / price * (1 if side < 0.525 else -1)
        vol = 0.0 if rnd.random() < 0.05 else rnd.uniform(0.0, 0.12)
        r = rnd.random()
        spread = rnd.uniform(30, 120) if r < 0.12 else rnd.uniform(0, 10)
        funding = rnd.uniform(-0.3, 0.3)
        if rnd.random() < 0.2:
            funding = rnd.choice((-1, 1)) * rnd.uniform(0.5, 4.0)
        position: dict[str, Any] = {
            "asset": rnd.choice(("BTC", "ETH", "SOL", "XRP", "DOGE")),
            "size": size,
            "entry_price": price * rnd.uniform(0.9, 1.1),
            "age_minutes": rnd.uniform(0, 600),
        }
        if rnd.random() < 0.3:
            position["unrealized_pnl"] = rnd.uniform(-1e5, 1e5)
        body: dict[str, Any] = {
            "position": position,
            "market": {
                "current_price": price,
                "volatility_1d": vol,
                "spot_spread_bps": spread,
                "perp_funding_rate": funding,
                "bid_depth_usd": 10 ** rnd.uniform(5.3, 7.7),
                "ask_depth_usd": 10 ** rnd.uniform(5.3, 7.7),
            },
        }
        if i % 4 == 3:
            body["config"] = {
                "max_loss_pct": rnd.uniform(0.02, 0.2),
                "max_hold_minutes": rnd.uniform(60, 1000),
                "max_hedge_cost_bps": rnd.uniform(10, 100),
            }
        out.append(body)
    return out


# ------------------------------------------------------------------ prepared inputs
def ours_args(bodies: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [assess_args(AssessRequest.model_validate(b)) for b in bodies]


def baseline_args(
    bodies: Sequence[dict[str, Any]],
) -> list[tuple[ref.InventoryPosition, ref.MarketConditions, ref.RiskConfig | None]]:
    args = []
    for b in bodies:
        p, m, c = b["position"], b["market"], b.get("config")
        args.append(
            (
                ref.InventoryPosition(**p),
                ref.MarketConditions(**m),
                None if c is None else ref.RiskConfig(**c),
            )
        )
    return args


# ------------------------------------------------------------------ the paths
def now_ms() -> int:
    return int(time.time() * 1000)


def ours_full(body: dict[str, Any]) -> dict[str, Any]:
    return response(assess_request(AssessRequest.model_validate(body)), now_ms())


def ours_core_loop(args: list[tuple[Any, ...]]) -> None:
    for a in args:
        assess(*a)


def ours_core_dict_loop(args: list[tuple[Any, ...]]) -> None:
    for a in args:
        assess(*a).to_dict()


def ours_full_loop(bodies: list[dict[str, Any]]) -> None:
    for b in bodies:
        ours_full(b)


def baseline_core_loop(
    args: list[tuple[ref.InventoryPosition, ref.MarketConditions, ref.RiskConfig | None]],
) -> None:
    for p, m, c in args:
        ref.assess_inventory_risk(p, m, c)


def baseline_full_loop(bodies: list[dict[str, Any]]) -> None:
    for b in bodies:
        ref.handle_assess(b)


def best_of(fn: Callable[[Any], None], data: Any, repeat: int) -> float:
    """Best wall time (s) of `repeat` passes, with the GC off like timeit."""
    fn(data)  # warm-up
    best = math.inf
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(data)
            best = min(best, time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return best


# ------------------------------------------------------------------ agreement
def compare(bodies: Sequence[dict[str, Any]]) -> tuple[int, Counter[str], int]:
    """(mismatches, actions seen, too-expensive HOLDs), printing each mismatch loudly."""
    mismatches = 0
    actions: Counter[str] = Counter()
    expensive = 0
    for i, b in enumerate(bodies):
        ours = ours_full(b)
        base = ref.handle_assess(b)
        actions[ours["action"]] += 1
        if ours["reasoning"].startswith("Hedge cost too high"):
            expensive += 1
        problems = []
        for key in ("action", "hedge_pct", "re_evaluate_minutes"):
            if ours[key] != base[key]:
                problems.append(f"{key}: ours {ours[key]!r} != baseline {base[key]!r}")
        if not math.isclose(ours["risk_score"], base["risk_score"], rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"risk_score: ours {ours['risk_score']!r} != {base['risk_score']!r}")
        oh, bh = ours["suggested_hedge"], base["suggested_hedge"]
        if (oh is None) != (bh is None) or (oh and bh and oh["instrument"] != bh["instrument"]):
            problems.append(f"suggested_hedge: ours {oh!r} != baseline {bh!r}")
        if problems:
            mismatches += 1
            print(f"!!!! MISMATCH on request {i}: {b}", file=sys.stderr)
            for p in problems:
                print(f"!!!!   {p}", file=sys.stderr)
    if mismatches:
        bar = "!" * 72
        print(
            f"{bar}\n!!!! {mismatches} of {len(bodies)} requests DISAGREE with the baseline",
            file=sys.stderr,
        )
        print(bar, file=sys.stderr)
    return mismatches, actions, expensive


def run(n: int = 10_000, repeat: int = 5) -> dict[str, Any]:
    bodies = make_requests(n)
    mismatches, actions, expensive = compare(bodies)
    o_args, b_args = ours_args(bodies), baseline_args(bodies)

    per_call = 1e6 / n
    ours_core = best_of(ours_core_loop, o_args, repeat) * per_call
    ours_core_dict = best_of(ours_core_dict_loop, o_args, repeat) * per_call
    ours_full_us = best_of(ours_full_loop, bodies, repeat) * per_call
    base_core = best_of(baseline_core_loop, b_args, repeat) * per_call
    base_full = best_of(baseline_full_loop, bodies, repeat) * per_call
    return {
        "n": n,
        "repeat": repeat,
        "python": sys.version.split()[0],
        "actions": dict(sorted(actions.items())),
        "too_expensive_holds": expensive,
        "mismatches": mismatches,
        "ours_core_us": ours_core,
        "ours_core_to_dict_us": ours_core_dict,
        "ours_full_us": ours_full_us,
        "baseline_core_us": base_core,
        "baseline_full_us": base_full,
        "core_ratio": base_core / ours_core,
        "core_to_dict_ratio": base_core / ours_core_dict,
        "full_ratio": base_full / ours_full_us,
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        f"assessor benchmark: {r['n']} requests, best of {r['repeat']}, Python {r['python']}",
        f"mix: {r['actions']}, too-expensive HOLDs: {r['too_expensive_holds']}",
        f"agreement with baseline: {'OK' if r['mismatches'] == 0 else 'MISMATCHES: '}"
        + ("" if r["mismatches"] == 0 else str(r["mismatches"])),
        "",
        "| path | ours µs/call | baseline µs/call | baseline / ours |",
        "|---|---:|---:|---:|",
        f"| core (assess on floats vs dataclasses) | {r['ours_core_us']:.2f} "
        f"| {r['baseline_core_us']:.2f} | {r['core_ratio']:.1f}x |",
        f"| core + to_dict (reasoning formatted) | {r['ours_core_to_dict_us']:.2f} "
        f"| {r['baseline_core_us']:.2f} | {r['core_to_dict_ratio']:.1f}x |",
        f"| full (validate dict + assess + response dict) | {r['ours_full_us']:.2f} "
        f"| {r['baseline_full_us']:.2f} | {r['full_ratio']:.1f}x |",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 10_000
    repeat = int(argv[1]) if len(argv) > 1 else 5
    r = run(n, repeat)
    print(report(r))
    return 1 if r["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
