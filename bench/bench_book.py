"""Benchmark 10: one book across instances (issue 14, DESIGN §13, docs/design.md D17).

    python -m bench book [--quick]

Two `stream-risk run` processes, A and B, in one consumer group over an embedded Tansu
broker, with the book stage on (`risk-book-partials` with the positions' 6 partitions,
`risk-book` with 1): 600 two-sided positions on 6 assets, one tick each. Then, one at a
time, a position on a `positions` partition A owns is resized (its asset's net size moves
by a known amount), and the time is taken from just before the produce call to:

- **the view**: B's `GET /exposure` (polled every ~1 ms over one keep-alive connection)
  showing the asset's new net notional (Σ size × price, to 1e-9 relative): the path is
  positions → A's step → `risk-book-partials` → the asset's owner (A or B) → `risk-book`
  → B's broadcast view, three broker hops and two stage passes;
- **the record**: the asset's `risk-book` record with the new net size consumed by a probe
  consumer in this process (the same path without B's last read and the HTTP poll).

Baseline in the same run, on the same broker, measured the same way (one at a time, from
just before the produce call) and interleaved with the updates (one after each, so both see
the same moment's machine): one record produced to a one-partition topic and consumed by a
probe consumer (one broker hop), with the engine's producer settings (acks=all, linger
2 ms) and the probe's fetch_max_wait of 10 ms (the engine's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from bench._common import PARTITIONS, Row, broker, make_topic, percentile
from stream_risk.kafka.embedded import free_port
from stream_risk.kafka.topics import TopicNames, create_topics, topic_specs

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261130
#: The engine's own settings (ProcessorConfig): producer linger, consumer fetch wait.
LINGER_MS = 2
FETCH_WAIT_MS = 10
ASSIGNED = re.compile(r"assigned positions partitions \[([\d, ]*)\]")
BOOK_ASSIGNED = re.compile(r"assigned book partitions \[([\d, ]*)\]")


# ------------------------------------------------------------------ the engines
class Engine:
    """One `stream-risk run` child process (output to a temp file)."""

    def __init__(self, bootstrap: str, names: TopicNames, group: str, name: str) -> None:
        self.name = name
        self.port = free_port()
        fd, log = tempfile.mkstemp(prefix=f"bench-book-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "STREAM_RISK_TOPIC_POSITIONS": names.positions,
            "STREAM_RISK_TOPIC_MARKET_TICKS": names.market_ticks,
            "STREAM_RISK_TOPIC_ACTIONS": names.risk_actions,
            "STREAM_RISK_TOPIC_DLQ": names.risk_dlq,
            "STREAM_RISK_TOPIC_CONFIG": names.risk_config,
            "STREAM_RISK_TOPIC_ALERTS": names.risk_alerts,
            "STREAM_RISK_TOPIC_BOOK_PARTIALS": names.risk_book_partials,
            "STREAM_RISK_TOPIC_BOOK": names.risk_book,
        }
        cmd = [
            sys.executable,
            "-m",
            "stream_risk",
            "run",
            "--bootstrap-servers",
            bootstrap,
            "--http-port",
            str(self.port),
            "--group-id",
            group,
        ]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assigned(self, pattern: re.Pattern[str] = ASSIGNED) -> set[int]:
        found = pattern.findall(self.log())
        return {int(p) for p in found[-1].split(",") if p.strip()} if found else set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


@contextlib.contextmanager
def engines(bootstrap: str, names: TopicNames, n: int) -> Iterator[list[Engine]]:
    group = f"bench-book-{uuid.uuid4().hex[:8]}"
    started: list[Engine] = []
    try:
        for i in range(n):
            started.append(Engine(bootstrap, names, group, "AB"[i]))
        yield started
    except BaseException:
        for e in started:
            print(f"bench: {e.name}'s output:\n{e.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for e in started:
            e.stop()


async def until(cond: Any, what: str, timeout: float = 120, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok = cond()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as r:
        if r.status != 200:
            return None
        return orjson.loads(await r.read())


# ------------------------------------------------------------------ the book
@dataclass
class Position:
    pid: str
    asset: str
    size: float
    entry: float
    partition: int

    def body(self, ts: int) -> bytes:
        return orjson.dumps(
            {
                "position_id": self.pid,
                "asset": self.asset,
                "size": self.size,
                "entry_price": self.entry,
                "ts": ts,
                "age_minutes": 30.0,
            }
        )


def make_book(n: int, n_assets: int, rnd: random.Random) -> tuple[list[Position], dict[str, float]]:
    prices = {f"B{j:02d}": 50.0 + 37.0 * j for j in range(n_assets)}
    assets = list(prices)
    part = DefaultPartitioner()
    every = list(range(PARTITIONS))
    book = []
    for i in range(n):
        pid = f"pos-{i:05d}"
        a = rnd.choice(assets)
        notional = math.exp(rnd.uniform(math.log(1e3), math.log(3e6)))
        size = round(notional / prices[a] * rnd.choice([1, -1]), 6) or 1.0
        p = part(pid.encode(), every, every)
        book.append(Position(pid, a, size, round(prices[a] * rnd.uniform(0.9, 1.1), 4), p))
    return book, prices


def net_sizes(book: list[Position]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in book:
        out[p.asset] = out.get(p.asset, 0.0) + p.size
    return out


def tick(asset: str, price: float, ts: int) -> bytes:
    return orjson.dumps(
        {
            "asset": asset,
            "ts": ts,
            "current_price": price,
            "volatility_1d": 0.03,
            "spot_spread_bps": 2.0,
            "perp_funding_rate": 0.01,
            "bid_depth_usd": 1e6,
            "ask_depth_usd": 1e6,
        }
    )


# ------------------------------------------------------------------ probes
@contextlib.asynccontextmanager
async def probe(bootstrap: str, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of every partition of `topic`, at its current end."""
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        if parts is None:
            await c.topics()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        while any((await c.getmany(timeout_ms=300)).values()):
            pass  # read what is there (the embedded broker's end offsets are not trusted)
        yield c
    finally:
        await c.stop()


def producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=LINGER_MS)


async def hop_once(p: AIOKafkaProducer, c: AIOKafkaConsumer, topic: str, i: int) -> float:
    """Baseline: one record produced, until the probe consumes it (ms)."""
    mark = str(i).encode()
    t0 = time.perf_counter()
    fut = await p.send(topic, value=mark, key=b"k")
    seen = False
    while not seen:
        got = await c.getmany(timeout_ms=1000)
        seen = any(r.value == mark for rs in got.values() for r in rs)
    took = (time.perf_counter() - t0) * 1000
    await fut
    return took


async def _run(n_updates: int, n_positions: int, n_assets: int) -> dict[str, Any]:
    rnd = random.Random(SEED)
    async with broker() as bs:
        hop_topic = await make_topic(bs, f"bench-{uuid.uuid4().hex[:8]}-book-hop", 1)
        hop: list[float] = []
        names = TopicNames.with_prefix(f"bench-{uuid.uuid4().hex[:8]}-")
        await create_topics(bs, topic_specs(names, partitions=PARTITIONS))
        book, prices = make_book(n_positions, n_assets, rnd)
        ts0 = time.time_ns() // 1_000_000
        p = producer(bs)
        await p.start()
        try:
            for a, price in prices.items():
                await p.send(names.market_ticks, tick(a, price, ts0), key=a.encode())
            futs = [
                await p.send(
                    names.positions, x.body(ts0), key=x.pid.encode(), partition=x.partition
                )
                for x in book
            ]
            await asyncio.gather(*futs)
            with engines(bs, names, 2) as (a_eng, b_eng):
                t_start = time.monotonic()

                def split() -> bool:
                    got = [a_eng.assigned(), b_eng.assigned()]
                    return all(got) and got[0] | got[1] == set(range(PARTITIONS))

                await until(split, "A and B to split the positions partitions")
                async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=10),
                    connector=aiohttp.TCPConnector(limit=1),
                ) as session:
                    url = b_eng.url + "/exposure"

                    async def whole() -> bool:
                        for e in (a_eng, b_eng):
                            if e.proc.poll() is not None:
                                raise RuntimeError(f"{e.name} exited")
                        try:
                            x = await get_json(session, url)
                        except (aiohttp.ClientError, OSError, TimeoutError):
                            return False
                        return (
                            x is not None
                            and x.get("scope") == "book"
                            and x["book"]["positions"] == n_positions
                        )

                    await until(whole, "B's view of the whole book")
                    ready_s = time.monotonic() - t_start
                    a_parts = a_eng.assigned()
                    a_book = a_eng.assigned(BOOK_ASSIGNED)
                    b_book = b_eng.assigned(BOOK_ASSIGNED)
                    mine = [x for x in book if x.partition in a_parts]
                    # Alternate between assets whose stage-2 owner is B and those of A's.
                    by_owner = {
                        o: [x for x in mine if _owner(x.asset, a_book, b_book) == o]
                        for o in ("A", "B")
                    }
                    pools = [v for v in by_owner.values() if v] or [mine]
                    by_owner_ms: dict[str, list[float]] = {"A": [], "B": []}
                    nets = net_sizes(book)
                    view_ms: list[float] = []
                    record_ms: list[float] = []
                    owner_b = 0
                    async with probe(bs, names.risk_book) as rb, probe(bs, hop_topic) as hc:
                        for i in range(n_updates + 5):
                            x = rnd.choice(pools[i % len(pools)])
                            step = rnd.uniform(0.05, 0.5) * abs(x.size) * rnd.choice([1, -1])
                            x.size = round(x.size + step, 6) or 1.0
                            nets = net_sizes(book)
                            want_net = nets[x.asset]
                            want_notional = want_net * prices[x.asset]
                            body = x.body(time.time_ns() // 1_000_000)
                            t0 = time.perf_counter()
                            fut = await p.send(
                                names.positions, body, key=x.pid.encode(), partition=x.partition
                            )
                            t_rec, t_view = await _observe(
                                rb, session, url, x.asset, want_net, want_notional, t0
                            )
                            await fut
                            # The baseline, interleaved: the same moment's broker.
                            t_hop = await hop_once(p, hc, hop_topic, i)
                            if i >= 5:  # warm-up
                                hop.append(t_hop)
                                record_ms.append(t_rec)
                                view_ms.append(t_view)
                                owner = _owner(x.asset, a_book, b_book)
                                owner_b += owner == "B"
                                by_owner_ms.setdefault(owner, []).append(t_view)
        finally:
            await p.stop()
    view_ms.sort()
    record_ms.sort()
    hop.sort()
    return {
        "positions": n_positions,
        "assets": n_assets,
        "updates": len(view_ms),
        "owned_by_b": owner_b,
        "view_p50_by_owner_ms": {
            o: percentile(sorted(v), 0.5) for o, v in by_owner_ms.items() if v
        },
        "ready_s": ready_s,
        "a_partitions": sorted(a_parts),
        "view": _stats(view_ms),
        "record": _stats(record_ms),
        "hop": _stats(hop),
    }


def _owner(asset: str, a_book: set[int], b_book: set[int]) -> str:
    from aiokafka.partitioner import murmur2

    p = (murmur2(asset.encode()) & 0x7FFFFFFF) % PARTITIONS
    return "A" if p in a_book else "B" if p in b_book else "?"


async def _observe(
    rb: AIOKafkaConsumer,
    session: aiohttp.ClientSession,
    url: str,
    asset: str,
    want_net: float,
    want_notional: float,
    t0: float,
) -> tuple[float, float]:
    """(ms to the risk-book record, ms to B's view) of one update, both from `t0`."""
    t_rec: list[float] = []
    t_view: list[float] = []

    async def record() -> None:
        while True:
            got = await rb.getmany(timeout_ms=100)
            now = time.perf_counter()
            for rs in got.values():
                for r in rs:
                    if r.key == asset.encode() and r.value is not None:
                        v = orjson.loads(r.value)
                        if math.isclose(v["net_size"], want_net, rel_tol=1e-9, abs_tol=1e-6):
                            t_rec.append((now - t0) * 1000)
                            return

    async def view() -> None:
        while True:
            x = await get_json(session, url)
            now = time.perf_counter()
            e = (x or {}).get("assets", {}).get(asset)
            if e is not None and math.isclose(
                e["net_notional_usd"], want_notional, rel_tol=1e-9, abs_tol=1e-6
            ):
                t_view.append((now - t0) * 1000)
                return
            await asyncio.sleep(0.001)

    await asyncio.wait_for(asyncio.gather(record(), view()), 30)
    return t_rec[0], t_view[0]


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "p50_ms": percentile(xs, 0.50),
        "p99_ms": percentile(xs, 0.99),
        "max_ms": xs[-1] if xs else math.nan,
    }


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(30 if quick else 200, 600, 6))


