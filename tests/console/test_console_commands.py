"""`stream-risk publish`, `tail` and `broker` as processes against a real broker, and the
newcomer's whole flow once: broker, run, publish a position and a tick, tail an action."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from kafka_helpers import Rec, consume_all, create_topics, produce

from stream_risk.kafka.embedded import free_port
from stream_risk.kafka.topics import ALL_TOPICS, TopicNames, TopicSpec

pytestmark = pytest.mark.broker

TIMEOUT = 60


def _env(names: TopicNames | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_RISK_")}
    if names is not None:
        env |= {
            "STREAM_RISK_TOPIC_POSITIONS": names.positions,
            "STREAM_RISK_TOPIC_MARKET_TICKS": names.market_ticks,
            "STREAM_RISK_TOPIC_ACTIONS": names.risk_actions,
            "STREAM_RISK_TOPIC_DLQ": names.risk_dlq,
            "STREAM_RISK_TOPIC_CONFIG": names.risk_config,
            "STREAM_RISK_TOPIC_ALERTS": names.risk_alerts,
            "STREAM_RISK_TOPIC_BOOK_PARTIALS": names.risk_book_partials,
            "STREAM_RISK_TOPIC_BOOK": names.risk_book,
        }
    return env


def cli(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "stream_risk", *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=TIMEOUT,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def popen(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_risk", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_until(
    proc: subprocess.Popen[bytes], want: str, timeout: float, *, stderr: bool = False
) -> str:
    """stdout (or stderr) of `proc` until it contains `want` (or fail with what was read).
    Reads the pipe unbuffered: a buffered readline can hold lines a select no longer sees."""
    pipe = proc.stderr if stderr else proc.stdout
    assert pipe is not None
    fd = pipe.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    out = b""
    deadline = time.monotonic() + timeout
    while want.encode() not in out:
        left = deadline - time.monotonic()
        chunk = os.read(fd, 65536) if left > 0 and sel.select(min(left, 0.5)) else None
        if left <= 0 or chunk == b"":
            other = proc.stdout if stderr else proc.stderr
            err = other.read().decode() if other and proc.poll() is not None else ""
            raise AssertionError(
                f"no {want!r} in {timeout}s; stdout:\n{out.decode()}\nstderr:\n{err}"
            )
        out += chunk or b""
    return out.decode()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"did not stop in 30 s:\n{out.decode()}\n{err.decode()}") from None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def topics(kafka_bootstrap: str, topic_names: TopicNames) -> TopicNames:
    specs = [TopicSpec(name, 2) for name in topic_names.all()]
    asyncio.run(create_topics(kafka_bootstrap, specs))
    return topic_names


# ---------------------------------------------------------------------- publish
def test_publish_jsonl_file_and_stdin(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    env = _env(topics)
    f = tmp_path / "positions.jsonl"
    f.write_text(
        '{"position_id": "p-1", "asset": "BTC", "size": 10, "entry_price": 65000}\n'
        "\n"
        '{"position_id": "p-2", "asset": "ETH", "size": -3, "entry_price": 3000, "ts": 42}\n'
        '{"position_id": "p-2", "close": true}\n'
    )
    before = time.time_ns() // 1_000_000
    got = cli("publish", "positions", str(f), "--bootstrap-servers", kafka_bootstrap, env=env)
    after = time.time_ns() // 1_000_000
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == f"published 3 records to {topics.positions}"

    recs = asyncio.run(consume_all(kafka_bootstrap, topics.positions, min_records=3))
    by_key: dict[bytes, list[Any]] = {}
    for r in recs:
        by_key.setdefault(r.key, []).append(r)
    first = orjson.loads(by_key[b"p-1"][0].value)
    assert first.pop("ts") in range(before, after + 1)  # defaulted to now
    assert first == {"asset": "BTC", "size": 10, "entry_price": 65000}
    p2 = by_key[b"p-2"]  # same key, same partition: in order
    assert orjson.loads(p2[0].value) == {"asset": "ETH", "size": -3, "entry_price": 3000, "ts": 42}
    assert p2[1].value is None  # the close: a tombstone

    tick = b'{"asset": "SOL", "current_price": 150.5, "ts": 1767225600000}'
    got = cli(
        "publish", "market-ticks", "-", "--bootstrap-servers", kafka_bootstrap, env=env, stdin=tick
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == f"published 1 record to {topics.market_ticks}"
    [rec] = asyncio.run(consume_all(kafka_bootstrap, topics.market_ticks, min_records=1))
    assert rec.key == b"SOL"
    assert orjson.loads(rec.value) == orjson.loads(tick)

    cfg = b'{"max_net_notional_usd": 5000000}'
    got = cli(
        "publish",
        "risk-config",
        "--key",
        "asset:BTC",
        "--bootstrap-servers",
        kafka_bootstrap,
        env=env,
        stdin=cfg,
    )
    assert got.returncode == 0, got.stderr
    [rec] = asyncio.run(consume_all(kafka_bootstrap, topics.risk_config, min_records=1))
    assert (rec.key, orjson.loads(rec.value)) == (b"asset:BTC", {"max_net_notional_usd": 5000000})
    assert dict(rec.headers)["changed-by"].endswith(b"(stream-risk publish)")


def test_publish_bad_line_sends_nothing(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    env = _env(topics)
    f = tmp_path / "ticks.jsonl"
    f.write_text(
        '{"asset": "BTC", "current_price": 64000}\n'
        '{"asset": "ETH", "current_price": 3000}\n'
        '{"asset": "SOL", "current_price": -1}\n'
    )
    got = cli("publish", "market-ticks", str(f), "--bootstrap-servers", kafka_bootstrap, env=env)
    assert got.returncode == 2
    assert f"{f}, line 3: field current_price: Input should be greater than 0" in got.stderr
    assert "1 bad record(s) of 3: nothing published" in got.stderr
    assert got.stdout == "" and "Traceback" not in got.stderr
    assert asyncio.run(consume_all(kafka_bootstrap, topics.market_ticks)) == []


def test_publish_unknown_topic_and_unreachable_broker(topics: TopicNames) -> None:
    env = _env(topics)
    got = cli("publish", "risk-actions", "--bootstrap-servers", "127.0.0.1:1", env=env, stdin=b"{}")
    assert got.returncode == 2
    assert (
        f"cannot publish to 'risk-actions': the topics are {topics.positions}, "
        f"{topics.market_ticks}, {topics.risk_config}"
    ) in got.stderr
    closed = f"127.0.0.1:{free_port()}"
    got = cli(
        "publish",
        "market-ticks",
        "--bootstrap-servers",
        closed,
        env=env,
        stdin=b'{"asset": "BTC", "current_price": 1}',
    )
    assert got.returncode == 1
    assert f"cannot reach the broker at {closed}" in got.stderr
    assert "stream-risk broker" in got.stderr and "Traceback" not in got.stderr


# ---------------------------------------------------------------------- tail
def _action(pid: str, ts: int) -> dict[str, Any]:
    return {
        "position_id": pid,
        "asset": "BTC",
        "action": "HEDGE_FULL",
        "risk_score": 71.06,
        "suggested_hedge": {
            "instrument": "perp_short",
            "size": 10.0,
            "total_cost_usd": 130.0,
            "total_cost_bps": 2.0,
        },
        "trigger": "position",
        "event_ts": ts,
        "stale_market_data": False,
    }


def test_tail_prints_readable_lines_and_json(kafka_bootstrap: str, topics: TopicNames) -> None:
    env = _env(topics)
    t = 1_767_268_801_234  # 12:00:01.234 UTC
    action = _action("p-7", t)
    asyncio.run(
        produce(
            kafka_bootstrap,
            topics.risk_actions,
            [
                Rec(b"p-7", action, partition=0, timestamp_ms=t),
                Rec(b"p-7", None, partition=0, timestamp_ms=t + 5),
            ],
        )
    )
    alert = {
        "key": "dlq_rate",
        "kind": "dlq_rate",
        "state": "fired",
        "details": {"dlq_last_minute": 12, "threshold_per_minute": 10.0},
        "ts": t,
    }
    asyncio.run(produce(kafka_bootstrap, topics.risk_alerts, [Rec(b"dlq_rate", alert)]))
    headers = (
        ("error", b"invalid market tick: current_price: Field required"),
        ("source_topic", b"market-ticks"),
        ("source_partition", b"1"),
        ("source_offset", b"9"),
    )
    asyncio.run(
        produce(kafka_bootstrap, topics.risk_dlq, [Rec(b"BTC", b"{}", headers, timestamp_ms=t)])
    )
    b = ("--bootstrap-servers", kafka_bootstrap)

    got = cli("tail", "risk-actions", *b, env=env)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == [
        "12:00:01.234 p-7 BTC HEDGE_FULL score 71.1 hedge perp_short 10 BTC ($130.00, 2.0 bps) "
        "trigger position",
        "12:00:01.239 p-7 closed",
    ]
    got = cli("tail", "risk-actions", "--json", *b, env=env)
    assert [orjson.loads(line) for line in got.stdout.splitlines()] == [action, None]
    got = cli("tail", "risk-alerts", *b, env=env)
    assert got.stdout.splitlines() == [
        "12:00:01.234 FIRED dead letters: 12 in the last minute (threshold 10/min)"
    ]
    got = cli("tail", "risk-dlq", *b, env=env)
    assert got.stdout.splitlines() == [
        "12:00:01.234 key BTC: invalid market tick: current_price: Field required "
        "(from market-ticks[1]@9)"
    ]
    assert got.stderr == ""  # no aiokafka chatter


def test_tail_follow_prints_new_records_then_ctrl_c(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    env = _env(topics)
    t = 1_767_268_801_234
    asyncio.run(produce(kafka_bootstrap, topics.risk_actions, [Rec(b"old", _action("old", t))]))
    proc = popen(
        "tail", "risk-actions", "--follow", "--bootstrap-servers", kafka_bootstrap, env=env
    )
    try:
        read_until(proc, "following", 20, stderr=True)  # at the end: records from now on
        asyncio.run(produce(kafka_bootstrap, topics.risk_actions, [Rec(b"new", _action("new", t))]))
        out = read_until(proc, " new BTC HEDGE_FULL", 20)
    finally:
        code, rest, err = stop(proc, signal.SIGINT)
    assert code == 0, err
    assert "old" not in out + rest
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


# ---------------------------------------------------------------------- broker
def test_broker_prints_address_creates_topics_stops_on_ctrl_c() -> None:
    port = free_port()
    env = _env()
    proc = popen("broker", "--port", str(port), env=env)
    try:
        out = read_until(proc, "Ctrl-C stops the broker", 40)
        bootstrap = f"127.0.0.1:{port}"
        assert f"on {bootstrap}" in out
        assert "memory only" in out
        assert f"stream-risk run --bootstrap-servers {bootstrap}" in out
        assert "stream-risk tail risk-actions" in out and "http://127.0.0.1:8080/" in out

        async def listed() -> set[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                return set(await admin.list_topics())
            finally:
                await admin.close()

        assert set(ALL_TOPICS) <= asyncio.run(listed())

        taken = cli("broker", "--port", str(port), env=env)
        assert taken.returncode == 1
        assert f"port {port} on 127.0.0.1 is taken" in taken.stderr
        assert f"--port {port + 1}" in taken.stderr
    finally:
        code, _, err = stop(proc, signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err


def test_broker_refuses_a_wildcard_host() -> None:
    got = cli("broker", "--host", "0.0.0.0", env=_env())
    assert got.returncode == 2
    assert "clients cannot connect to a wildcard" in got.stderr and "127.0.0.1" in got.stderr


# ---------------------------------------------------------------------- the newcomer's flow
@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in reversed(started):  # the engine before the broker
        if p.poll() is None:
            stop(p, signal.SIGTERM)


def test_newcomer_flow_broker_run_publish_tail(
    procs: list[subprocess.Popen[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.monotonic()
    env = _env()
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    b = ("--bootstrap-servers", bootstrap)
    broker = popen("broker", "--port", str(port), env=env)
    procs.append(broker)
    read_until(broker, "Ctrl-C stops the broker", 40)
    engine = popen("run", *b, "--http-port", str(free_port()), env=env)
    procs.append(engine)
    position = b'{"position_id": "p-1", "asset": "BTC", "size": 10, "entry_price": 65000}'
    tick = b'{"asset": "BTC", "current_price": 64000, "volatility_1d": 0.05}'
    assert cli("publish", "positions", *b, env=env, stdin=position).returncode == 0
    assert cli("publish", "market-ticks", *b, env=env, stdin=tick).returncode == 0
    tail = popen("tail", "risk-actions", "--follow", "--from-beginning", *b, env=env)
    procs.append(tail)
    line = read_until(tail, " p-1 BTC ", 60)
    took = time.monotonic() - t0
    assert "trigger" in line and "score" in line
    code, _, err = stop(tail, signal.SIGINT)
    assert code == 0, err
    code, _, err = stop(engine, signal.SIGTERM)
    assert code == 0, err
    # The refused InitProducerId is one explained warning, not ERROR lines.
    assert "ERROR" not in err and "InitProducerIdRequest" not in err
    assert err.count("the broker refused InitProducerId") == 1
    assert "INFO aiokafka" not in err
    with capsys.disabled():
        print(f"\nnewcomer flow: broker start to first action on tail: {took:.1f} s")
