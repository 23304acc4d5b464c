"""Benchmark 8: a peer beside us, the same job written the way a Quix Streams user would.

    python -m bench.bench_quix [--quick]

The book and the backlog of benchmark 3 (`bench_engine`'s generators: 10,000 positions on
1,000 assets, the initial full ticks, then N ticks), on the same embedded broker, in the
same run:

- **stream-risk**: `bench_engine._engine_backlog` as is (the engine in this process, table
  loaded and settled, the tick consumer paused while the backlog is produced, ticks/s from
  the resume to the moment the step holding the last tick has its actions acknowledged),
  with `emit=all` (every assessment published) and with `emit=changed` (the default).
- **Quix Streams** (`quixstreams`, in a child process): positions `group_by("asset")`
  (a repartition topic Quix creates), `concat` with the ticks, one stateful `apply` keyed
  by asset (the positions of the asset and its latest market in the state store, RocksDB
  with its changelog topic: Quix's defaults) that calls `stream_risk.assessor.assess` for
  every position of the asset on each tick (and for a position update once the market is
  complete), every assessment (`to_dict()`) out to an output topic keyed by position id.
  One `Application` (`auto_offset_reset="earliest"`, a fresh consumer group): it reads the
  positions and the initial ticks; once it has processed the last of them the harness
  holds it inside that record's `apply` while the backlog is produced (as the engine's
  tick consumer is paused), then lets it go on. Ticks/s from the first backlog tick
  processed to the end of `app.run()`, which the last tick's record stops (the stop
  commits the checkpoint: the producer flushed, every assessment acknowledged, the
  offsets committed).

What the embedded broker (Tansu) does that matters here, found out on it:
- DescribeConfigs returns only the configs a topic was created with, and Quix derives its
  repartition and changelog topics' configs from the source topics' `retention.ms` and
  `retention.bytes` (a `KeyError` without them): the source topics are created with both
  set explicitly (-1). Tansu then accepts the topics Quix creates itself.
- ListOffsets (latest) answers the base offset of a partition's last batch + 1, not its end
  (two batches of 10 records: 11, where a fetch's high watermark says 20). Quix checks a
  state store against its changelog's end when a partition is assigned, so an
  `Application` started again on the same state (a second run, a restart) fails with
  `InvalidStoreChangelogOffset`: hence one `Application` held at a gate, not two runs.
- librdkafka's group join takes about half the session timeout on it (~23 s at the
  default 45 s): the consumer gets `session.timeout.ms` 6 s (the only setting changed).

A peer that cannot run (not installed, refused by the broker, too slow) is reported as a
row saying why; the rest of the benchmark goes on.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from typing import Any

from bench._common import BulkProducer, Row, broker
from bench.bench_engine import (
    _engine_backlog,
    initial_ticks,
    position_records,
    tick_stream,
)
from stream_risk.kafka.topics import TopicNames, TopicSpec, create_topics, topic_specs

BOOK = (10_000, 1_000)  # positions, assets: benchmark 3's book
#: Seconds the Quix app may take to load the book (~7-11 s here, with its topic creation
#: and group join); it is given up on if it reads the backlog slower than MIN_TICKS_PER_S
#: (measured here: ~4-6k ticks/s). Both well inside `python -m bench`'s limit for the run.
LOAD_TIMEOUT = 90
MIN_TICKS_PER_S = 1_000
#: The one change to Quix's consumer defaults: shorter group sessions, as the engine's
#: benchmarks use (the group join on the embedded broker takes about half the session
#: timeout: ~23 s at librdkafka's default 45 s). Not part of any measured window.
CONSUMER_EXTRA: dict[str, Any] = {"session.timeout.ms": 6_000, "heartbeat.interval.ms": 500}
#: `app.run(timeout=...)`: stop when nothing new has been consumed for this long.
IDLE_STOP_S = 20.0


# ------------------------------------------------------------------ the Quix app (child)
def quix_job(
    bootstrap: str,
    topics: dict[str, str],
    group: str,
    state_dir: str,
    book: tuple[int, int, int],
    loaded: Any,
    go: Any,
) -> dict[str, Any]:
    """Run the Quix Streams version of the job: load the book (n_pos positions, n_assets
    initial ticks), set `loaded`, wait for `go` (the backlog produced), then work through
    n_ticks more ticks; what it did and when."""
    from quixstreams import Application
    from quixstreams import __version__ as quix_version

    from stream_risk.assessor import assess
    from stream_risk.config import DEFAULT_CONFIG

    n_pos, n_assets, n_ticks = book
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        consumer_extra_config=CONSUMER_EXTRA,
        loglevel=os.environ.get("STREAM_RISK_BENCH_QUIX_LOG", "WARNING"),  # type: ignore[arg-type]
    )
    positions_topic = app.topic(topics["positions"], key_deserializer="str")
    ticks_topic = app.topic(topics["ticks"], key_deserializer="str")
    out_topic = app.topic(topics["out"], key_serializer="str", value_serializer="json")

    seen = {"positions": 0, "ticks": 0}
    marks: dict[str, float] = {}
    counts = {"assessments": 0, "load_assessments": 0}
    configs: dict[str, Any] = {}

    def config_of(overrides: dict[str, Any] | None) -> Any:
        if not overrides:
            return DEFAULT_CONFIG
        key = json.dumps(overrides, sort_keys=True)
        cfg = configs.get(key)
        if cfg is None:
            cfg = configs[key] = DEFAULT_CONFIG.merged(overrides)
        return cfg

    def assessed(p: dict[str, Any], m: dict[str, Any], trigger: str) -> dict[str, Any]:
        event_ts = max(p["ts"], m["ts"])
        a = assess(
            p["size"],
            p["entry_price"],
            max(0.0, p.get("age_minutes", 0.0) + (event_ts - p["ts"]) / 60_000),
            p.get("unrealized_pnl"),
            m["current_price"],
            m["volatility_1d"],
            m["spot_spread_bps"],
            m.get("perp_funding_rate", 0.0),
            m.get("bid_depth_usd", 1_000_000.0),
            m.get("ask_depth_usd", 1_000_000.0),
            config_of(p.get("config")),
            p["asset"],
        )
        counts["assessments"] += 1
        return {
            "position_id": p["position_id"],
            "asset": p["asset"],
            "trigger": trigger,
            "event_ts": event_ts,
            "tick_ts": m["ts"],
            **a.to_dict(),
        }

    def count(kind: str, made: int) -> None:
        """The harness, not the job: the gate after the book, the stop after the backlog."""
        seen[kind] += 1
        if "loaded" not in marks:
            if seen["positions"] >= n_pos and seen["ticks"] >= n_assets:
                marks["loaded"] = time.perf_counter()
                counts["load_assessments"] = counts["assessments"]
                loaded.set()
                if not go.wait(LOAD_TIMEOUT):
                    raise RuntimeError("the backlog was not produced in time")
                marks["go"] = time.perf_counter()
            return
        if "first" not in marks:
            marks["first"] = time.perf_counter()
            marks["first_cpu"] = time.process_time()
            counts["before_first"] = counts["assessments"] - made
        if seen["ticks"] >= n_assets + n_ticks:
            marks["last"] = time.perf_counter()
            app.stop()  # the loop ends after this record; the stop commits the checkpoint

    def step(value: dict[str, Any], state: Any) -> list[dict[str, Any]]:
        """One record of either stream, keyed by asset: positions and market in state."""
        market = state.get("market")
        out = []
        if "position_id" in value:  # a position (via the repartition topic)
            book = state.get("positions", {})
            book[value["position_id"]] = value
            state.set("positions", book)
            if market is not None and market.get("volatility_1d") is not None:
                out.append(assessed(value, market, "position"))
            count("positions", len(out))
            return out
        # A tick: merge it into the asset's market (partial ticks carry the price only).
        market = {**market, **value} if market else value
        state.set("market", market)
        if market.get("volatility_1d") is not None and market.get("spot_spread_bps") is not None:
            out = [assessed(p, market, "tick") for p in state.get("positions", {}).values()]
        count("ticks", len(out))
        return out

    positions = app.dataframe(positions_topic).group_by(
        "asset", key_serializer="str", key_deserializer="str"
    )
    ticks = app.dataframe(ticks_topic)
    sdf = positions.concat(ticks).apply(step, stateful=True, expand=True)
    sdf.to_topic(out_topic, key=lambda v: v["position_id"])

    t0 = time.perf_counter()
    app.run(timeout=IDLE_STOP_S, collect=False)
    t_end = time.perf_counter()
    cpu_end = time.process_time()
    res: dict[str, Any] = {
        "quixstreams": quix_version,
        "seen": seen,
        "complete": "last" in marks,
        "load_s": marks["loaded"] - t0 if "loaded" in marks else None,
        "load_assessments": counts["load_assessments"],
    }
    if "first" in marks:
        first = marks["first"]
        res.update(
            ticks=seen["ticks"] - n_assets,
            assessments=counts["assessments"] - counts["before_first"],
            seconds=t_end - first,
            to_last_s=marks.get("last", t_end) - first,
            stop_s=t_end - marks.get("last", t_end),
            cpu_s=cpu_end - marks["first_cpu"],
            go_to_first_s=first - marks["go"],
        )
    return res


def _child(args: tuple[Any, ...], out: str) -> None:
    try:
        res = quix_job(*args)
    except BaseException as exc:  # reported by the parent as a row
        traceback.print_exc()
        res = {"error": f"{type(exc).__name__}: {exc}"}
    with open(out, "w") as f:
        json.dump(res, f)


# ------------------------------------------------------------------ the peer's run
async def _quix_topics(bootstrap: str) -> dict[str, str]:
    """Source topics with the engine's specs plus `retention.ms` (and `retention.bytes`)
    set explicitly, as Quix derives its own topics' from them; the output topic too."""
    names = TopicNames.with_prefix(f"bench-{uuid.uuid4().hex[:8]}-quix-")
    specs = {s.name: s for s in topic_specs(names, include_controls=False)}
    retention = {"retention.ms": "-1", "retention.bytes": "-1"}
    want = []
    for name in (names.positions, names.market_ticks, names.risk_actions):
        s = specs[name]
        want.append(TopicSpec(s.name, s.partitions, {**retention, **s.configs}, 1))
    await create_topics(bootstrap, want)
    return {"positions": names.positions, "ticks": names.market_ticks, "out": names.risk_actions}


