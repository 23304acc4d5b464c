"""Kafka records <-> core events. Every way a record can be bad ends as a `DeadLetter`
with a reason a person can act on; nothing here raises on input."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from stream_risk.config import SCOPE_FORMS, RiskConfigPatch, is_scope, patch_dict
from stream_risk.engine.events import (
    ConfigEvent,
    Lineage,
    PositionEvent,
    PositionFields,
    TickEvent,
)
from stream_risk.engine.record import ReadAction, read_action
from stream_risk.kafka.fastdecode import Unsupported, fast_decoder
from stream_risk.models import MarketTick, PositionMessage

#: Builds a named tuple from its fields without its Python `__new__` (half the cost: the
#: common cases below make a Lineage and an event per record).
_make = tuple.__new__

#: A value larger than this is refused before parsing (DLQ'd as it is).
MAX_VALUE_BYTES = 256 * 1024


def _no_fast_decode(value: bytes) -> PositionFields | None:
    return None


#: The rebuild's decode of the common `positions` record (no config of its own): orjson
#: and checks made from `PositionMessage`'s fields (`fastdecode`), None for any other
#: record (pydantic validates it). Off (pydantic for every record) if the model outgrows
#: the checks: `FAST_POSITION_OFF` says why.
FAST_POSITION_OFF: str | None = None
try:
    fast_position = fast_decoder(PositionMessage, PositionFields)
except Unsupported as exc:
    FAST_POSITION_OFF = str(exc)
    fast_position = _no_fast_decode


class Record(Protocol):
    """The parts of an aiokafka ConsumerRecord the codec reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(slots=True)
class DeadLetter:
    """A record the engine refuses, and why."""

    reason: str
    kind: str  # a short label for metrics: not_json, invalid, too_large, key, ...
    lineage: Lineage
    key: bytes | None
    value: bytes | None

    def headers(self) -> list[tuple[str, bytes]]:
        lin = self.lineage
        return [
            ("error", self.reason.encode()),
            ("error_kind", self.kind.encode()),
            ("source_topic", lin.topic.encode()),
            ("source_partition", str(lin.partition).encode()),
            ("source_offset", str(lin.offset).encode()),
        ]


def lineage_of(rec: Record) -> Lineage:
    return Lineage(rec.topic, rec.partition, rec.offset, rec.timestamp)


def describe(exc: ValidationError, what: str) -> str:
    """One line naming each bad field: 'invalid position: size: Input should be ...'."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:10]:
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


def _classify(exc: ValidationError) -> str:
    types = {e["type"] for e in exc.errors()}
    if types & {"json_invalid", "json_type"}:
        return "not_json"
    return "invalid"


def _decode_key(rec: Record) -> str | DeadLetter:
    if rec.key is None:
        return ""
    try:
        return rec.key.decode()
    except UnicodeDecodeError:
        return DeadLetter(
            "record key is not UTF-8 text", "key", lineage_of(rec), rec.key, rec.value
        )


def _too_large(rec: Record) -> DeadLetter | None:
    if rec.value is not None and len(rec.value) > MAX_VALUE_BYTES:
        return DeadLetter(
            f"value is {len(rec.value)} bytes, over the {MAX_VALUE_BYTES}-byte limit",
            "too_large",
            lineage_of(rec),
            rec.key,
            rec.value,
        )
    return None


def decode_position(rec: Record) -> PositionEvent | DeadLetter:
    # The common case first, inline (the rebuild decodes every record of the changelog);
    # anything unusual takes the checks below, in their order.
    raw_key, value = rec.key, rec.value
    if value is not None and raw_key is not None and len(value) <= MAX_VALUE_BYTES:
        try:
            key = raw_key.decode()
        except UnicodeDecodeError:
            pass
        else:
            ts = rec.timestamp
            lin = _make(Lineage, (rec.topic, rec.partition, rec.offset, ts))
            try:
                msg = _validate_position(value)
            except ValidationError as exc:
                return DeadLetter(describe(exc, "position"), _classify(exc), lin, raw_key, value)
            return _make(PositionEvent, (key, msg, ts, lin))
    key_or_dead = _decode_key(rec)
    if isinstance(key_or_dead, DeadLetter):
        return key_or_dead
    key = key_or_dead
    big = _too_large(rec)
    if big is not None:
        return big
    lin = lineage_of(rec)
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
        msg = _validate_position(rec.value)
    except ValidationError as exc:
        return DeadLetter(describe(exc, "position"), _classify(exc), lin, rec.key, rec.value)
    return PositionEvent(key, msg, rec.timestamp, lin)


def decode_position_rows(
    records: Iterable[Record], dead: list[DeadLetter]
) -> list[tuple[str, PositionMessage | PositionFields | None, int, int]]:
    """`decode_position` for a batch of one partition's records, decoded to the rows
    `Engine.load_rows` takes (key, message, offset, record timestamp) instead of events;
    every record `decode_position` refuses goes to `dead`, as it would. The common record
    (no config of its own) is decoded by `fast_position` to `PositionFields`, the same
    values as the model's; any other is validated by pydantic to a `PositionMessage`."""
    rows: list[tuple[str, PositionMessage | PositionFields | None, int, int]] = []
    append = rows.append
    fast = fast_position
    validate = PositionMessage.__pydantic_validator__.validate_json
    for rec in records:
        raw_key, value = rec.key, rec.value
        if value is not None and raw_key is not None and len(value) <= MAX_VALUE_BYTES:
            # The common case inline (see decode_position); anything unusual takes it.
            try:
                key = raw_key.decode()
            except UnicodeDecodeError:
                pass
            else:
                fields = fast(value)
                if fields is not None:
                    append((key, fields, rec.offset, rec.timestamp))
                    continue
                try:
                    append((key, validate(value), rec.offset, rec.timestamp))
                    continue
                except ValidationError:
                    pass
        ev = decode_position(rec)
        if isinstance(ev, DeadLetter):
            dead.append(ev)
        else:
            append((ev.position_id, ev.message, rec.offset, rec.timestamp))
    return rows


