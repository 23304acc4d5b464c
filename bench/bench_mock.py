"""Benchmark 11: latency and the cost of exactly-once where the broker is not the floor.

    python -m bench mock            (or: python -m bench.bench_mock [--quick])

Everything on librdkafka's mock cluster (`stream_risk.kafka.mock_cluster`, a host process
of its own; docs/design.md D18), in one run. Its topics are made through the host (the
mock has no CreateTopics): `positions`, `market-ticks` and `risk-actions` with 6 partitions,
`risk-dlq` with 1, a fresh set per engine run.

1. **Broker floor**: bench 4's one hop: the paced tick stream (5,000 ticks/s) produced to a
   topic and read back by the probe consumer; p50 / p99 / p999.
2. **Tick → action** (bench 4's method: `stream-risk run --emit all` as its own process,
   10,000 positions on 10,000 assets, the paced producer, the probe consumer, the
   engine-added latency from its `stream_risk_engine_latency_seconds`), under
   `--processing-guarantee at-least-once`, `exactly-once` (checkpoint every 100 ms, the
   default) and `exactly-once --commit-interval-ms 10`. Under exactly-once the probe reads
   `read_committed`: an action is visible there only once the transaction of its
   checkpoint commits, which is what a bot reading committed data sees. The engine-added
   histogram ends at the broker's ack of the action, before its commit, under both.
3. **Throughput cost of exactly-once**: bench 3's backlog method (the engine, in this
   process, drains a backlog of ticks; 10,000 positions on 1,000 assets, `emit=changed`;
   the window ends with a checkpoint, i.e. under exactly-once with the commit) under
   at-least-once and exactly-once, alternated, twice each; the best of each and their
   ratio. The backlog is kept below the mock's log limit per partition (5 MiB or 100,000
   batches, older batches dropped).

Every engine run is checked: its `stream_risk_processing_guarantee{guarantee=...}` gauge is
1 for the mode asked, and its log has no ERROR/CRITICAL line or traceback (WARNINGs are
counted and quoted in the notes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Any

from prometheus_client import CollectorRegistry

from bench._common import PARTITIONS, BulkProducer, Row, wall_ms
from bench.bench_engine import (
    PACER_LINGER_MS,
    PROBE_FETCH_WAIT_MS,
    _action_of,
    _bucket_quantile,
    _engine_backlog,
    _engine_process,
    _latency_buckets,
    _pace_and_collect,
    _rss_of,
    _tick_of,
    _wait_ready,
    initial_ticks,
    position_records,
)
from stream_risk.kafka.app import StreamProcessor
from stream_risk.kafka.embedded import free_port
from stream_risk.kafka.mock_cluster import MockCluster
from stream_risk.kafka.publisher import Publisher
from stream_risk.kafka.topics import TopicNames, topic_specs
from stream_risk.kafka.transactions import Transactions

ALO = "at-least-once"
EOS = "exactly-once"

#: The latency runs: key -> (guarantee, commit interval in ms or None for the default).
LATENCY_MODES: dict[str, tuple[str, int | None]] = {
    "alo": (ALO, None),
    "eos": (EOS, None),
    "eos10": (EOS, 10),
}
LABELS = {
    "alo": "at-least-once",
    "eos": "exactly-once (checkpoint 100 ms), read_committed probe",
    "eos10": "exactly-once, `--commit-interval-ms 10`, read_committed probe",
}


def mock_topics(mock: MockCluster, partitions: int = PARTITIONS) -> TopicNames:
    """The engine's four topics under a unique prefix, made through the mock's host with
    the engine's partition counts (positions, market-ticks, risk-actions: `partitions`;
    risk-dlq: 1)."""
    names = TopicNames.with_prefix(f"bench-{uuid.uuid4().hex[:8]}-")
    specs = topic_specs(names, partitions=partitions, include_controls=False)
    mock.create_topics([(s.name, s.partitions) for s in specs])
    return names


# ------------------------------------------------------------------ /metrics and logs
def scrape(port: int) -> dict[str, float]:
    """Every sample of the engine's /metrics: 'name{labels}' -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def _sample(samples: dict[str, float], name: str, label: str = "") -> float:
    return samples.get(f"{name}{{{label}}}" if label else name, math.nan)


_LEVEL = re.compile(r"^(?:\S+ \S+ )?(ERROR|CRITICAL|WARNING) ")


