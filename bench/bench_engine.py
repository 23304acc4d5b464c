"""Benchmarks 3, 4 and 7: the stream engine on a real (embedded Tansu) broker.

    python -m bench.bench_engine throughput|latency|rebuild [--quick]

3. **Throughput.** A book of 10,000 positions on 1,000 assets is loaded and the engine
   (`StreamProcessor`, in this process, the way `stream-risk run` builds it) is started and
   settled. Its tick consumer is then paused while N ticks (price random walks, every 10th
   tick also carrying vol and spread) are pushed to `market-ticks` as fast as the broker
   takes them; on resume the engine works through the backlog: ticks/s consumed and
   actions/s acknowledged, from the resume to the end of a checkpoint after the step
   holding the last tick (every action acknowledged, offsets committed). Twice: the default
   `changed` emission, and
   `all` (every assessment published: the stress case). Baseline, on the same broker, the
   same ticks (the same backlog, re-read from the same offsets) and the same `risk-actions`
   topic: an aiokafka consume -> produce passthrough, `getmany(10,000)` and one record out
   per record in, with the engine's producer settings (acks=all, linger 2 ms); measured
   with per-record `send` and with `create_batch`/`send_batch`, the faster one is the
   ceiling.

4. **Latency.** `stream-risk run --emit all` as its own process (defaults otherwise),
   10,000 positions on 10,000 assets (one per asset: every tick makes exactly one action).
   A paced producer process sends 5,000 ticks/s; a consumer in this process reads
   `risk-actions`. Latency of a tick = the time its action is consumed minus the time the
   tick was sent (both wall clocks of this machine, in ns; the first seconds are warm-up).
   Also reported: the action record's own timestamp (set by the engine's producer when it
   sends) minus the tick's, at ms resolution.

7. **Rebuild.** N positions (one record each, as a compacted topic holds them) in
   `positions`; time to merely read them all (a plain consumer reading every partition to
   its end with the rebuild's own `read_to_end`) against the engine's rebuild of its table
   from them (the `stream_risk_rebuild_seconds` the processor itself observes: reader
   start, positions read, decoded and loaded, `risk-actions` read back, settled).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from bench._common import (
    BulkProducer,
    Rec,
    Row,
    broker,
    make_topic,
    make_topics,
    percentile,
    rss_bytes,
    wall_ms,
)
from stream_risk.engine import Engine, EngineConfig
from stream_risk.kafka.app import ProcessorConfig, StreamProcessor
from stream_risk.kafka.codec import decode_position
from stream_risk.kafka.embedded import free_port
from stream_risk.kafka.reader import read_to_end
from stream_risk.kafka.topics import TopicNames
from stream_risk.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240611


# ------------------------------------------------------------------ workload
def asset_name(i: int) -> str:
    return f"A{i:05d}"


def position_records(n: int, n_assets: int, ts: int, seed: int = SEED) -> Iterator[Rec]:
    """N positions spread over n_assets (round robin), longs and shorts, sizes ~$50k-$2M."""
    rnd = random.Random(seed)
    for i in range(n):
        a = i % n_assets
        price = 10 + (a % 97) * 13.0
        size = rnd.uniform(50_000, 2_000_000) / price * (1 if i % 2 == 0 else -1)
        body: dict[str, Any] = {
            "position_id": f"pos-{i:07d}",
            "asset": asset_name(a),
            "size": size,
            "entry_price": price * rnd.uniform(0.95, 1.05),
            "ts": ts,
            "age_minutes": rnd.uniform(0, 300),
        }
        if i % 100 == 0:
            body["config"] = {"max_loss_pct": 0.03}
        pid = body["position_id"].encode()
        yield Rec(pid, orjson.dumps(body), ts)


class _Consumed:
    """What the rebuild's reader hands the codec for one `positions` record."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, offset: int, partition: int, rec: Rec, ts: int) -> None:
        self.topic = "positions"
        self.partition = partition
        self.offset = offset
        self.timestamp = ts
        self.key = rec.key
        self.value = rec.value