async def _quix(bootstrap: str, n_ticks: int) -> dict[str, Any]:
    n_pos, n_assets = BOOK
    try:
        import quixstreams  # noqa: F401  (only to fail early, with the reason)
    except ImportError as exc:
        return {"error": f"quixstreams is not installed ({exc}): pip install '.[bench]'"}
    topics = await _quix_topics(bootstrap)
    t0 = int(time.time() * 1000)
    async with BulkProducer(bootstrap) as bp:
        await bp.produce(topics["positions"], position_records(n_pos, n_assets, t0 - 60_000))
        await bp.produce(topics["ticks"], initial_ticks(n_assets, t0 - 1_000))
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    state_dir = tempfile.mkdtemp(prefix="bench-quix-state-")
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    ctx = multiprocessing.get_context("spawn")
    loaded, go = ctx.Event(), ctx.Event()
    args = (bootstrap, topics, group, state_dir, (n_pos, n_assets, n_ticks), loaded, go)
    proc = ctx.Process(target=_child, args=(args, out))
    proc.start()
    produce_s = None
    try:
        deadline = time.monotonic() + LOAD_TIMEOUT
        while not loaded.is_set() and proc.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if loaded.is_set():
            async with BulkProducer(bootstrap) as bp:
                t_p = time.perf_counter()
                await bp.produce(topics["ticks"], tick_stream(n_ticks, n_assets, t0))
                produce_s = time.perf_counter() - t_p
            go.set()
        limit = max(60.0, n_ticks / MIN_TICKS_PER_S) if go.is_set() else 0.0
        await asyncio.to_thread(proc.join, limit)
        if proc.is_alive():
            proc.terminate()
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join)
            what = "the backlog" if go.is_set() else "the book"
            return {"error": f"the Quix process did not get through {what} in time: stopped"}
        with open(out) as f:
            text = f.read()
        if not text:
            return {"error": f"the Quix process exited with {proc.exitcode}, no result"}
        run: dict[str, Any] = json.loads(text)
        topics_after = await _list_topics(bootstrap)
    finally:
        os.unlink(out)
        shutil.rmtree(state_dir, ignore_errors=True)
    if "error" in run:
        return {"error": run["error"]}
    if run["load_s"] is None:
        return {"error": f"the book was not loaded: saw {run['seen']}"}
    if not run["complete"] or not run.get("seconds"):
        return {"error": f"the backlog was not consumed: saw {run['seen']}"}
    assert produce_s is not None
    return {
        **run,
        "ticks_per_s": run["ticks"] / run["seconds"],
        "assessments_per_s": run["assessments"] / run["seconds"],
        "expected_assessments": n_ticks * (n_pos // n_assets),
        "produce_ticks_per_s": n_ticks / produce_s,
        "internal_topics": sorted(t for t in topics_after if group in t),
    }


async def _list_topics(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def _run(n_ticks: int) -> dict[str, Any]:
    engine: dict[str, Any] = {}
    async with broker() as bs:
        # Ours first with emit=all, the peer, ours with emit=changed: the machine's drift
        # over the run falls on both sides.
        for emit in ("all", "quix", "changed"):
            if emit == "quix":
                try:
                    quix = await _quix(bs, n_ticks)
                except Exception as exc:
                    traceback.print_exc()
                    quix = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            names = await _topics(bs)
            eng = await _engine_backlog(bs, names, emit, n_ticks, BOOK)
            eng.pop("start_offsets")
            engine[emit] = eng
    return {
        "positions": BOOK[0],
        "assets": BOOK[1],
        "ticks": n_ticks,
        "engine": engine,
        "quix": quix,
    }


async def _topics(bootstrap: str) -> TopicNames:
    from bench._common import make_topics

    return await make_topics(bootstrap)


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(60_000 if quick else 300_000))


# ------------------------------------------------------------------ the table
TARGET = "(a peer, no target)"


def rows(r: dict[str, Any]) -> list[Row]:
    q = r["quix"]
    book = (
        f"{r['positions'] // 1000}k positions on {r['assets'] // 1000}k assets, "
        f"{r['ticks'] // 1000}k-tick backlog"
    )
    if "error" in q:
        ours = "; ".join(
            f"emit={emit} {r['engine'][emit]['ticks_per_s']:,.0f} ticks/s"
            for emit in ("all", "changed")
            if emit in r["engine"]
        )
        return [
            Row(
                "8",
                f"peer: the same job in Quix Streams, {book} — THE PEER COULD NOT RUN: "
                f"{q['error']}",
                f"stream-risk {ours}",
                "–",
                target=TARGET,
            )
        ]
    ok = q["assessments"] == q["expected_assessments"]
    bad = (
        "" if ok else f" — {q['assessments']:,} ASSESSMENTS, EXPECTED {q['expected_assessments']:,}"
    )
    out = []
    for emit, label in (("all", "emit=all"), ("changed", "emit=changed (default)")):
        e = r["engine"][emit]
        ratio = e["ticks_per_s"] / q["ticks_per_s"]
        fewer = q["assessments"] / max(1, e["assessments"])
        out.append(
            Row(
                "8",
                f"peer: stream-risk {label} vs the same job in Quix Streams "
                f"{q['quixstreams']} (group_by asset, concat ticks, stateful apply calling the "
                f"assessor, every assessment out), {book}; ticks/s consumed. stream-risk "
                "conflates ticks per asset (each position assessed once per batch against "
                f"its asset's latest tick, not once per tick: {fewer:,.0f}× fewer "
                "assessments here), part of the difference" + bad,
                f"{e['ticks_per_s']:,.0f} ticks/s; {e['assessments']:,} assessments "
                f"({e['assessments'] / e['seconds']:,.0f}/s), {e['actions']:,.0f} actions",
                f"{q['ticks_per_s']:,.0f} ticks/s; {q['assessments']:,} assessments "
                f"({q['assessments_per_s']:,.0f}/s), all out (Quix Streams)",
                f"{ratio:.1f}×",
                TARGET,
            )
        )
    return out


def notes(r: dict[str, Any]) -> list[str]:
    q = r["quix"]
    lines = []
    if "error" in q:
        lines.append(f"8: the Quix Streams peer could not run: {q['error']}.")
    else:
        per_tick = r["positions"] // r["assets"]
        internal = ", ".join(f"`{t}`" for t in q["internal_topics"]) or "none"
        lines.append(
            f"8 (Quix Streams {q['quixstreams']}): the book and backlog of row 3 "
            "(`bench_engine`'s generators), same broker, same run. Positions "
            '`group_by("asset", key_serializer="str")` (with the default JSON key the '
            "repartitioned positions land on other partitions than the ticks keyed by the "
            "raw asset and never meet them), `concat` with the ticks (key `str`), one "
            "`apply(stateful=True, expand=True)` keeping the asset's positions and merged "
            "market in the state store (RocksDB and its changelog topic, Quix's defaults), "
            f"`assess` for each of the {per_tick} positions of the asset on every tick, "
            "each `to_dict()` to an output topic keyed by position id; "
            "`auto_offset_reset=earliest`, a fresh consumer group, at-least-once, commit "
            "every 5 s, `session.timeout.ms` 6 s (defaults otherwise). One `Application` in "
            f"a child process loads the book ({q['load_s']:.1f} s from `app.run()`, with "
            f"topic creation and group join; {q['load_assessments']:,} assessments), is "
            "held inside the last book record's `apply` while the backlog is produced, then "
            f"reads it: {q['ticks']:,} ticks in {q['seconds']:.2f} s from its first backlog "
            f"tick to the end of `app.run()` ({q['to_last_s']:.2f} s to the last tick, "
            f"{q['stop_s']:.2f} s for the stop: producer flush, offset commit, close), "
            f"{q['assessments']:,} assessments out (expected {q['expected_assessments']:,}), "
            f"{q['cpu_s'] / q['ticks'] * 1e6:,.0f} µs CPU per tick in its process. In "
            "Quix's favour: its window starts at the first backlog tick processed "
            f"({q['go_to_first_s']:.2f} s after the gate opened, not counted), the engine's "
            "at the resume of its paused consumer; librdkafka may prefetch while the gate "
            "holds. Tansu, found out here: it returns only the configs a topic was created "
            "with, so the source topics get `retention.ms`/`retention.bytes` (-1) "
            "explicitly (Quix derives its own topics' from them); it accepted the topics "
            f"Quix created ({internal}); its ListOffsets answers the last batch's base "
            "offset + 1, so a second `Application` on the same state fails Quix's changelog "
            "check (`InvalidStoreChangelogOffset`), hence one held `Application`."
        )
    for emit in ("all", "changed"):
        e = r["engine"].get(emit)
        if e:
            lines.append(
                f"8 (stream-risk emit={emit}): {e['ticks']:,} ticks in {e['seconds']:.2f} s, "
                f"{e['assessments']:,} assessments, {e['actions']:,.0f} actions, "
                f"{e['cpu_s'] / e['ticks'] * 1e6:.1f} µs engine CPU per tick (row 3's "
                "measurement, `bench_engine._engine_backlog`)."
            )
    return lines


def main(argv: list[str]) -> int:
    r = run("--quick" in argv)
    print(json.dumps(r, indent=2, default=str))
    for row in rows(r):
        print(row)
    for line in notes(r):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
