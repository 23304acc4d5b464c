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

Ranking (issue 16, `rank`): the runs best first by one metric, `--rank-by` (`RANK_BY`,
default `net_pnl`, the final P&L following the advice after spread and funding); ties keep
the given order, a run without the metric (return/risk needs 2 days) goes last. A swept
field *never binds* (`never_binds`) when every value of it gives the same actions as the
others, whatever the other fields are set to: the report says so rather than rank
identical runs as if they differed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from stream_risk.config import RiskConfig
from stream_risk.engine import Engine, EngineConfig
from stream_risk.replay.errors import SourceError, first_error
from stream_risk.replay.fastpath import run_fast
from stream_risk.replay.net_pnl import net_hedging
from stream_risk.replay.pnl import PnlPath, position_paths
from stream_risk.replay.ranking import DEFAULT_RANK_BY, RANK_BY
from stream_risk.replay.report import STATIC_H, summarize
from stream_risk.replay.runner import ActionLog, Progress, Timeline, run_scalar


def actions_digest(log: ActionLog) -> str:
    """A digest of every published action (time, position, action, hedge fraction)."""
    h = hashlib.blake2b(digest_size=16)
    for i in range(len(log)):
        h.update(f"{log.now[i]}|{log.pid[i]}|{log.action[i]}|{log.hedge_pct[i]!r}\n".encode())
    return h.hexdigest()


def rank(rows: Sequence[dict[str, Any]], by: str = DEFAULT_RANK_BY) -> list[dict[str, Any]]:
    """`rows` best first by `by` (a `RANK_BY` name); each row gets its `rank` (1 = best)."""
    key, higher, _ = RANK_BY[by]

    def order(i_row: tuple[int, Mapping[str, Any]]) -> tuple[int, float, int]:
        i, row = i_row
        v = row["summary"].get(key)
        if v is None or v != v:
            return (1, 0.0, i)
        return (0, -float(v) if higher else float(v), i)

    ranked = [r for _, r in sorted(enumerate(rows), key=order)]
    for n, r in enumerate(ranked, 1):
        r["rank"] = n  # set on the given rows too: the report keeps them in the given order
    return ranked


def never_binds(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note for each swept field (of 2 or more values) that changes no action: within
    every set of runs alike in the other fields, every value gave the same actions."""
    notes = []
    fields = list(rows[0]["overrides"]) if rows else []
    for f in fields:
        groups: dict[tuple[Any, ...], set[str]] = {}
        values: set[Any] = set()
        for r in rows:
            other = tuple((k, v) for k, v in r["overrides"].items() if k != f)
            groups.setdefault(other, set()).add(r["summary"]["actions_digest"])
            values.add(r["overrides"][f])
        if len(values) > 1 and all(len(g) == 1 for g in groups.values()):
            shown = ", ".join(f"{v:g}" for v in sorted(values))
            notes.append(
                f"{f} never binds on this data: every value gave the same actions ({shown})"
            )
    return notes


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
    static_by_threshold: dict[float, dict[str, PnlPath]] = {}
    for p, cfg, engine, log in zip(pols, configs, engines, logs, strict=True):
        paths = position_paths(timeline, log)
        threshold = cfg.risk.funding_threshold
        static = static_by_threshold.get(threshold)
        if static is None:  # the benchmark does not follow the advice: once per threshold
            static = position_paths(timeline, log, STATIC_H, threshold)
            static_by_threshold[threshold] = static
        s = summarize(
            timeline, log, paths, net_hedging(timeline, log, cfg, paths), static, threshold
        )
        advice = s["paths"]["advice"]
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
                    "spread_cost_usd": advice["spread_cost_usd"],
                    "funding_cost_usd": advice["funding_cost_usd"],
                    "daily_vol_usd": advice["daily_vol_usd"],
                    "return_risk": advice["return_risk"],
                    "static_final_pnl": s["paths"]["static"]["final_pnl_usd"],
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
                    "actions_digest": actions_digest(log),
                },
            }
        )
    return rows