def load_positions(engine: Engine, n: int, n_assets: int, ts: int, partitions: int = 6) -> None:
    """`position_records` into a pure `Engine` as the shell's rebuild loads a table:
    decoded record by record in batches of 10,000 (`Engine.load`), then every partition
    settled at `ts` + 60 s (its ids go into the sorted indexes there, as after a rebuild)."""
    batch: list[Any] = []
    for i, rec in enumerate(position_records(n, n_assets, ts)):
        batch.append(decode_position(_Consumed(i, i % partitions, rec, ts)))
        if len(batch) == 10_000:
            engine.load(batch)
            batch = []
    engine.load(batch)
    for partition in range(partitions):
        engine.settle(partition, ts + 60_000)


def full_tick(a: int, ts: int, rnd: random.Random) -> dict[str, Any]:
    price = 10 + (a % 97) * 13.0
    return {
        "asset": asset_name(a),
        "ts": ts,
        "current_price": price,
        "volatility_1d": rnd.uniform(0.01, 0.09),
        "spot_spread_bps": rnd.uniform(1, 8),
        "perp_funding_rate": rnd.uniform(-0.1, 0.1),
        "bid_depth_usd": rnd.uniform(2e6, 2e7),
        "ask_depth_usd": rnd.uniform(2e6, 2e7),
    }


def initial_ticks(n_assets: int, ts: int, seed: int = SEED) -> Iterator[Rec]:
    rnd = random.Random(seed + 1)
    for a in range(n_assets):
        t = full_tick(a, ts, rnd)
        yield Rec(t["asset"].encode(), orjson.dumps(t), ts)


