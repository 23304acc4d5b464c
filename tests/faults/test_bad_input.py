"""Promise 4 (issue 8), bad input: 10,000 fuzzed records (random bytes, truncated JSON,
wrong types, NaN and infinities, negative prices, huge numbers, a 1 MB value, unknown
fields, missing fields, keys that disagree with the body, ...) interleaved with good ones,
on both input topics. Every bad record lands in `risk-dlq` with its original key and bytes
and headers saying why and where it came from; the engine neither crashes nor stalls; the
good records between them are all processed. And Hypothesis on the running engine's
`POST /assess`: never a 5xx.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar.test_properties import bodies, check_answer

from .stream import StreamShape, SyntheticStream
from .support import (
    EngineProcess,
    Producer,
    Topics,
    headers_of,
    latest_by_key,
    now_ms,
    read_all,
    report,
)

pytestmark = pytest.mark.broker

N_BAD = 10_000
ONE_MB = 1_000_000  # fits Kafka's default message.max.bytes (1,048,588) with its headers


@dataclass(frozen=True)
class Bad:
    category: str
    topic: str  # "positions" | "ticks"
    key: bytes | None
    value: bytes | None
    kinds: frozenset[str]  # acceptable `error_kind` headers


def _kinds(*k: str) -> frozenset[str]:
    return frozenset(k)


class Fuzzer:
    """Bad records, each from a category the issue names (and a few more)."""

    def __init__(self, stream: SyntheticStream, seed: int = 4) -> None:
        self.s = stream
        self.rng = random.Random(seed)

    def _tick(self) -> dict[str, Any]:
        a = self.rng.choice(self.s.assets)
        return {"asset": a, "ts": now_ms(), "current_price": 100.0, "volatility_1d": 0.02}

    def _pos(self) -> dict[str, Any]:
        # Aimed at real positions (they must not be harmed), and newer than what they hold:
        # a record older than the position's version is ignored as out of order (D3).
        pid = self.rng.choice(self.s.pids)
        return {
            "position_id": pid,
            "asset": self.rng.choice(self.s.assets),
            "size": 3.0,
            "entry_price": 50.0,
            "ts": self.s._ts(pid),
        }

    def _body(self, topic: str) -> dict[str, Any]:
        return self._tick() if topic == "ticks" else self._pos()

    def _key(self, topic: str, body: dict[str, Any]) -> bytes:
        key: str = body["asset"] if topic == "ticks" else body["position_id"]
        return key.encode()

    def categories(self) -> list[tuple[str, Callable[[str], Bad]]]:
        r = self.rng
        any_kind = _kinds("not_json", "invalid")

        def random_bytes(t: str) -> Bad:
            v = os.urandom(r.randint(1, 300))
            # A random value may happen to be JSON (b"7"): then it is an invalid record.
            return Bad("random bytes", t, self._key(t, self._body(t)), v, any_kind)

        def truncated(t: str) -> Bad:
            b = self._body(t)
            full = orjson.dumps(b)
            return Bad(
                "truncated JSON", t, self._key(t, b), full[: r.randint(0, len(full) - 1)], any_kind
            )

        def wrong_type(t: str) -> Bad:
            b = self._body(t)
            field = r.choice(
                ["asset", "ts", "current_price"]
                if t == "ticks"
                else ["asset", "size", "entry_price", "ts"]
            )
            # Any string is a valid asset name: the asset gets the other types only.
            junk = [[1], {"x": 1}, True, 12] if field == "asset" else ["12", [1], True, "abc"]
            b[field] = r.choice(junk)
            return Bad(
                "wrong types",
                t,
                self._key(t, b) if field != "asset" else None,
                orjson.dumps(b),
                _kinds("invalid"),
            )

        def non_finite(t: str) -> Bad:
            b = self._body(t)
            field = "current_price" if t == "ticks" else "size"
            token = r.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
            raw = orjson.dumps({**b, field: 0.5}).replace(b"0.5", token.encode(), 1)
            return Bad("NaN and infinities", t, self._key(t, b), raw, any_kind)

        def negative_price(t: str) -> Bad:
            b = self._body(t)
            b["current_price" if t == "ticks" else "entry_price"] = -r.uniform(0.01, 1e6)
            return Bad("negative prices", t, self._key(t, b), orjson.dumps(b), _kinds("invalid"))

        def huge(t: str) -> Bad:
            b = self._body(t)
            field = r.choice(["current_price", "ts"] if t == "ticks" else ["size", "ts"])
            raw = orjson.dumps({**b, field: 7}).replace(
                b":7", b":" + r.choice([b"1e300", b"9" * 400, b"1e16", b"123456789012345678"]), 1
            )
            return Bad("huge numbers", t, self._key(t, b), raw, any_kind)

        def unknown_field(t: str) -> Bad:
            b = self._body(t)
            b[r.choice(["colour", "sz", "current_prise", "pnl"])] = 1
            return Bad("unknown fields", t, self._key(t, b), orjson.dumps(b), _kinds("invalid"))

        def missing(t: str) -> Bad:
            b = self._body(t)
            del b[
                r.choice(
                    ["asset", "current_price", "ts"]
                    if t == "ticks"
                    else ["asset", "size", "entry_price"]
                )
            ]
            return Bad(
                "missing fields", t, r.choice([None, b"k"]), orjson.dumps(b), _kinds("invalid")
            )

        def key_disagrees(t: str) -> Bad:
            b = self._body(t)
            if t == "ticks":
                other = next(a for a in self.s.assets if a != b["asset"])
                return Bad(
                    "key disagrees with body", t, other.encode(), orjson.dumps(b), _kinds("key")
                )
            return Bad(
                "key disagrees with body", t, b"someone-else", orjson.dumps(b), _kinds("rejected")
            )

        def not_an_object(t: str) -> Bad:
            v = r.choice([b"null", b"[]", b'"tick"', b"42", b"true", b"[" * 5000, b""])
            return Bad("JSON but not a record", t, self._key(t, self._body(t)), v, any_kind)

        def bad_utf8(t: str) -> Bad:
            b = self._body(t)
            raw = orjson.dumps({**b, "asset": "ZZZ"}).replace(b"ZZZ", b"\xff\xfe\xfa")
            return Bad("invalid UTF-8", t, self._key(t, b), raw, any_kind)

        def bad_key(t: str) -> Bad:
            b = self._body(t)
            return Bad(
                "non-UTF-8 key", t, b"\xff\xfe" + os.urandom(4), orjson.dumps(b), _kinds("key")
            )

        def no_value(t: str) -> Bad:
            # A tick without a value; a close without a key.
            return Bad(
                "null value",
                t,
                b"" if t == "positions" else b"X000",
                None,
                _kinds("invalid", "key"),
            )

        def bad_config(t: str) -> Bad:
            b = self._pos()
            b["config"] = r.choice(
                [
                    {"max_loss_pct": 5},
                    {"liquidate_score": "high"},
                    {"fast_re_eval_score": 10, "medium_re_eval_score": 50},
                ]
            )
            return Bad(
                "invalid config override",
                "positions",
                self._key("positions", b),
                orjson.dumps(b),
                _kinds("invalid", "rejected"),
            )

        return [
            ("random bytes", random_bytes),
            ("truncated JSON", truncated),
            ("wrong types", wrong_type),
            ("NaN and infinities", non_finite),
            ("negative prices", negative_price),
            ("huge numbers", huge),
            ("unknown fields", unknown_field),
            ("missing fields", missing),
            ("key disagrees with body", key_disagrees),
            ("JSON but not a record", not_an_object),
            ("invalid UTF-8", bad_utf8),
            ("non-UTF-8 key", bad_key),
            ("null value", no_value),
            ("invalid config override", bad_config),
        ]

    def records(self, n: int) -> Iterator[Bad]:
        cats = self.categories()
        for i in range(n):
            _, make = cats[i % len(cats)]
            topic = (
                "positions"
                if make.__name__ == "bad_config"
                else self.rng.choice(["positions", "ticks"])
            )
            yield make(topic)

    def one_megabyte(self) -> Bad:
        b = self._tick()
        pad = ONE_MB - len(orjson.dumps({**b, "padding": ""}))
        v = orjson.dumps({**b, "padding": "x" * pad})
        assert len(v) == ONE_MB
        return Bad("a 1 MB value", "ticks", b["asset"].encode(), v, _kinds("too_large"))


async def test_ten_thousand_bad_records_all_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    bootstrap = kafka_bootstrap
    topics = Topics.new()
    await topics.create(bootstrap)
    stream = SyntheticStream(StreamShape(positions=200, assets=10, ticks=0, seed=44), topics)
    fuzz = Fuzzer(stream)
    engine = EngineProcess(bootstrap, topics, tmp_path, name="engine").start()
    try:
        await engine.wait_ready()
        sent: dict[tuple[str, int, int], Bad] = {}
        good = 0
        t0 = time.monotonic()
        async with Producer(bootstrap, max_request_size=2 << 20) as producer:
            await stream.open_book(producer)
            records = itertools.chain(fuzz.records(N_BAD - 1), [fuzz.one_megabyte()])
            topic_of = {"positions": topics.positions, "ticks": topics.ticks}
            while chunk := list(itertools.islice(records, 250)):  # made as they are sent
                for topic in ("positions", "ticks"):
                    mine = [b for b in chunk if b.topic == topic]
                    metas = await producer.send_many(
                        topic_of[topic], [(b.key, b.value) for b in mine]
                    )
                    for b, md in zip(mine, metas, strict=True):
                        sent[(md.topic, md.partition, md.offset)] = b
                # Good records between the bad ones: ticks and position updates.
                await producer.send_many(topics.ticks, [stream._tick() for _ in range(20)])
                await producer.send_many(topics.positions, [stream._update() for _ in range(5)])
                good += 25
        drained = await engine.wait_caught_up(timeout=120)
        took = time.monotonic() - t0
        assert engine.alive()
        assert (await engine.readiness()).status == 200

        dlq = await read_all(bootstrap, topics.dlq, timeout=120)
        by_source: dict[tuple[str, int, int], Any] = {}
        for r in dlq:
            h = headers_of(r)
            by_source[(h["source_topic"], int(h["source_partition"]), int(h["source_offset"]))] = r
        missing = [k for k in sent if k not in by_source]
        assert not missing, f"{len(missing)} bad records not in the DLQ, e.g. " + str(
            [(k, sent[k].category) for k in missing[:5]]
        )
        extra = [k for k in by_source if k not in sent]
        assert not extra, f"{len(extra)} good records were dead-lettered, e.g. {extra[:5]}"
        assert len(dlq) == len(sent), "a bad record was dead-lettered more than once"
        wrong: list[str] = []
        kinds: Counter[str] = Counter()
        for k, b in sent.items():
            r = by_source[k]
            h = headers_of(r)
            kinds[h.get("error_kind", "?")] += 1
            if not h.get("error") or h.get("error_kind") not in b.kinds:
                wrong.append(f"{b.category}: {h.get('error_kind')} {h.get('error')!r}")
            elif r.value != b.value or r.key != b.key:
                wrong.append(f"{b.category}: the DLQ copy is not the original key and bytes")
        assert not wrong, f"{len(wrong)} wrong DLQ records, e.g.\n" + "\n".join(wrong[:10])

        m = await engine.metrics()
        assert m.total("stream_risk_dlq_records_total") == len(sent)
        latest = latest_by_key(await read_all(bootstrap, topics.actions))
        counts = stream.book.check_latest(latest)
        report(
            "bad input",
            bad_records=len(sent),
            good_records=good + len(stream.pids) + len(stream.assets),
            dlq_records=len(dlq),
            by_error_kind=dict(kinds),
            seconds_to_drain=round(took, 2),
            catch_up_wait_s=round(drained, 2),
            categories=len(fuzz.categories()) + 1,
            **counts,
        )
        assert engine.terminate() == 0
    finally:
        engine.cleanup()


# ---------------------------------------------------------------------- POST /assess
@pytest.fixture(scope="module")
def live_engine(
    kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """A running `stream-risk run` (engine mode: its sidecar beside a live engine)."""
    topics = Topics.new()
    asyncio.run(topics.create(kafka_broker.bootstrap))
    engine = EngineProcess(
        kafka_broker.bootstrap, topics, tmp_path_factory.mktemp("assess"), name="engine"
    ).start()
    try:
        asyncio.run(engine.wait_ready())
        yield engine
    finally:
        engine.cleanup()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, content_type=st.sampled_from([None, "application/json", "text/plain"]))
def test_assess_on_the_running_engine_never_answers_5xx(
    live_engine: EngineProcess, body: bytes, content_type: str | None
) -> None:
    """The sidecar's Hypothesis property (tests/sidecar/test_properties.py), over real HTTP
    against the engine process: 200, 413 or 422 in JSON, never a 5xx."""
    conn = http.client.HTTPConnection("127.0.0.1", live_engine.port, timeout=10)
    try:
        headers = {} if content_type is None else {"Content-Type": content_type}
        conn.request("POST", "/assess", body=body, headers=headers)
        r = conn.getresponse()
        check_answer(r.status, orjson.loads(r.read()))
    finally:
        conn.close()


def test_engine_still_answers_after_the_fuzzing(live_engine: EngineProcess) -> None:
    assert live_engine.alive(), live_engine.tail()
    status, _ = asyncio.run(live_engine.get("/healthz"))
    assert status == 200
    assert "Traceback" not in live_engine.log()


# ---------------------------------------------------------------------- edge cases
async def _one_engine(
    bootstrap: str, tmp_path: Path, positions: int = 20
) -> tuple[Topics, SyntheticStream, EngineProcess]:
    topics = Topics.new()
    await topics.create(bootstrap)
    stream = SyntheticStream(StreamShape(positions=positions, assets=2, ticks=0), topics)
    engine = EngineProcess(bootstrap, topics, tmp_path, name="engine").start()
    await engine.wait_ready()
    async with Producer(bootstrap) as producer:
        await stream.open_book(producer)
    return topics, stream, engine


async def test_a_value_too_big_to_forward_with_headers_does_not_stall(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A value the broker took (just under 1 MiB) but that no longer fits a produce request
    once the DLQ headers are added: it must still be dead-lettered (or at least counted and
    logged) and the records after it processed; the engine must not retry it forever."""
    topics, stream, engine = await _one_engine(kafka_bootstrap, tmp_path)
    try:
        asset = stream.assets[0]
        big = orjson.dumps({"asset": asset, "ts": now_ms(), "current_price": 1.0, "pad": ""})
        big = big.replace(b'"pad":""', b'"pad":"' + b"x" * (1_048_450 - len(big)) + b'"')
        async with Producer(kafka_bootstrap, max_request_size=2 << 20) as producer:
            (md,) = await producer.send_many(topics.ticks, [(asset.encode(), big)])
            after = [stream._tick() for _ in range(50)]
            await producer.send_many(topics.ticks, after)
        try:
            await engine.wait_caught_up(timeout=8)
            latest = latest_by_key(await read_all(kafka_bootstrap, topics.actions))
            stream.book.check_latest(latest)
            dlq = await read_all(kafka_bootstrap, topics.dlq)
            sources = [headers_of(r).get("source_offset") for r in dlq]
            assert str(md.offset) in sources, "the oversized record is not in the DLQ"
            assert (await engine.readiness()).status == 200
        except AssertionError:
            print(engine.log())
            raise
    finally:
        engine.cleanup()
