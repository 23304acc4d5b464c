"""`decode_tick` / `decode_position` (common case inline, the validator called directly)
against the plain decoding they replace, on good and bad records alike: the same event or
the same dead letter (reason, kind, lineage, key and bytes)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from stream_risk.engine.events import Lineage, PositionEvent, TickEvent
from stream_risk.kafka.codec import (
    MAX_VALUE_BYTES,
    DeadLetter,
    _classify,
    decode_position,
    decode_tick,
    describe,
)
from stream_risk.models import MarketTick, PositionMessage


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


# ---------------------------------------------------------------- the plain path
def _lineage(rec: Rec) -> Lineage:
    return Lineage(rec.topic, rec.partition, rec.offset, rec.timestamp)


def _key(rec: Rec) -> str | DeadLetter:
    if rec.key is None:
        return ""
    try:
        return rec.key.decode()
    except UnicodeDecodeError:
        return DeadLetter("record key is not UTF-8 text", "key", _lineage(rec), rec.key, rec.value)


def _big(rec: Rec) -> DeadLetter | None:
    if rec.value is not None and len(rec.value) > MAX_VALUE_BYTES:
        return DeadLetter(
            f"value is {len(rec.value)} bytes, over the {MAX_VALUE_BYTES}-byte limit",
            "too_large",
            _lineage(rec),
            rec.key,
            rec.value,
        )
    return None


def plain_tick(rec: Rec) -> TickEvent | DeadLetter:
    key = _key(rec)
    if isinstance(key, DeadLetter):
        return key
    big = _big(rec)
    if big is not None:
        return big
    lin = _lineage(rec)
    if rec.value is None:
        return DeadLetter("market tick without a value", "invalid", lin, rec.key, None)
    try:
        tick = MarketTick.model_validate_json(rec.value)
    except ValidationError as exc:
        return DeadLetter(describe(exc, "market tick"), _classify(exc), lin, rec.key, rec.value)
    if key and key != tick.asset:
        return DeadLetter(
            f"record key {key!r} disagrees with body asset {tick.asset!r}: key ticks by asset",
            "key",
            lin,
            rec.key,
            rec.value,
        )
    return TickEvent(tick, lin)


def plain_position(rec: Rec) -> PositionEvent | DeadLetter:
    key = _key(rec)
    if isinstance(key, DeadLetter):
        return key
    big = _big(rec)
    if big is not None:
        return big
    lin = _lineage(rec)
    if rec.value is None:
        if not key:
            return DeadLetter(
                "tombstone without a key: a close must be keyed by its position_id",
                "key",
                lin,
                rec.key,
                None,
            )
        return PositionEvent(key, None, rec.timestamp, lin)
    try:
        msg = PositionMessage.model_validate_json(rec.value)
    except ValidationError as exc:
        return DeadLetter(describe(exc, "position"), _classify(exc), lin, rec.key, rec.value)
    return PositionEvent(key, msg, rec.timestamp, lin)


# ---------------------------------------------------------------- records, good and bad
KEYS: tuple[bytes | None, ...] = (b"BTC", b"ETH", b"", None, b"\xff\xfe", b"p1", b"p2")


def tick_values(rnd: random.Random) -> bytes | None:
    body: dict[str, Any] = {
        "asset": rnd.choice(("BTC", "ETH", "")),
        "ts": rnd.choice((1_700_000_000_000, -1, 10**15, 1.5, "1700000000000")),
        "current_price": rnd.choice((44_000, 44_000.5, 0, -1, 1e13, "x", None)),
    }
    if rnd.random() < 0.5:
        body["volatility_1d"] = rnd.choice((0.05, 2, None))
    if rnd.random() < 0.1:
        body["extra"] = 1
    if rnd.random() < 0.1:
        del body["asset"]
    r = rnd.random()
    if r < 0.05:
        return None
    if r < 0.1:
        return b"not json"
    if r < 0.13:
        return b"[1, 2]"
    if r < 0.15:
        return b"x" * (MAX_VALUE_BYTES + 1)
    return orjson.dumps(body)


def position_values(rnd: random.Random) -> bytes | None:
    body: dict[str, Any] = {
        "position_id": rnd.choice(("p1", "p2", None, "")),
        "asset": rnd.choice(("BTC", "ETH", "")),
        "size": rnd.choice((10, -2.5, 0, 1e16, "x")),
        "entry_price": rnd.choice((45_000, 0, -1)),
        "ts": rnd.choice((1_700_000_000_000, None, -5)),
    }
    if rnd.random() < 0.3:
        body["config"] = rnd.choice(({"max_loss_pct": 0.03}, {"max_loss_pct": 7}, {"nope": 1}))
    if rnd.random() < 0.3:
        body["age_minutes"] = rnd.choice((60, -1))
    r = rnd.random()
    if r < 0.1:
        return None
    if r < 0.15:
        return b"{"
    if r < 0.17:
        return b" " * (MAX_VALUE_BYTES + 1)
    return orjson.dumps(body)


def same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, DeadLetter):
        assert (a.reason, a.kind, a.lineage, a.key, a.value) == (
            b.reason,
            b.kind,
            b.lineage,
            b.key,
            b.value,
        )
    else:
        assert a == b


def test_decode_tick_equals_the_plain_path() -> None:
    rnd = random.Random(7)
    kinds = set()
    for i in range(3_000):
        rec = Rec("market-ticks", i % 3, i, 1_700_000_000_000 + i, rnd.choice(KEYS), None)
        rec.value = tick_values(rnd)
        fast, plain = decode_tick(rec), plain_tick(rec)
        same(fast, plain)
        kinds.add(fast.kind if isinstance(fast, DeadLetter) else "ok")
    assert kinds == {"ok", "key", "invalid", "not_json", "too_large"}


def test_decode_position_equals_the_plain_path() -> None:
    rnd = random.Random(11)
    kinds = set()
    for i in range(3_000):
        rec = Rec("positions", i % 3, i, 1_700_000_000_000 + i, rnd.choice(KEYS), None)
        rec.value = position_values(rnd)
        fast, plain = decode_position(rec), plain_position(rec)
        same(fast, plain)
        kinds.add(fast.kind if isinstance(fast, DeadLetter) else "ok")
    assert kinds == {"ok", "key", "invalid", "not_json", "too_large"}