def tick_stream(n: int, n_assets: int, ts0: int, seed: int = SEED) -> Iterator[Rec]:
    """N ticks cycling over the assets: a price random walk (0.1 % a tick); every 10th
    round of ticks also carries vol and spread, which drift (2 % a step). Event times
    increase per asset (1 ms per 10 ticks overall): no tick is out of order or a duplicate.
    """
    rnd = random.Random(seed + 2)
    init = random.Random(seed + 1)
    prices = [10 + (a % 97) * 13.0 for a in range(n_assets)]
    vols, spreads = [], []
    for a in range(n_assets):
        t = full_tick(a, 0, init)
        vols.append(t["volatility_1d"])
        spreads.append(t["spot_spread_bps"])
    for i in range(n):
        a = i % n_assets
        prices[a] *= 1 + rnd.gauss(0, 0.001)
        ts = ts0 + i // 10
        body: dict[str, Any] = {"asset": asset_name(a), "ts": ts, "current_price": prices[a]}
        if (i // n_assets) % 10 == 0:
            vols[a] = min(0.5, vols[a] * math.exp(rnd.gauss(0, 0.02)))
            spreads[a] = min(50.0, spreads[a] * math.exp(rnd.gauss(0, 0.02)))
            body["volatility_1d"] = vols[a]
            body["spot_spread_bps"] = spreads[a]
        yield Rec(body["asset"].encode(), orjson.dumps(body), ts)


def processor_config(bootstrap: str, names: TopicNames, **kw: Any) -> ProcessorConfig:
    return ProcessorConfig(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        positions_topic=names.positions,
        ticks_topic=names.market_ticks,
        actions_topic=names.risk_actions,
        dlq_topic=names.risk_dlq,
        # Short sessions: the group join takes ~1 s on the embedded broker (10 s: ~5 s).
        session_timeout_ms=2_000,
        heartbeat_interval_ms=200,
        **kw,
    )


class _window_profiler:
    """cProfile of a measured window when `STREAM_RISK_BENCH_PROFILE=DIR` is set (the
    figures of a profiled run are not meaningful: the profiler slows everything)."""

    def __init__(self, name: str) -> None:
        self.path: str | None = None
        self.prof: Any = None
        out = os.environ.get("STREAM_RISK_BENCH_PROFILE")
        if out:
            import cProfile

            os.makedirs(out, exist_ok=True)
            self.path = os.path.join(out, f"{name}.prof")
            self.prof = cProfile.Profile()
            self.prof.enable()

    def stop(self) -> None:
        if self.prof is not None:
            self.prof.disable()
            self.prof.dump_stats(self.path)
            print(f"bench: profile of the window written to {self.path}", file=sys.stderr)
            self.prof = None


def counter(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    v = registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def published(registry: CollectorRegistry) -> float:
    """Actions acknowledged by the broker (every action type, tombstones too)."""
    total = 0.0
    for metric in registry.collect():
        if metric.name == "stream_risk_actions_published":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


@contextlib.asynccontextmanager
async def running(
    cfg: ProcessorConfig, ecfg: EngineConfig
) -> Any:  # AsyncIterator[tuple[StreamProcessor, CollectorRegistry]]
    registry = CollectorRegistry()
    proc = StreamProcessor(cfg, ecfg, Metrics.for_registry(registry))
    await proc.start()
    task = asyncio.create_task(proc.run())
    try:
        deadline = time.monotonic() + 120
        while not proc.is_ready()[0]:
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise RuntimeError(f"engine not ready: {proc.is_ready()[1]}")
            await asyncio.sleep(0.02)
        yield proc, registry
    finally:
        proc.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        await proc.stop()


async def until(cond: Any, what: str, timeout: float = 120, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, timeout: float = 30) -> list[int]:
    """The partitions of `topic` as the consumer's metadata knows them; asked for when not
    known yet (aiokafka's first metadata names no topic on brokers other than Tansu, e.g.
    librdkafka's mock cluster: `partitions_for_topic` is None until a metadata update)."""
    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no partitions known for topic {topic!r}")
        await consumer._client.force_metadata_update()  # no topics of its own: asks for all
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ 3: throughput
async def _partition_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Current end of each partition, from a fetch's high watermark (right on Tansu)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(c, topic)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        ends: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while len(ends) < len(tps) and time.monotonic() < deadline:
            await c.getmany(timeout_ms=100, max_records=1)
            for tp in tps:
                hw = c.highwater(tp)
                if hw is not None:
                    ends[tp.partition] = hw
        return ends
    finally:
        await c.stop()


async def _engine_backlog(
    bootstrap: str,
    names: TopicNames,
    emit: str,
    n_ticks: int,
    book: tuple[int, int],
    *,
    check: Any = None,
    **kw: Any,
) -> dict[str, Any]:
    """Engine ticks/s draining a backlog (bench 3). `kw` go to the `ProcessorConfig`;
    `check(proc, registry)`, if given, is called at the end of the window and its answer
    returned under "check" (e.g. the processing guarantee in force)."""
    n_pos, n_assets = book
    t0 = wall_ms()
    async with BulkProducer(bootstrap) as bp:
        await bp.produce(names.positions, position_records(n_pos, n_assets, t0 - 60_000))
        await bp.produce(names.market_ticks, initial_ticks(n_assets, t0 - 1_000))
    cfg = processor_config(bootstrap, names, **kw)
    async with running(cfg, EngineConfig(emit=emit)) as (proc, reg):  # type: ignore[arg-type]
        # The settle after the rebuild assesses (and publishes) every position once.
        await until(lambda: published(reg) >= n_pos, "the initial actions")
        async with proc._lock:  # the loop is between steps
            pass
        ticks = proc._ticks  # the broadcast-table consumer (private: benchmark only)
        assert ticks is not None
        tps = sorted(ticks.assignment())
        ticks.pause(*tps)
        await asyncio.sleep(0.6)  # let an in-flight getmany return empty
        start = await _partition_ends(bootstrap, names.market_ticks)
        async with BulkProducer(bootstrap) as bp:
            t_p = time.perf_counter()
            await bp.produce(names.market_ticks, tick_stream(n_ticks, n_assets, t0))
            produce_s = time.perf_counter() - t_p
        label = {"topic": names.market_ticks}
        c0 = counter(reg, "stream_risk_records_consumed_total", label)
        p0 = published(reg)
        a0 = proc.engine.stats.assessments
        gc.collect()
        profiler = _window_profiler(f"throughput-{emit}")
        t_start = time.perf_counter()
        cpu0 = time.process_time()
        ticks.resume(*tps)
        await until(
            lambda: counter(reg, "stream_risk_records_consumed_total", label) - c0 >= n_ticks,
            "the backlog to be consumed",
            every=0.002,
        )
        # The step holding the last ticks has produced; a checkpoint awaits every ack (and
        # commits): the end of the window.
        await proc.checkpoint()
        elapsed = time.perf_counter() - t_start
        cpu = time.process_time() - cpu0
        profiler.stop()
        checked = None if check is None else check(proc, reg)
        actions = published(reg) - p0
        assessments = proc.engine.stats.assessments - a0
    return {
        "emit": emit,
        "ticks": n_ticks,
        "seconds": elapsed,
        "ticks_per_s": n_ticks / elapsed,
        "actions": actions,
        "actions_per_s": actions / elapsed,
        "assessments": assessments,
        "cpu_s": cpu,
        "produce_ticks_per_s": n_ticks / produce_s,
        "start_offsets": start,
        "check": checked,
    }


async def _passthrough(
    bootstrap: str,
    names: TopicNames,
    start: dict[int, int],
    n: int,
    batch: bool,
) -> dict[str, Any]:
    """Consume the same backlog, produce each record to `risk-actions` (same partition)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=10_000,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, max_batch_size=1 << 20
    )
    await consumer.start()
    await producer.start()
    out = names.risk_actions
    try:
        tps = [TopicPartition(names.market_ticks, p) for p in sorted(start)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        await producer.partitions_for(out)
        gc.collect()
        done = 0
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        while done < n:
            got = await consumer.getmany(timeout_ms=500, max_records=10_000)
            futures = []
            for tp, records in got.items():
                if batch:
                    b = producer.create_batch()
                    for r in records:
                        if b.append(timestamp=None, key=r.key, value=r.value) is None:
                            futures.append(
                                await producer.send_batch(b, out, partition=tp.partition)
                            )
                            b = producer.create_batch()
                            b.append(timestamp=None, key=r.key, value=r.value)
                    futures.append(await producer.send_batch(b, out, partition=tp.partition))
                else:
                    for r in records:
                        futures.append(
                            await producer.send(
                                out, value=r.value, key=r.key, partition=tp.partition
                            )
                        )
                done += len(records)
            await asyncio.gather(*futures)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "mode": "send_batch" if batch else "send",
        "records": done,
        "seconds": elapsed,
        "per_s": done / elapsed,
        "cpu_s": cpu,
    }


async def _throughput(n_ticks: int) -> dict[str, Any]:
    book = (10_000, 1_000)
    runs: dict[str, Any] = {}
    async with broker() as bs:
        for emit in ("changed", "all"):
            names = await make_topics(bs)
            eng = await _engine_backlog(bs, names, emit, n_ticks, book)
            # The ceiling, on the same broker, the same backlog and the same output topic.
            passes = [
                await _passthrough(bs, names, eng["start_offsets"], n_ticks, batch)
                for batch in (False, True)
            ]
            best = max(passes, key=lambda p: p["per_s"])
            eng.pop("start_offsets")
            runs[emit] = {
                "engine": eng,
                "passthrough": passes,
                "ceiling": best,
                "ratio": eng["ticks_per_s"] / best["per_s"],
            }
    return {"positions": book[0], "assets": book[1], "ticks": n_ticks, "runs": runs}


def run_throughput(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_throughput(60_000 if quick else 300_000))


def rows_throughput(r: dict[str, Any]) -> list[Row]:
    out = []
    for emit, label in (("changed", "emit=changed (default)"), ("all", "emit=all (stress)")):
        x = r["runs"][emit]
        e, c = x["engine"], x["ceiling"]
        out.append(
            Row(
                "3",
                f"engine ticks/s consumed, {r['positions'] // 1000}k positions on "
                f"{r['assets'] // 1000}k assets, {r['ticks'] // 1000}k-tick backlog, {label}; "
                f"actions/s",
                f"{e['ticks_per_s']:,.0f} ticks/s; {e['actions_per_s']:,.0f} actions/s",
                f"{c['per_s']:,.0f} rec/s (passthrough, {c['mode']})",
                f"{x['ratio']:.2f}×",
                "≥ 0.7×",
                x["ratio"] >= 0.7,
            )
        )
    return out


def notes_throughput(r: dict[str, Any]) -> list[str]:
    lines = []
    for emit in ("changed", "all"):
        x = r["runs"][emit]
        e = x["engine"]
        ps = ", ".join(
            f"{p['mode']} {p['per_s']:,.0f} rec/s "
            f"({p['cpu_s'] / p['records'] * 1e6:.1f} µs CPU/rec)"
            for p in x["passthrough"]
        )
        lines.append(
            f"3 ({emit}): {e['ticks']:,} ticks in {e['seconds']:.2f} s, {e['assessments']:,} "
            f"assessments, {e['actions']:,.0f} actions, {e['cpu_s'] / e['ticks'] * 1e6:.1f} µs "
            f"engine CPU per tick; backlog produced at {e['produce_ticks_per_s']:,.0f} ticks/s; "
            f"passthrough: {ps}."
        )
    return lines


# ------------------------------------------------------------------ 4: latency
#: The tick producer batches for up to this long. At 0 its ~2,000 tiny produce requests a
#: second saturate the embedded broker's CPU, and every latency measured is the broker's.
PACER_LINGER_MS = 2
#: fetch_max_wait of the consumer this benchmark measures with (its own added delay; a
#: shorter one polls the embedded broker hard enough to slow everything it measures).
PROBE_FETCH_WAIT_MS = 10


def _pacer(bootstrap: str, topic: str, n_assets: int, rate: int, seconds: float, out: str) -> None:
    """A separate process: `rate` ticks/s for `seconds`; writes "asset,ts" -> sent at (ns)."""
    asyncio.run(_pace(bootstrap, topic, n_assets, rate, seconds, out))


async def _pace(
    bootstrap: str, topic: str, n_assets: int, rate: int, seconds: float, out: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=PACER_LINGER_MS)
    await producer.start()
    rnd = random.Random(SEED + 3)
    prices = [10 + (a % 97) * 13.0 for a in range(n_assets)]
    sent: dict[str, int] = {}
    futures: list[Any] = []
    last_ts = [0] * n_assets
    try:
        total = int(rate * seconds)
        t0 = time.perf_counter()
        i = 0
        while i < total:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            while i < due:
                a = i % n_assets
                prices[a] *= 1 + rnd.gauss(0, 0.001)
                now_ns = time.time_ns()
                ts = max(now_ns // 1_000_000, last_ts[a] + 1)
                last_ts[a] = ts
                name = asset_name(a)
                body = {"asset": name, "ts": ts, "current_price": prices[a]}
                sent[f"{a},{ts}"] = now_ns
                futures.append(
                    await producer.send(
                        topic, value=orjson.dumps(body), key=name.encode(), timestamp_ms=ts
                    )
                )
                i += 1
            if len(futures) > 2000:
                await asyncio.gather(*futures)
                futures.clear()
            await asyncio.sleep(0.0005)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    with open(out, "wb") as f:
        f.write(orjson.dumps(sent))


#: What a consumed record says: (asset index, tick ts) and the record's own timestamp;
#: None for a record that is not a measured one.
Extract = Any


async def _pace_and_collect(
    bootstrap: str,
    tick_topic: str,
    read_topic: str,
    n_assets: int,
    rate: int,
    seconds: float,
    warmup: float,
    extract: Extract,
    skip: int = 0,
    isolation_level: str = "read_uncommitted",
) -> dict[str, Any]:
    """Pace ticks into `tick_topic` (another process) while this one reads `read_topic` from
    its beginning; latency of each measured record = consumed at - its tick's sent at.
    `isolation_level="read_committed"`: the probe sees a transactional producer's records
    only once their transaction commits (what a reader of committed data sees)."""
    import tempfile

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=PROBE_FETCH_WAIT_MS,
        max_poll_records=10_000,
        isolation_level=isolation_level,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(read_topic, p) for p in await partitions_of(consumer, read_topic)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        seen = 0
        while seen < skip:  # records already there (the engine's first actions)
            got = await consumer.getmany(timeout_ms=200)
            seen += sum(len(v) for v in got.values())
        fd, out = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        pacer = multiprocessing.get_context("spawn").Process(
            target=_pacer, args=(bootstrap, tick_topic, n_assets, rate, seconds, out), daemon=True
        )
        received: list[tuple[int, int, int, int]] = []  # consumed ns, asset, tick ts, rec ts
        pacer.start()
        expected = int(rate * seconds)
        deadline = time.monotonic() + seconds + 60
        while len(received) < expected and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=200, max_records=10_000)
            now = time.time_ns()
            for records in got.values():
                for r in records:
                    x = extract(r)
                    if x is not None:
                        received.append((now, x[0], x[1], r.timestamp))
            if not pacer.is_alive() and not got and len(received) < expected:
                deadline = min(deadline, time.monotonic() + 5)  # the tail, then stop
        pacer.join(30)
        with open(out, "rb") as f:
            sent: dict[str, int] = orjson.loads(f.read())
        os.unlink(out)
    finally:
        await consumer.stop()
    first = min(sent.values())
    lat: list[float] = []
    lat_rec: list[float] = []
    for consumed_ns, a, tick_ts, rec_ts in received:
        sent_ns = sent.get(f"{a},{tick_ts}")
        if sent_ns is None or sent_ns - first < warmup * 1e9:
            continue
        lat.append((consumed_ns - sent_ns) / 1e6)
        lat_rec.append(float(rec_ts - tick_ts))
    lat.sort()
    lat_rec.sort()
    return {
        "sent": len(sent),
        "received": len(received),
        "samples": len(lat),
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "p999_ms": percentile(lat, 0.999),
        "max_ms": lat[-1] if lat else math.nan,
        "rec_p50_ms": percentile(lat_rec, 0.50),
        "rec_p99_ms": percentile(lat_rec, 0.99),
        "rec_p999_ms": percentile(lat_rec, 0.999),
        "rec_max_ms": lat_rec[-1] if lat_rec else math.nan,
    }


def _tick_of(r: Any) -> tuple[int, int] | None:
    v = orjson.loads(r.value)
    return int(v["asset"][1:]), v["ts"]


def _action_of(r: Any) -> tuple[int, int] | None:
    v = orjson.loads(r.value)
    if v["trigger"] != "tick":
        return None
    return int(v["asset"][1:]), v["tick_ts"]


@contextlib.contextmanager
def _engine_process(
    bootstrap: str,
    names: TopicNames,
    port: int,
    extra: Sequence[str] = (),
    log_path: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`stream-risk run --emit all` (and `extra` arguments) as its own process (its output
    goes to `log_path`, else a temp file, shown if it fails); SIGTERM on the way out."""
    import tempfile

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STREAM_RISK_TOPIC_POSITIONS": names.positions,
        "STREAM_RISK_TOPIC_MARKET_TICKS": names.market_ticks,
        "STREAM_RISK_TOPIC_ACTIONS": names.risk_actions,
        "STREAM_RISK_TOPIC_DLQ": names.risk_dlq,
    }
    cmd = [
        sys.executable,
        "-m",
        "stream_risk",
        "run",
        "--bootstrap-servers",
        bootstrap,
        "--http-port",
        str(port),
        "--group-id",
        f"bench-{uuid.uuid4().hex[:8]}",
        "--emit",
        "all",
        *extra,
    ]
    opened = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    with opened as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        except BaseException:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
            print(f"bench: the engine's output:\n{tail}", file=sys.stderr)
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the engine exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the engine did not become ready")


async def _latency(rate: int, seconds: float, warmup: float, n: int) -> dict[str, Any]:
    async with broker() as bs:
        # The floor: the same tick stream through the broker to a plain consumer (one hop).
        hop_topic = await make_topic(bs, f"bench-{uuid.uuid4().hex[:8]}-hop")
        hop = await _pace_and_collect(bs, hop_topic, hop_topic, n, rate, seconds, warmup, _tick_of)
        names = await make_topics(bs)
        t0 = wall_ms()
        async with BulkProducer(bs) as bp:
            await bp.produce(names.positions, position_records(n, n, t0 - 60_000))
            await bp.produce(names.market_ticks, initial_ticks(n, t0 - 1_000))
        port = free_port()
        with _engine_process(bs, names, port) as engine:
            await _wait_ready(port, engine)

            async def after_warmup() -> dict[float, float]:
                await asyncio.sleep(warmup)
                return await asyncio.to_thread(_latency_buckets, port)

            warm = asyncio.create_task(after_warmup())
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
            )
            engine_rss = _rss_of(engine.pid)
            end = await asyncio.to_thread(_latency_buckets, port)
            start_buckets = await warm
    added = {le: end[le] - start_buckets.get(le, 0.0) for le in end}
    return {
        "engine_latency": {
            "samples": added.get(math.inf, 0.0),
            "p50_ms": _bucket_quantile(added, 0.50) * 1000,
            "p99_ms": _bucket_quantile(added, 0.99) * 1000,
        },
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
        "positions": n,
        "pacer_linger_ms": PACER_LINGER_MS,
        "probe_fetch_wait_ms": PROBE_FETCH_WAIT_MS,
        "engine": eng,
        "hop": hop,
        "engine_rss_mb": engine_rss / 2**20,
    }