def log_problems(text: str) -> dict[str, Any]:
    """ERROR/CRITICAL lines and tracebacks (problems); WARNING lines counted and quoted,
    apart from the LIQUIDATE alerts the workload fires by design (counted on their own)."""
    errors, warnings = [], []
    alerts = 0
    for line in text.splitlines():
        m = _LEVEL.match(line)
        if line.startswith("Traceback") or (m and m.group(1) != "WARNING"):
            errors.append(line.strip()[:300])
        elif m and " alert " in line and " fired: " in line:
            alerts += 1
        elif m:
            warnings.append(line.strip()[:300])
    return {
        "errors": errors[:20],
        "n_errors": len(errors),
        "warnings": warnings[:6],
        "n_warnings": len(warnings),
        "alert_lines": alerts,
    }


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (/proc/PID/stat)."""
    if pid is None:
        return math.nan
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Collect(logging.Handler):
    """WARNING and above of this process's loggers during an in-process engine run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += " Traceback"
        self.lines.append(text)


# ------------------------------------------------------------------ 2: tick -> action
async def _latency_run(
    mock: MockCluster,
    key: str,
    rate: int,
    seconds: float,
    warmup: float,
    n: int,
) -> dict[str, Any]:
    guarantee, interval = LATENCY_MODES[key]
    bs = mock.bootstrap_servers
    names = mock_topics(mock)
    t0 = wall_ms()
    async with BulkProducer(bs) as bp:
        await bp.produce(names.positions, position_records(n, n, t0 - 60_000))
        await bp.produce(names.market_ticks, initial_ticks(n, t0 - 1_000))
    port = free_port()
    extra = ["--processing-guarantee", guarantee]
    if interval is not None:
        extra += ["--commit-interval-ms", str(interval)]
    fd, log_path = tempfile.mkstemp(prefix=f"bench-mock-{key}-", suffix=".log")
    os.close(fd)
    isolation = "read_committed" if guarantee == EOS else "read_uncommitted"
    try:
        with _engine_process(bs, names, port, extra, log_path=log_path) as engine:
            t_start = time.perf_counter()
            await _wait_ready(port, engine)
            ready_s = time.perf_counter() - t_start

            async def after_warmup() -> dict[float, float]:
                await asyncio.sleep(warmup)
                return await asyncio.to_thread(_latency_buckets, port)

            warm = asyncio.create_task(after_warmup())
            cpu0 = {"engine": cpu_seconds(engine.pid), "mock": cpu_seconds(mock.pid)}
            own0, t_w = time.process_time(), time.perf_counter()
            eng = await _pace_and_collect(
                bs,
                names.market_ticks,
                names.risk_actions,
                n,
                rate,
                seconds,
                warmup,
                _action_of,
                skip=n,  # the settle's first action per position
                isolation_level=isolation,
            )
            wall = time.perf_counter() - t_w
            cpu = {
                "engine": (cpu_seconds(engine.pid) - cpu0["engine"]) / wall,
                "mock": (cpu_seconds(mock.pid) - cpu0["mock"]) / wall,
                "probe": (time.process_time() - own0) / wall,
            }
            engine_rss = _rss_of(engine.pid)
            end = await asyncio.to_thread(_latency_buckets, port)
            after = await asyncio.to_thread(scrape, port)
            start_buckets = await warm
            alive = engine.poll() is None
        with open(log_path, errors="replace") as f:
            log_text = f.read()
    finally:
        os.unlink(log_path)
    added = {le: end[le] - start_buckets.get(le, 0.0) for le in end}
    g = "stream_risk_processing_guarantee"
    tx = "stream_risk_transactions_total"
    return {
        "key": key,
        "guarantee": guarantee,
        "commit_interval_ms": interval or 100,
        "isolation_level": isolation,
        "ready_s": ready_s,
        "guarantee_gauge": {
            ALO: _sample(after, g, f'guarantee="{ALO}"'),
            EOS: _sample(after, g, f'guarantee="{EOS}"'),
        },
        "transactions_metric": {
            o: _sample(after, tx, f'outcome="{o}"') for o in ("committed", "aborted")
        },
        "fenced": _sample(after, "stream_risk_fenced_total"),
        "dlq": sum(v for k, v in after.items() if k.startswith("stream_risk_dlq_records_total")),
        "engine_latency": {
            "samples": added.get(math.inf, 0.0),
            "p50_ms": _bucket_quantile(added, 0.50) * 1000,
            "p99_ms": _bucket_quantile(added, 0.99) * 1000,
            "p999_ms": _bucket_quantile(added, 0.999) * 1000,
        },
        "engine": eng,
        "engine_rss_mb": engine_rss / 2**20,
        "cpu_cores": cpu,
        "engine_alive_at_end": alive,
        "log": log_problems(log_text),
    }


