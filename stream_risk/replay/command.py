"""What `stream-risk replay` does once its arguments are parsed (`run`): read the inputs,
replay them offline through the engine (and any `--sweep` policies), write actions.jsonl,
report.json, report.html and chart.png, and print the summary; or, under `--publish`, put
the data onto the topics. `cli` parses the arguments and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad usage a flag's value shows only once read (`--speed`, `--until`, a vol window)."""


def err(msg: str) -> None:
    print(f"stream-risk replay: {msg}", file=sys.stderr)


def _settings(args: argparse.Namespace) -> Any:
    from stream_risk.settings import Settings

    return Settings.load(
        config_file=args.config,
        emit=args.emit,
        bootstrap_servers=args.bootstrap_servers,
        topic_positions=args.positions_topic,
        topic_market_ticks=args.ticks_topic,
    )


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[float], None] | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=1.0)

        def update(frac: float) -> None:
            bar.update(task, completed=frac)

        yield update


def _parse_until(text: str | None) -> int:
    if text is None:
        return 0
    from stream_risk.replay.timestamps import iso_to_ms

    t = text.strip()
    try:
        return int(float(t)) if t.replace(".", "", 1).isdigit() else iso_to_ms(t)
    except ValueError:
        raise UsageError(f"--until {text!r}: expected epoch ms or ISO-8601") from None