ENGINE_LATENCY = "stream_risk_engine_latency_seconds_bucket"


def _latency_buckets(port: int) -> dict[float, float]:
    """The engine's `stream_risk_engine_latency_seconds` buckets (le -> cumulative count),
    scraped from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(ENGINE_LATENCY + "{"):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            out[math.inf if le == "+Inf" else float(le)] = float(value)
    return out


def _bucket_quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile of a cumulative histogram, interpolated within its bucket the way
    Prometheus' histogram_quantile does (the +Inf bucket answers its lower bound)."""
    les = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return math.nan
    rank = q * total
    lo, below = 0.0, 0.0
    for le in les:
        count = buckets[le]
        if count >= rank:
            if le == math.inf:
                return lo
            inside = count - below
            return lo + (le - lo) * ((rank - below) / inside if inside > 0 else 1.0)
        lo, below = le, count
    return lo


def _rss_of(pid: int) -> int:
    try:
        return rss_bytes(pid)
    except OSError:
        return 0


def run_latency(quick: bool = False) -> dict[str, Any]:
    if quick:
        return asyncio.run(_latency(5_000, 4.0, 1.0, 10_000))
    return asyncio.run(_latency(5_000, 15.0, 2.0, 10_000))


def rows_latency(r: dict[str, Any]) -> list[Row]:
    e, h = r["engine"], r["hop"]
    complete = e["received"] >= e["sent"]
    lost = "" if complete else f" — ONLY {e['received']:,} OF {e['sent']:,} ACTIONS SEEN"
    return [
        Row(
            "4",
            f"tick → action latency p50 / p99 / p999 at {r['rate']:,} ticks/s, "
            f"{r['positions'] // 1000}k positions ({e['samples']:,} ticks): action record's "
            "timestamp − tick's create timestamp (ms resolution)" + lost,
            f"{e['rec_p50_ms']:.0f} / {e['rec_p99_ms']:.0f} / {e['rec_p999_ms']:.0f} ms",
            f"broker alone, one hop: {h['p50_ms']:.1f} / {h['p99_ms']:.1f} / {h['p999_ms']:.1f} ms",
            "–",
            "p99 ≤ 10 ms",
            complete and e["rec_p99_ms"] <= 10.0,
        ),
        Row(
            "4",
            "tick → action end to end p50 / p99 / p999: action consumed − tick sent (two "
            "broker hops)",
            f"{e['p50_ms']:.1f} / {e['p99_ms']:.1f} / {e['p999_ms']:.1f} ms",
            f"broker alone, one hop: {h['p50_ms']:.1f} / {h['p99_ms']:.1f} / {h['p999_ms']:.1f} ms",
            f"p99 {e['p99_ms'] / h['p99_ms']:.1f}× one hop",
        ),
        Row(
            "4",
            "engine-added latency p50 / p99: a tick's fetch (getmany returned it) → its "
            "action acknowledged (`stream_risk_engine_latency_seconds`, "
            f"{r['engine_latency']['samples']:,.0f} actions after warm-up; bucket-interpolated)",
            f"{r['engine_latency']['p50_ms']:.1f} / {r['engine_latency']['p99_ms']:.1f} ms",
            "–",
            "–",
            "p99 ≤ 5 ms",
            r["engine_latency"]["p99_ms"] <= 5.0,
        ),
    ]