def decode_tick(rec: Record) -> TickEvent | DeadLetter:
    raw_key, value = rec.key, rec.value
    if value is not None and raw_key is not None and len(value) <= MAX_VALUE_BYTES:
        # The common case inline (one call per tick; see decode_position).
        try:
            key = raw_key.decode()
        except UnicodeDecodeError:
            pass
        else:
            lin = _make(Lineage, (rec.topic, rec.partition, rec.offset, rec.timestamp))
            try:
                tick = _validate_tick(value)
            except ValidationError as exc:
                return DeadLetter(describe(exc, "market tick"), _classify(exc), lin, raw_key, value)
            if key and key != tick.asset:
                return _tick_key_mismatch(key, tick, lin, raw_key, value)
            return _make(TickEvent, (tick, lin))
    key_or_dead = _decode_key(rec)
    if isinstance(key_or_dead, DeadLetter):
        return key_or_dead
    key = key_or_dead
    big = _too_large(rec)
    if big is not None:
        return big
    lin = lineage_of(rec)
    if rec.value is None:
        return DeadLetter("market tick without a value", "invalid", lin, rec.key, None)
    try:
        tick = _validate_tick(rec.value)
    except ValidationError as exc:
        return DeadLetter(describe(exc, "market tick"), _classify(exc), lin, rec.key, rec.value)
    if key and key != tick.asset:
        return _tick_key_mismatch(key, tick, lin, rec.key, rec.value)
    return TickEvent(tick, lin)


def _tick_key_mismatch(
    key: str, tick: MarketTick, lin: Lineage, raw_key: bytes | None, value: bytes | None
) -> DeadLetter:
    return DeadLetter(
        f"record key {key!r} disagrees with body asset {tick.asset!r}: key ticks by asset",
        "key",
        lin,
        raw_key,
        value,
    )


def _validate_tick(value: bytes) -> MarketTick:
    """`MarketTick.model_validate_json`, minus its Python wrapper."""
    tick: MarketTick = MarketTick.__pydantic_validator__.validate_json(value)
    return tick


def _validate_position(value: bytes) -> PositionMessage:
    """`PositionMessage.model_validate_json`, minus its Python wrapper."""
    msg: PositionMessage = PositionMessage.__pydantic_validator__.validate_json(value)
    return msg


def decode_action(value: bytes | None) -> ReadAction | None:
    """A `risk-actions` value read back on rebuild, decoded once: its bytes (kept as read)
    and the fields the engine compares (None for a tombstone or an unreadable record)."""
    if value is None:
        return None
    return read_action(value)


def decode_config(rec: Record, headers: Any = ()) -> ConfigEvent | DeadLetter:
    """A `risk-config` record: key = scope, value = partial config (JSON object) or null.

    `headers`: the record's headers ((name, bytes) pairs); `changed-by` is kept.
    """
    lin = lineage_of(rec)
    raw_key = rec.key
    try:
        scope = "" if raw_key is None else raw_key.decode()
    except UnicodeDecodeError:
        return DeadLetter("risk-config key is not UTF-8", "key", lin, raw_key, rec.value)
    if not is_scope(scope):
        return DeadLetter(
            f"risk-config key {scope!r} is no scope: use one of {SCOPE_FORMS}",
            "key",
            lin,
            raw_key,
            rec.value,
        )
    changed_by = None
    for hk, hv in headers or ():
        if hk == "changed-by" and hv is not None:
            changed_by = hv.decode(errors="replace")
    if rec.value is None:
        return ConfigEvent(scope, None, lin, changed_by)
    big = _too_large(rec)
    if big is not None:
        return big
    try:
        patch = RiskConfigPatch.model_validate_json(rec.value)
    except ValidationError as exc:
        return DeadLetter(
            describe(exc, f"risk-config {scope!r}"), _classify(exc), lin, raw_key, rec.value
        )
    return ConfigEvent(scope, patch_dict(patch), lin, changed_by)