def run(args: argparse.Namespace) -> int:
    from stream_risk.engine import Engine, EngineConfig
    from stream_risk.engine.estimates import VolEstimator
    from stream_risk.replay.columns import parse_mapping
    from stream_risk.replay.errors import BadRecords
    from stream_risk.replay.positions import (
        POSITION_FIELDS,
        PositionRecord,
        load_positions,
        positions_from_specs,
    )
    from stream_risk.replay.ticks import TICK_FIELDS, Defaults, load_ticks

    if args.speed < 0:
        raise UsageError("--speed must be >= 0 (0 = as fast as possible)")
    settings = _settings(args)

    def given(flag: Any, setting: Any) -> Any:
        return setting if flag is None else flag

    try:
        vol = VolEstimator(
            given(args.vol_window, settings.vol_window),
            given(args.vol_min_obs, settings.vol_min_obs),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    depth = given(args.default_depth_usd, settings.default_depth_usd)
    spread = given(args.default_spread_bps, settings.default_spread_bps)
    defaults = Defaults(
        2.0 if spread is None else spread,  # replay needs a spread: the data may have none
        given(args.default_funding, settings.default_funding),
        depth,
        depth,
    )
    if args.ticks == "-" and args.positions == "-":
        raise UsageError("only one input can be standard input (-): give the other as a file")
    t_load = time.perf_counter()
    ticks = load_ticks(
        args.ticks,
        parse_mapping(args.map, TICK_FIELDS),
        asset=args.asset,
        ts_unit=args.ts_unit,
        skip_bad=args.skip_bad,
        defaults=defaults,
        vol=vol,
        estimate_vol=args.estimate_vol,
    )
    records: list[PositionRecord] = []
    pos_bad = BadRecords()
    if args.positions:
        records, pos_bad = load_positions(
            args.positions,
            ticks,
            parse_mapping(args.positions_map, POSITION_FIELDS, "--positions-map"),
            ts_unit=args.ts_unit,
            skip_bad=args.skip_bad,
        )
    records += positions_from_specs(args.position or (), ticks)
    load_s = time.perf_counter() - t_load

    from stream_risk.replay.runner import ActionLog, Timeline, run_scalar

    configs = []
    if args.risk_config:
        from stream_risk.replay.risk_config import load_risk_config

        configs = load_risk_config(args.risk_config)
    timeline = Timeline(ticks, records, _parse_until(args.until), configs)
    if ticks.bad.count or pos_bad.count:
        err(
            f"skipped {ticks.bad.count} bad tick record(s) and {pos_bad.count} bad position "
            f"record(s) (--skip-bad); first: {(ticks.bad.examples + pos_bad.examples)[:1]}"
        )

    if args.publish:
        if configs:
            err("--risk-config is not published: produce it to risk-config yourself")
        return _publish(args, settings, timeline)

    engine_config = EngineConfig(
        risk=settings.risk,
        emit=settings.emit,
        max_tick_age_ms=int(settings.max_tick_age_s * 1000),
        market_defaults=defaults,
        vol=vol,
    )
    from stream_risk.replay.sweep import parse_sweeps, policies, run_sweep

    pols = policies(settings.risk, parse_sweeps(args.sweep))
    if not records:
        where = (
            f"{args.positions} holds no position records"
            if args.positions
            else ("no positions were given")
        )
        raise UsageError(
            f"{where}, so there is nothing to assess: pass --positions FILE (JSONL/CSV/Parquet "
            "records shaped like `positions` messages) or --position [ID=]ASSET:SIZE@ENTRY, "
            f"e.g. --position {ticks.assets[0] if ticks.assets else 'ETH'}:10@"
            f"{float(ticks.price[0]) if len(ticks) else 3400:g}"
        )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(engine_config)
    t_run = time.perf_counter()
    with (
        (out_dir / "actions.jsonl").open("wb") as f,
        _progress("replay", not args.no_progress) as bar,
    ):
        log = ActionLog(f)
        if args.path == "scalar":
            run_scalar(timeline, [engine], [log], bar)
        else:
            from stream_risk.replay.fastpath import run_fast

            run_fast(timeline, engine, log, bar)
    run_s = time.perf_counter() - t_run
    sweep_rows: list[dict[str, Any]] = []
    if pols:
        with _progress("sweep", not args.no_progress) as bar:
            sweep_rows = run_sweep(timeline, engine_config, pols, args.path, bar)

    from stream_risk.replay.net_pnl import net_hedging
    from stream_risk.replay.pnl import book_path, position_paths
    from stream_risk.replay.ranking import RANK_BY
    from stream_risk.replay.render import write_chart, write_html, write_json
    from stream_risk.replay.report import STATIC_H, summarize
    from stream_risk.replay.sweep import never_binds, rank
    from stream_risk.replay.timestamps import ms_to_iso

    paths = position_paths(timeline, log)
    threshold = settings.risk.funding_threshold
    static = position_paths(timeline, log, STATIC_H, threshold)
    t_net = time.perf_counter()
    net = net_hedging(timeline, log, engine_config, paths)
    net_s = time.perf_counter() - t_net
    summary = summarize(timeline, log, paths, net, static, threshold)
    report: dict[str, Any] = {
        "inputs": {
            "ticks_file": "<stdin>" if args.ticks == "-" else str(args.ticks),
            "tick_records": len(ticks),
            "assets": ", ".join(ticks.assets),
            "positions_file": ("<stdin>" if args.positions == "-" else str(args.positions))
            if args.positions
            else None,
            "position_records": len(records),
            "from": ms_to_iso(timeline.start) if len(timeline.times) else None,
            "to": ms_to_iso(timeline.until) if len(timeline.times) else None,
            "volatility_1d": ticks.vol_source,
            "bad_records_skipped": ticks.bad.count + pos_bad.count,
            "ignored_columns": ", ".join(ticks.ignored_columns) or None,
        },
        "assumptions": ticks.assumptions,
        "bad_records": ticks.bad.examples + pos_bad.examples,
        "config": {
            "emit": engine_config.emit,
            "max_tick_age_ms": engine_config.max_tick_age_ms,
            "risk": settings.risk.model_dump(),
        },
        "engine": engine.stats.as_dict(),
        **summary,
        "rejected": log.rejected,
    }
    notes: list[str] = []
    if sweep_rows:
        report["sweep"] = sweep_rows  # in the order given, each with its rank
        sweep_rows = rank(sweep_rows, args.rank_by)
        notes = never_binds(sweep_rows)
        report["sweep_ranking"] = {
            "rank_by": args.rank_by,
            "meaning": RANK_BY[args.rank_by][2],
            "best_first": [r["label"] for r in sweep_rows],
            "notes": notes,
        }
    write_json(out_dir / "report.json", report)
    shown = report["inputs"]["ticks_file"]
    write_chart(
        out_dir / "chart.png",
        paths,
        log,
        f"stream-risk replay: {shown}",
        net.book,
        book_path(static),
    )
    files = ["actions.jsonl", "report.json", "report.html", "chart.png"]
    if sweep_rows:
        from stream_risk.replay.render import write_sweep_chart

        write_sweep_chart(out_dir / "sweep.png", sweep_rows, args.rank_by)
        files.append("sweep.png")
    write_html(
        out_dir / "report.html",
        {**report, "sweep": sweep_rows} if sweep_rows else report,  # best first
        "chart.png",
        "sweep.png" if sweep_rows else None,
    )

    _print_summary(summary, sweep_rows, len(ticks), len(records), ticks.vol_source)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out_dir}/{', '.join(files)}")
    rate = len(ticks) / run_s if run_s > 0 else float("inf")
    err(
        f"{args.path} path: {len(ticks):,} ticks in {run_s:.3f} s ({rate:,.0f} ticks/s); "
        f"reading {load_s:.3f} s; net hedging path {net_s:.3f} s"
    )
    return EXIT_OK