def notes_latency(r: dict[str, Any]) -> list[str]:
    e, h = r["engine"], r["hop"]
    return [
        f"4: `stream-risk run --emit all` (its own process, defaults otherwise), "
        f"{r['positions']:,} positions on as many assets: every tick makes one action. Ticks "
        f"from a paced producer process (linger {r['pacer_linger_ms']} ms: at 0 its tiny "
        "requests saturate the embedded broker); a probe consumer in the benchmark process "
        f"(fetch_max_wait {r['probe_fetch_wait_ms']} ms) reads the actions; the first "
        f"{r['warmup']:g} s are warm-up. {e['sent']:,} ticks sent, {e['received']:,} tick "
        f"actions read, max {e['max_ms']:.0f} ms end to end. Broker floor: the same tick "
        f"stream to the same probe ({h['received']:,} of {h['sent']:,} read). Engine RSS "
        f"{r['engine_rss_mb']:.0f} MiB."
    ]


# ------------------------------------------------------------------ 7: rebuild
async def _consume_only(bootstrap: str, topic: str) -> tuple[float, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10_000,
    )
    await consumer.start()
    count = 0

    def on_records(tp: TopicPartition, records: Sequence[Any]) -> None:
        nonlocal count
        count += len(records)

    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        gc.collect()
        t0 = time.perf_counter()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await read_to_end(consumer, tps, on_records)
        return time.perf_counter() - t0, count
    finally:
        await consumer.stop()