def rows(r: dict[str, Any]) -> list[Row]:
    v, rec, h = r["view"], r["record"], r["hop"]
    base = f"broker alone, one hop: {h['p50_ms']:.1f} / {h['p99_ms']:.1f} ms"
    return [
        Row(
            "10",
            f"position update on instance A's partition → instance B's `GET /exposure` "
            f"(whole book) reflects it, p50 / p99 ({r['updates']} updates one at a time, 2 "
            f"engines, {r['positions']} positions on {r['assets']} assets)",
            f"{v['p50_ms']:.1f} / {v['p99_ms']:.1f} ms",
            base,
            f"p99 {v['p99_ms'] / h['p99_ms']:.1f}× one hop",
        ),
        Row(
            "10",
            "position update → its asset's `risk-book` record consumed (positions → stage 1 "
            "→ risk-book-partials → stage 2 → risk-book: three hops), p50 / p99",
            f"{rec['p50_ms']:.1f} / {rec['p99_ms']:.1f} ms",
            base,
            f"p99 {rec['p99_ms'] / h['p99_ms']:.1f}× one hop",
        ),
    ]


def notes(r: dict[str, Any]) -> list[str]:
    v, rec, h = r["view"], r["record"], r["hop"]
    return [
        f"10: two `stream-risk run` processes (defaults: book stage interval 0.1 s, linger "
        f"{LINGER_MS} ms, fetch wait {FETCH_WAIT_MS} ms) on one embedded broker, whole book "
        f"on B {r['ready_s']:.1f} s after start; A held positions partitions "
        f"{r['a_partitions']}; each update resizes a position of A's, its asset's stage-2 "
        f"owner was B for {r['owned_by_b']} of {r['updates']} (else A: then only the last "
        f"hop crosses to B; view p50 by stage-2 owner: "
        + ", ".join(f"{o} {ms:.1f} ms" for o, ms in r["view_p50_by_owner_ms"].items())
        + f"); B's /exposure polled every ~1 ms. Max: view {v['max_ms']:.1f} "
        f"ms, record {rec['max_ms']:.1f} ms, one hop {h['max_ms']:.1f} ms ({h['n']} records, "
        "one after each update, acks=all, the same probe settings)."
    ]


def main(argv: list[str]) -> int:
    r = run("--quick" in argv)
    for row in rows(r):
        print(row)
    for n in notes(r):
        print(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