def _print_summary(
    summary: dict[str, Any],
    sweep_rows: list[dict[str, Any]],
    n_ticks: int,
    n_records: int,
    vol_source: str,
) -> None:
    """The report's headline figures on stdout (USD): actions; the three paths' P&L, costs,
    turnover and risk; net hedging; turnover; the sweep, best first."""
    from stream_risk.replay.render import usd

    acts = summary["actions"]
    by = ", ".join(f"{a} {n}" for a, n in acts["by_action"].items() if n)
    print(
        f"replayed {n_ticks:,} ticks and {n_records:,} position records "
        f"({vol_source} vol): {acts['published']:,} actions ({by or 'none'}), "
        f"{acts['tombstones']} tombstones"
    )
    n_days = 0
    for key, p in summary["paths"].items():
        n_days = p["days"]
        rr = p["return_risk"]
        costs = (
            ""
            if key == "unhedged"
            else f", hedge cost {usd(p['hedge_cost_usd'])} (spread {usd(p['spread_cost_usd'])}"
            f", funding {usd(p['funding_cost_usd'])}), {p['hedge_changes']:,} hedge changes "
            f"trading {usd(p['traded_notional_usd'])}"
        )
        print(
            f"{p['name']}: final P&L {usd(p['final_pnl_usd'])}{costs}; max drawdown "
            f"{usd(p['max_drawdown_usd'])}, longest under water "
            f"{p['longest_under_water_hours']:,.1f} h, daily vol {usd(p['daily_vol_usd'])}, "
            f"return/risk {'–' if rr is None else f'{rr:,.2f}'}"
        )
    print(
        f"  (return/risk = mean daily P&L / its std × √365 over {n_days} UTC day(s); "
        "– with fewer than 2)"
    )
    nh = summary.get("net_hedging")
    if nh is not None:
        each, net = nh["per_position"], nh["net"]
        pct = "" if nh["saving_pct"] is None else f" ({nh['saving_pct']:.1f} %)"
        print(
            f"hedge cost: each position hedged on its own {usd(each['hedge_cost_usd'])} "
            f"({each['hedge_changes']:,} changes, traded {usd(each['traded_notional_usd'])}, "
            f"final P&L {usd(each['final_pnl'])}, max drawdown {usd(each['max_drawdown'])}); "
            f"net hedging {usd(net['hedge_cost_usd'])} ({net['hedge_changes']:,} changes, "
            f"traded {usd(net['traded_notional_usd'])}, final P&L {usd(net['final_pnl'])}, "
            f"max drawdown {usd(net['max_drawdown'])}); saving {usd(nh['saving_usd'])}{pct}"
        )
    to = summary["turnover"]
    print(
        f"turnover: {to['hedge_changes']:,} hedge changes, traded notional "
        f"{usd(to['traded_notional_usd'])}, cost {usd(to['cost_usd'])}; the advised hedge "
        f"fraction changed {to['hedge_pct_changes']:,} times"
    )
    if sweep_rows:
        print("sweep, best first:")
    for row in sweep_rows:
        s = row["summary"]
        rr = s["return_risk"]
        print(
            f"  {row['rank']}. {row['label']}: final P&L {usd(s['final_pnl_hedged'])}, max "
            f"drawdown {usd(s['max_drawdown_hedged'])} (unhedged "
            f"{usd(s['max_drawdown_unhedged'])}), return/risk "
            f"{'–' if rr is None else f'{rr:,.2f}'}, hedge cost {usd(s['hedge_cost_usd'])} "
            f"({s['hedge_changes']:,} changes); net hedging cost "
            f"{usd(s['net_hedge_cost_usd'])}"
        )


def _publish(args: argparse.Namespace, settings: Any, timeline: Any) -> int:
    from aiokafka.errors import KafkaError

    from stream_risk.kafka.topics import TopicNames
    from stream_risk.replay.publish import publish

    names = TopicNames(positions=settings.topic_positions, market_ticks=settings.topic_market_ticks)
    kwargs = settings.kafka_client_kwargs()
    try:
        with _progress("publish", not args.no_progress) as bar:
            res = asyncio.run(
                publish(
                    timeline,
                    settings.bootstrap_servers,
                    names,
                    speed=args.speed,
                    create=args.create_topics,
                    client_kwargs=kwargs,
                    progress=bar,
                )
            )
    except KafkaError as exc:
        err(f"Kafka at {settings.bootstrap_servers}: {exc!r}")
        return EXIT_FAILURE
    print(
        f"published {res.positions:,} position records to {names.positions} and "
        f"{res.ticks:,} ticks to {names.market_ticks} in {res.seconds:.2f} s"
    )
    return EXIT_OK