async def _rebuild_one(bootstrap: str, n: int) -> dict[str, Any]:
    names = await make_topics(bootstrap)
    t0 = wall_ms()
    async with BulkProducer(bootstrap) as bp:
        tp0 = time.perf_counter()
        await bp.produce(names.positions, position_records(n, 1_000, t0 - 60_000))
        produce_s = time.perf_counter() - tp0
    consume_s, count = await _consume_only(bootstrap, names.positions)
    gc.collect()
    rss0 = rss_bytes()
    cfg = processor_config(bootstrap, names)
    profiler = _window_profiler(f"rebuild-{n}")
    t_start = time.perf_counter()
    async with running(cfg, EngineConfig()) as (proc, reg):
        ready_s = time.perf_counter() - t_start
        profiler.stop()
        rebuild_s = reg.get_sample_value("stream_risk_rebuild_seconds_sum") or math.nan
        table = len(proc.engine.table.positions)
        gc.collect()
        rss = rss_bytes() - rss0
    return {
        "positions": n,
        "records": count,
        "produce_s": produce_s,
        "consume_s": consume_s,
        "rebuild_s": rebuild_s,
        "start_to_ready_s": ready_s,
        "table": table,
        "ratio": rebuild_s / consume_s,
        "rss_per_position": rss / n,
    }


