"""Policy sweep: every combination of some config values, replayed over the same data.

`--sweep max_loss_pct=0.03,0.05,0.08 --sweep max_hedge_cost_bps=20,50` gives 3 × 2 = 6
policies, each the base risk config with those fields set (validated as a whole). The data
is read, validated and prepared once; on the scalar path every policy's engine is driven in
lockstep in one pass over the events (each event built once), on the fast path each policy
is replayed from the same prepared columns. Each policy gets the report's summary numbers:
hedge cost and turnover (hedge changes, traded notional) against the drawdown it saved, so
e.g. `--sweep hysteresis_points=0,1,2,5` shows what damping the flapping costs in drawdown;
and the net-hedging path's cost, drawdown and final P&L beside them, with its saving
(`net_pnl`, issue 14).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from stream_risk.config import RiskConfig
from stream_risk.engine import Engine, EngineConfig
from stream_risk.replay.errors import SourceError, first_error
from stream_risk.replay.fastpath import run_fast
from stream_risk.replay.net_pnl import net_hedging
from stream_risk.replay.pnl import position_paths
from stream_risk.replay.report import summarize
from stream_risk.replay.runner import ActionLog, Progress, Timeline, run_scalar


@dataclass(frozen=True, slots=True)
class Policy:
    label: str
    overrides: dict[str, Any]
    risk: RiskConfig


def parse_sweeps(specs: Sequence[str] | None) -> list[tuple[str, list[Any]]]:
    """`["max_loss_pct=0.03,0.05", ...]` -> [(field, [values])] (numbers parsed)."""
    out: list[tuple[str, list[Any]]] = []
    seen: set[str] = set()
    for spec in specs or ():
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise SourceError(f"--sweep {spec!r}: expected FIELD=V1,V2,...")
        if name not in RiskConfig.model_fields:
            raise SourceError(
                f"--sweep {spec!r}: {name!r} is not a risk config field; fields are "
                + ", ".join(RiskConfig.model_fields)
            )
        if name in seen:
            raise SourceError(f"--sweep {name} given twice: list every value in one flag")
        seen.add(name)
        parsed: list[Any] = []
        for v in values.split(","):
            v = v.strip()
            try:
                parsed.append(int(v) if v.lstrip("-").isdigit() else float(v))
            except ValueError:
                raise SourceError(f"--sweep {name}: {v!r} is not a number") from None
        out.append((name, parsed))
    return out


def policies(base: RiskConfig, sweeps: Sequence[tuple[str, list[Any]]]) -> list[Policy]:
    """Every combination, in the order the flags and values were given."""
    if not sweeps:
        return []
    names = [n for n, _ in sweeps]
    out = []
    for values in itertools.product(*(v for _, v in sweeps)):
        overrides = dict(zip(names, values, strict=True))
        label = ", ".join(f"{k}={v:g}" for k, v in overrides.items())
        try:
            risk = base.merged(overrides)
        except ValidationError as exc:
            loc, what = first_error(exc, "config")
            raise SourceError(f"--sweep policy {label}: {loc}: {what}") from None
        out.append(Policy(label, overrides, risk))
    return out


def run_sweep(
    timeline: Timeline,
    base: EngineConfig,
    pols: Sequence[Policy],
    path: Literal["fast", "scalar"] = "fast",
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Replay every policy; one comparison row each (in `pols` order)."""
    configs = [
        dataclasses.replace(base, risk=p.risk)  # every engine setting but the policy
        for p in pols
    ]
    engines = [Engine(c) for c in configs]
    logs = [ActionLog() for _ in pols]
    if path == "scalar":
        run_scalar(timeline, engines, logs, progress)
    else:
        for i, (engine, log) in enumerate(zip(engines, logs, strict=True)):
            run_fast(timeline, engine, log)
            if progress is not None:
                progress((i + 1) / len(pols))
    rows = []
    for p, cfg, engine, log in zip(pols, configs, engines, logs, strict=True):
        paths = position_paths(timeline, log)
        s = summarize(timeline, log, paths, net_hedging(timeline, log, cfg, paths))
        nh = s["net_hedging"]
        book = s["pnl"]["book"]
        saved = book["drawdown_saved"]
        cost = s["hedge_cost"]["total_usd"]
        rows.append(
            {
                "label": p.label,
                "overrides": p.overrides,
                "summary": {
                    "actions_published": s["actions"]["published"],
                    "assessments": engine.stats.assessments,
                    "hedge_cost_usd": cost,
                    "hedge_changes": s["turnover"]["hedge_changes"],
                    "traded_notional_usd": s["turnover"]["traded_notional_usd"],
                    "hedge_pct_changes": s["turnover"]["hedge_pct_changes"],
                    "max_drawdown_unhedged": book["max_drawdown_unhedged"],
                    "max_drawdown_hedged": book["max_drawdown_hedged"],
                    "drawdown_saved": saved,
                    "cost_per_drawdown_saved": cost / saved if saved > 0 else None,
                    "final_pnl_unhedged": book["final_pnl_unhedged"],
                    "final_pnl_hedged": book["final_pnl_hedged"],
                    "net_hedge_cost_usd": nh["net"]["hedge_cost_usd"],
                    "net_hedge_changes": nh["net"]["hedge_changes"],
                    "net_max_drawdown": nh["net"]["max_drawdown"],
                    "net_final_pnl": nh["net"]["final_pnl"],
                    "net_saving_usd": nh["saving_usd"],
                    "by_action": s["actions"]["by_action"],
                },
            }
        )
    return rows
