"""`stream-risk run` as a real process against a real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_helpers import Rec, consume_all, produce

from stream_risk.assessor import assess
from stream_risk.kafka.embedded import free_port

pytestmark = pytest.mark.broker


def start_engine(bootstrap: str, tag: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STREAM_RISK_TOPIC_POSITIONS": f"positions-{tag}",
        "STREAM_RISK_TOPIC_MARKET_TICKS": f"ticks-{tag}",
        "STREAM_RISK_TOPIC_ACTIONS": f"actions-{tag}",
        "STREAM_RISK_TOPIC_DLQ": f"dlq-{tag}",
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
        f"g-{tag}",
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"engine exited {proc.returncode}:\n{out}")
            try:
                async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                    last = await r.json()
                    if r.status == 200:
                        return
            except aiohttp.ClientError as exc:
                last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"engine not ready after {timeout}s: {last}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"engine did not stop in 30 s:\n{out.decode()}") from None
    return proc.returncode, out.decode()


def test_missing_topics_is_a_clear_error(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    proc = start_engine(kafka_bootstrap, tag, free_port("127.0.0.1"))
    out, _ = proc.communicate(timeout=60)
    text = out.decode()
    assert proc.returncode == 2, text
    assert f"positions-{tag}" in text and "--create-topics" in text
    assert "Traceback" not in text


async def test_thousand_positions_on_hundred_assets_then_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    port = free_port("127.0.0.1")
    proc = start_engine(kafka_bootstrap, tag, port, "--create-topics")
    try:
        await wait_ready(port, proc)
        t0 = time.time_ns() // 1_000_000
        assets = [f"A{i:03d}" for i in range(100)]
        positions = []
        for i in range(1000):
            asset = assets[i % 100]
            size = (i % 7 + 1) * (1 if i % 2 == 0 else -1) * 10.0
            positions.append((f"pos-{i}", asset, size, 100.0 + i % 13))
        await produce(
            kafka_bootstrap,
            f"positions-{tag}",
            [
                Rec(
                    key=pid.encode(),
                    value=orjson.dumps(
                        {"asset": a, "size": s, "entry_price": e, "ts": t0, "age_minutes": 30}
                    ),
                )
                for pid, a, s, e in positions
            ],
        )
        markets: dict[str, dict[str, Any]] = {
            a: {
                "asset": a,
                "ts": t0,
                "current_price": 100.0 + j,
                "volatility_1d": 0.01 * (j % 10),
                "spot_spread_bps": 2.0 + j % 5,
                "perp_funding_rate": 0.05 * ((j % 5) - 2),
                "bid_depth_usd": 20_000.0 + 1000 * j,
                "ask_depth_usd": 30_000.0 + 1000 * j,
            }
            for j, a in enumerate(assets)
        }
        await produce(
            kafka_bootstrap,
            f"ticks-{tag}",
            [Rec(key=a.encode(), value=orjson.dumps(m)) for a, m in markets.items()],
        )
        recs = await consume_all(kafka_bootstrap, f"actions-{tag}", timeout=60, min_records=1000)
        latest = {r.key.decode(): orjson.loads(r.value) for r in recs if r.value is not None}
        assert len(latest) == 1000
        for pid, a, s, e in positions:
            act = latest[pid]
            m = markets[a]
            # The engine's numbers are the model's on the same inputs, as of the same time.
            want = assess(
                s,
                e,
                30 + (act["event_ts"] - t0) / 60_000,
                None,
                m["current_price"],
                m["volatility_1d"],
                m["spot_spread_bps"],
                m["perp_funding_rate"],
                m["bid_depth_usd"],
                m["ask_depth_usd"],
            )
            assert act["event_ts"] == t0
            assert act["action"] == want.action
            assert act["risk_score"] == pytest.approx(want.risk_score, rel=1e-12)
            assert act["hedge_pct"] == want.hedge_pct
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/positions?asset=A007") as r,
        ):
            body = await r.json()
            assert r.status == 200
            assert {p["position_id"] for p in body["positions"]} == {
                f"pos-{i}" for i in range(7, 1000, 100)
            }
    finally:
        code, out = stop(proc)
    assert code == 0, out
    # Offsets committed: a consumer of the same group resumes at the end of each partition.
    c = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{tag}")
    await c.start()
    try:
        tps = [TopicPartition(f"positions-{tag}", p) for p in range(6)]
        committed = [await c.committed(tp) or 0 for tp in tps]
    finally:
        await c.stop()
    assert sum(committed) == 1000


@pytest.mark.not_on_mock(
    "the mock cluster has transactions: an explicit exactly-once runs there (with a warning)"
)
def test_exactly_once_on_a_broker_without_transactions_is_a_clear_error(
    kafka_bootstrap: str, kafka_broker: Any
) -> None:
    # The embedded Tansu broker refuses a transactional producer (DESIGN §9).
    if kafka_broker.kind != "embedded":
        pytest.fail("this test names Tansu's refusal: run it on the embedded broker")
    tag = uuid.uuid4().hex[:8]
    proc = start_engine(
        kafka_bootstrap,
        tag,
        free_port(),
        "--create-topics",
        "--processing-guarantee",
        "exactly-once",
    )
    out, _ = proc.communicate(timeout=60)
    text = out.decode()
    assert proc.returncode == 2, text
    assert "exactly-once needs Kafka transactions" in text
    assert "--processing-guarantee at-least-once" in text
    assert "Traceback" not in text


@pytest.mark.not_on_mock(
    "on the mock auto is at-least-once for another reason (transactions that do not fence), "
    "said by another warning: test_mock_cluster.py tests it"
)
async def test_auto_runs_at_least_once_on_tansu_and_says_so(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    proc = start_engine(kafka_bootstrap, tag, port, "--create-topics")
    try:
        await wait_ready(port, proc)
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = await r.text()
    finally:
        code, out = stop(proc)
    assert 'stream_risk_processing_guarantee{guarantee="at-least-once"} 1.0' in metrics
    assert 'stream_risk_processing_guarantee{guarantee="exactly-once"} 0.0' in metrics
    assert out.count("the broker has no transactions: processing at-least-once") == 1, out
    assert code == 0, out