async def _rebuild(sizes: Sequence[int]) -> dict[str, Any]:
    out = []
    async with broker() as bs:
        for n in sizes:
            out.append(await _rebuild_one(bs, n))
    return {"runs": out}


def run_rebuild(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_rebuild([50_000] if quick else [200_000, 1_000_000]))


def rows_rebuild(r: dict[str, Any]) -> list[Row]:
    out = []
    for x in r["runs"]:
        n = x["positions"]
        ok = x["table"] == n and x["records"] == n
        target = "≤ 10 s and ≤ 1.5×"
        met = ok and x["rebuild_s"] <= 10.0 and x["ratio"] <= 1.5
        out.append(
            Row(
                "7",
                f"table rebuild, {n:,} positions"
                + ("" if ok else f" — TABLE HAS {x['table']:,}, READ {x['records']:,}"),
                f"{x['rebuild_s']:.2f} s ({n / x['rebuild_s']:,.0f} rec/s)",
                f"{x['consume_s']:.2f} s consume-only ({n / x['consume_s']:,.0f} rec/s)",
                f"{x['ratio']:.2f}×",
                target if n >= 1_000_000 else "(≤ 1.5×)",
                met if n >= 1_000_000 else (ok and x["ratio"] <= 1.5),
            )
        )
    return out


def notes_rebuild(r: dict[str, Any]) -> list[str]:
    return [
        f"7 ({x['positions']:,}): produced in {x['produce_s']:.1f} s; engine start → ready "
        f"{x['start_to_ready_s']:.2f} s (incl. the group join); shell RSS growth "
        f"{x['rss_per_position']:,.0f} B per position."
        for x in r["runs"]
    ]


# ------------------------------------------------------------------ CLI
RUNS = {
    "throughput": (run_throughput, rows_throughput, notes_throughput),
    "latency": (run_latency, rows_latency, notes_latency),
    "rebuild": (run_rebuild, rows_rebuild, notes_rebuild),
}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")] or list(RUNS)
    for name in names:
        fn, rows, notes = RUNS[name]
        r = fn(quick)
        print(json.dumps(r, indent=2, default=str))
        for row in rows(r):
            print(row)
        for line in notes(r):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