# ------------------------------------------------------------------ 3: throughput
class _Timed:
    """Times every call of the checkpoint's halves in this process (patched for the run):
    `Publisher.flush` (acks, then under exactly-once the commit of the transactions) and
    `Transactions.commit` (send_offsets_to_transaction + commit_transaction per partition,
    in parallel). The step loop holds its lock through a checkpoint: this is time in which
    no tick is processed."""

    def __init__(self) -> None:
        self.flush: list[float] = []
        self.commit: list[float] = []
        self._saved: list[tuple[type, str, Any]] = []

    def _wrap(self, cls: type, name: str, into: list[float]) -> None:
        orig = getattr(cls, name)

        async def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return await orig(*a, **kw)
            finally:
                into.append(time.perf_counter() - t)

        self._saved.append((cls, name, orig))
        setattr(cls, name, timed)

    def __enter__(self) -> _Timed:
        self._wrap(Publisher, "flush", self.flush)
        self._wrap(Transactions, "commit", self.commit)
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, orig in reversed(self._saved):
            setattr(cls, name, orig)

    @staticmethod
    def summary(xs: list[float]) -> dict[str, float]:
        ys = sorted(xs)
        if not ys:
            return {"n": 0}
        return {
            "n": len(ys),
            "total_s": sum(ys),
            "p50_ms": ys[len(ys) // 2] * 1000,
            "p99_ms": ys[min(len(ys) - 1, int(len(ys) * 0.99))] * 1000,
            "max_ms": ys[-1] * 1000,
        }


def _check(proc: StreamProcessor, reg: CollectorRegistry) -> dict[str, float]:
    def v(name: str, labels: dict[str, str]) -> float:
        x = reg.get_sample_value(name, labels)
        return math.nan if x is None else x

    g = "stream_risk_processing_guarantee"
    tx = "stream_risk_transactions_total"
    return {
        ALO: v(g, {"guarantee": ALO}),
        EOS: v(g, {"guarantee": EOS}),
        "metric_committed": v(tx, {"outcome": "committed"}),
        "metric_aborted": v(tx, {"outcome": "aborted"}),
        # The Transactions object's own counts (the metric above stays unset: issue noted).
        "txn_commits": float(proc.publisher.txns.commits) if proc.publisher.txns else 0.0,
        "txn_aborts": float(proc.publisher.txns.aborts) if proc.publisher.txns else 0.0,
    }


async def _throughput_run(
    mock: MockCluster, guarantee: str, n_ticks: int, book: tuple[int, int]
) -> dict[str, Any]:
    names = mock_topics(mock)
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    timed = _Timed()
    try:
        with timed:
            r = await _engine_backlog(
                mock.bootstrap_servers,
                names,
                "changed",
                n_ticks,
                book,
                check=_check,
                processing_guarantee=guarantee,
            )
    finally:
        root.removeHandler(collect)
    r.pop("start_offsets", None)
    r["guarantee"] = guarantee
    # Over the whole engine life (start, settle, window): the checkpoints' cost.
    r["flush"] = _Timed.summary(timed.flush)
    r["txn_commit"] = _Timed.summary(timed.commit)
    r["log"] = log_problems("\n".join(collect.lines))
    return r


# ------------------------------------------------------------------ the run
async def _mock(
    rate: int, seconds: float, warmup: float, n: int, n_ticks: int, rounds: int
) -> dict[str, Any]:
    book = (10_000, 1_000)
    with MockCluster() as mock:
        bs = mock.bootstrap_servers
        # 1. The floor: the tick stream through the mock to the probe (one hop).
        hop_topic = f"bench-{uuid.uuid4().hex[:8]}-hop"
        mock.create_topics([(hop_topic, PARTITIONS)])
        print("bench mock: one hop ...", file=sys.stderr, flush=True)
        hop = await _pace_and_collect(bs, hop_topic, hop_topic, n, rate, seconds, warmup, _tick_of)
        # 2. Tick -> action under each guarantee.
        latency: dict[str, Any] = {}
        for key in LATENCY_MODES:
            print(f"bench mock: latency {key} ...", file=sys.stderr, flush=True)
            latency[key] = await _latency_run(mock, key, rate, seconds, warmup, n)
        # 3. Backlog throughput, the two guarantees alternated.
        runs: dict[str, list[dict[str, Any]]] = {ALO: [], EOS: []}
        for i in range(rounds):
            for guarantee in (ALO, EOS) if i % 2 == 0 else (EOS, ALO):
                print(f"bench mock: throughput {guarantee} ...", file=sys.stderr, flush=True)
                runs[guarantee].append(await _throughput_run(mock, guarantee, n_ticks, book))
        version = mock.librdkafka_version
    best = {g: max(rs, key=lambda x: x["ticks_per_s"]) for g, rs in runs.items()}
    return {
        "librdkafka": version,
        "usable_cores": len(os.sched_getaffinity(0)),
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
        "positions": n,
        "pacer_linger_ms": PACER_LINGER_MS,
        "probe_fetch_wait_ms": PROBE_FETCH_WAIT_MS,
        "hop": hop,
        "latency": latency,
        "throughput": {
            "positions": book[0],
            "assets": book[1],
            "ticks": n_ticks,
            "runs": runs,
            "best": best,
            "ratio": best[EOS]["ticks_per_s"] / best[ALO]["ticks_per_s"],
        },
    }


def run(quick: bool = False) -> dict[str, Any]:
    if quick:
        return asyncio.run(_mock(5_000, 4.0, 1.0, 10_000, 30_000, 1))
    return asyncio.run(_mock(5_000, 12.0, 2.0, 10_000, 120_000, 2))


# ------------------------------------------------------------------ rows and notes
def _trio(x: dict[str, Any], prefix: str = "") -> str:
    return (
        f"{x[prefix + 'p50_ms']:.1f} / {x[prefix + 'p99_ms']:.1f} / {x[prefix + 'p999_ms']:.1f} ms"
    )


def _healthy(x: dict[str, Any]) -> tuple[bool, str]:
    """Whether an engine run did what was asked: the guarantee in force, no error in its
    log, every action seen; and what to say if not."""
    problems = []
    gauge = x["guarantee_gauge"] if "guarantee_gauge" in x else x["check"]
    if gauge.get(x["guarantee"]) != 1.0:
        problems.append(f"GUARANTEE GAUGE {gauge}")
    if x["log"]["n_errors"]:
        problems.append(f"{x['log']['n_errors']} ERROR LINES IN ITS LOG")
    e = x.get("engine")
    if isinstance(e, dict) and "received" in e and e["received"] < e["sent"]:
        problems.append(f"ONLY {e['received']:,} OF {e['sent']:,} ACTIONS SEEN")
    return not problems, ("" if not problems else " — " + "; ".join(problems))


def rows(r: dict[str, Any]) -> list[Row]:
    h = r["hop"]
    floor = f"mock, one hop: {_trio(h)}"
    out = [
        Row(
            "11",
            f"librdkafka mock cluster: broker alone, one hop p50 / p99 / p999 at "
            f"{r['rate']:,} ticks/s (tick produced → consumed; {h['samples']:,} ticks)",
            _trio(h),
        )
    ]
    for key, x in r["latency"].items():
        ok, bad = _healthy(x)
        e, el = x["engine"], x["engine_latency"]
        out.append(
            Row(
                "11",
                f"mock, {LABELS[key]}: tick → action end to end p50 / p99 / p999 at "
                f"{r['rate']:,} ticks/s, {r['positions'] // 1000}k positions ({e['samples']:,} "
                "ticks; action consumed − tick sent, two hops)" + bad,
                _trio(e),
                floor,
                f"p99 {e['p99_ms'] / h['p99_ms']:.1f}× one hop",
                "p99 ≤ 10 ms",
                ok and e["p99_ms"] <= 10.0,
            )
        )
        out.append(
            Row(
                "11",
                f"mock, {LABELS[key]}: engine-added p50 / p99 / p999 (fetch → action acked, "
                f"`stream_risk_engine_latency_seconds`, {el['samples']:,.0f} actions; "
                "bucket-interpolated)",
                _trio(el),
                "–",
                "–",
                "p99 ≤ 5 ms",
                ok and el["p99_ms"] <= 5.0,
            )
        )
    t = r["throughput"]
    a, b = t["best"][ALO], t["best"][EOS]
    bad = "".join(_healthy(x)[1] for runs in t["runs"].values() for x in runs)
    out.append(
        Row(
            "11",
            f"mock: engine ticks/s draining a {t['ticks'] // 1000}k-tick backlog, "
            f"{t['positions'] // 1000}k positions on {t['assets'] // 1000}k assets, "
            "emit=changed: exactly-once vs at-least-once (best of "
            f"{len(t['runs'][EOS])} each, alternated)" + bad,
            f"{b['ticks_per_s']:,.0f} ticks/s exactly-once",
            f"{a['ticks_per_s']:,.0f} ticks/s at-least-once",
            f"{t['ratio']:.2f}×",
        )
    )
    return out


def notes(r: dict[str, Any]) -> list[str]:
    h, t = r["hop"], r["throughput"]
    lines = [
        f"11: librdkafka {r['librdkafka']} mock cluster (one broker, a host process), topics "
        "made through the host (6 partitions; risk-dlq 1), a fresh set per engine run. "
        f"Pacer linger {r['pacer_linger_ms']} ms, probe fetch_max_wait "
        f"{r['probe_fetch_wait_ms']} ms, {r['seconds']:g} s per run, first "
        f"{r['warmup']:g} s warm-up; {r['usable_cores']} usable cores for the mock, the "
        f"engine, the pacer and the probe. Floor: {h['received']:,} of {h['sent']:,} read, max "
        f"{h['max_ms']:.0f} ms. Under exactly-once the probe reads `read_committed` (an "
        "action shows there when its checkpoint's transaction commits: what a bot reading "
        "committed data sees), and the engine-added histogram stops at the action's ack, "
        "before the commit; the record-timestamp latency (action produced − tick's "
        "timestamp, ms resolution) shows the produce side."
    ]
    for key, x in r["latency"].items():
        e = x["engine"]
        lg = x["log"]
        warn = f"; warnings e.g. {lg['warnings'][:2]}" if lg["n_warnings"] else ""
        err = f"; ERRORS e.g. {lg['errors'][:3]}" if lg["n_errors"] else ""
        lines.append(
            f"11 ({key}: {x['guarantee']}, commit interval {x['commit_interval_ms']} ms, "
            f"probe {x['isolation_level']}): guarantee gauge {x['guarantee_gauge']}; "
            f"ready in {x['ready_s']:.1f} s; {e['sent']:,} ticks sent, {e['received']:,} "
            f"tick actions read, max {e['max_ms']:.0f} ms end to end; record timestamps "
            f"p50 / p99 / p999 {e['rec_p50_ms']:.0f} / {e['rec_p99_ms']:.0f} / "
            f"{e['rec_p999_ms']:.0f} ms; `stream_risk_transactions_total` "
            f"{x['transactions_metric']}, "
            f"fenced {x['fenced']:g}, dead letters {x['dlq']:g}; CPU (cores, over the pacing "
            f"window incl. the tail) engine {x['cpu_cores']['engine']:.2f}, mock "
            f"{x['cpu_cores']['mock']:.2f}, probe {x['cpu_cores']['probe']:.2f}; engine RSS "
            f"{x['engine_rss_mb']:.0f} MiB; log: {lg['n_errors']} error lines, "
            f"{lg['n_warnings']} warnings ({lg['alert_lines']} LIQUIDATE alert lines "
            f"apart){warn}{err}."
        )
    for g, runs in t["runs"].items():
        parts = []
        for x in runs:
            lg = x["log"]
            parts.append(
                f"{x['ticks_per_s']:,.0f} ticks/s ({x['seconds']:.2f} s, {x['actions']:,.0f} "
                f"actions, {x['cpu_s'] / x['ticks'] * 1e6:.1f} µs CPU/tick, check "
                f"{x['check']}, checkpoint flush {x['flush']}, transactions' commit "
                f"{x['txn_commit']}, log {lg['n_errors']} errors / {lg['n_warnings']} warnings"
                + (f": {lg['errors'][:2]}" if lg["n_errors"] else "")
                + ")"
            )
        lines.append(f"11 throughput {g}: " + "; ".join(parts) + ".")
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
