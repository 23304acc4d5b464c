"""`codec.fast_position` (orjson + checks made from `PositionMessage`'s field metadata)
against pydantic's own validation, over randomized good and bad records: it accepts exactly
the records pydantic accepts that have no config of their own, with the same values (types
and the sign of zero included); every other record it declines, to pydantic. (One kind of
record pydantic accepts is declined too: one orjson cannot parse, a NaN or Infinity literal
or a number past a double's range, under a key that a duplicate overrides.)"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stream_risk.engine.events import PositionFields
from stream_risk.kafka.codec import FAST_POSITION_OFF, fast_position
from stream_risk.kafka.fastdecode import Unsupported, fast_decoder
from stream_risk.models import MAX_PRICE, MAX_SIZE, MAX_TS_MS, MAX_USD, PositionMessage

# ---------------------------------------------------------------- JSON literals, good and bad
#: Number literals as a producer might write them: bounds, just past them, odd spellings.
NUMBERS = [
    "0",
    "-0",
    "0.0",
    "-0.0",
    "1",
    "-1",
    "10",
    "1.5",
    "-2.5",
    "1e3",
    "1E3",
    "0.1e1",
    "1e-400",
    "-1e-400",
    "1e400",
    "-1e400",
    "5e-324",
    "1.7976931348623157e308",
    repr(MAX_SIZE),
    str(int(MAX_SIZE)),
    str(int(MAX_SIZE) + 1),
    repr(-MAX_SIZE),
    str(-int(MAX_SIZE) - 1),
    repr(MAX_SIZE * (1 + 2**-52)),
    repr(MAX_PRICE),
    str(int(MAX_PRICE)),
    str(int(MAX_PRICE) + 1),
    repr(MAX_USD),
    str(int(MAX_USD)),
    str(-int(MAX_USD)),
    str(int(MAX_USD) + 1),
    str(MAX_TS_MS),
    str(MAX_TS_MS + 1),
    "1700000000000",
    "1700000000000.0",
    "1.7e12",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "100000000000000000000000",
    "0.30000000000000004441",
    "123456789012345678901234567890e-20",
    "1000000000.0000001",
    "999999999.99999999999",
    "00",
    "01",
    "+1",
    ".5",
    "1.",
    "NaN",
    "Infinity",
    "-Infinity",
]
STRINGS = [
    '""',
    '"A"',
    '"BTC"',
    '"p1"',
    '"\\u00e9t\\u00e9"',
    '"\\ud83d\\ude00"',
    '"\\ud800"',
    '"\\u0000"',
    '"a\\"b"',
    '"\x01"',
    '"é"',
    '"😀"',
    '"\xff"',
    '"' + "x" * 64 + '"',
    '"' + "x" * 65 + '"',
    '"' + "😀" * 64 + '"',
    '"' + "😀" * 65 + '"',
    '"' + "y" * 256 + '"',
    '"' + "y" * 257 + '"',
]
OTHERS = ["null", "true", "false", "[]", "{}", "[1]", '{"max_loss_pct": 0.03}', '{"nope": 1}']
LITERALS = NUMBERS + STRINGS + OTHERS
KEYS = [*PositionMessage.model_fields, "extra", "Asset", "\\u0061sset"]


def _good_literal(name: str, rnd: random.Random) -> str:
    """A value pydantic accepts for field `name` (mostly)."""
    if name in ("position_id", "asset"):
        return orjson.dumps(rnd.choice(["p1", "BTC", "ETH", "é", "x" * 64])).decode()
    if name in ("ts", "opened_at"):
        return str(rnd.choice([0, 1_700_000_000_000, MAX_TS_MS, rnd.randrange(MAX_TS_MS)]))
    if name == "config":
        return rnd.choice(["null", '{"max_loss_pct": 0.03}'])
    if name == "entry_price":
        x = rnd.choice([rnd.uniform(1e-9, MAX_PRICE), 5e-324, 1, MAX_PRICE, 45_000])
    elif name == "age_minutes":
        x = rnd.choice([rnd.uniform(0, 1e9), 0, 0.0, 1e9, 60])
    else:
        x = rnd.choice([rnd.uniform(-1e6, 1e6), rnd.uniform(-MAX_SIZE, MAX_SIZE), -0.0, 0, 7])
    return orjson.dumps(x).decode()


def record(seed: int) -> bytes:
    """A positions value: mostly well-formed, with one or more faults thrown in."""
    rnd = random.Random(seed)
    items: list[tuple[str, str]] = []
    for name in PositionMessage.model_fields:
        required = PositionMessage.model_fields[name].is_required()
        if not required and rnd.random() < 0.4:
            continue  # absent
        items.append((f'"{name}"', _good_literal(name, rnd)))
    for _ in range(rnd.choice([0, 0, 0, 1, 1, 2])):
        fault = rnd.random()
        if fault < 0.6 and items:  # a field's value from the odd literals
            i = rnd.randrange(len(items))
            items[i] = (items[i][0], rnd.choice(LITERALS))
        elif fault < 0.75 and items:  # a field left out
            items.pop(rnd.randrange(len(items)))
        elif fault < 0.9:  # a key, maybe a duplicate or an unknown one
            items.insert(
                rnd.randrange(len(items) + 1), (f'"{rnd.choice(KEYS)}"', rnd.choice(LITERALS))
            )
        else:
            items.append((f'"{rnd.choice(KEYS)}"', _good_literal(rnd.choice(KEYS[:9]), rnd)))
    sep = rnd.choice([",", ", ", " ,\n"])
    text = "{" + sep.join(f"{k}:{v}" for k, v in items) + "}"
    r = rnd.random()
    if r < 0.03:
        text = text[: rnd.randrange(len(text))]  # cut short
    elif r < 0.05:
        text = rnd.choice(["[", " ", "\ufeff", "x", "\t"]) + text
    elif r < 0.07:
        text = text + rnd.choice([" ", "\n", "x", "}", ",", "\t\r\n"])
    elif r < 0.08:
        text = rnd.choice(["null", "[]", "1", '"x"', "", "{}"])
    data = text.encode()
    if rnd.random() < 0.02:
        data = data.replace(b"\xc3\xa9", b"\xe9")  # not UTF-8
    return data


# ---------------------------------------------------------------- the property
def _values(msg: PositionMessage) -> tuple[Any, ...]:
    return tuple(getattr(msg, name) for name in PositionFields._fields)


def _orjson_reads(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


def check(value: bytes) -> str:
    """Assert the fast decode agrees with pydantic on `value`; say what it was."""
    fast = fast_position(value)
    try:
        msg = PositionMessage.model_validate_json(value)
    except ValidationError:
        assert fast is None, (value, fast)
        return "refused"
    if msg.config is not None:
        assert fast is None, value
        return "config"
    if fast is None and not _orjson_reads(value):
        # A NaN or Infinity literal (not JSON) or a number past a double's range: pydantic
        # accepts a record with one only when a duplicate key overrides it. Declined.
        return "declined"
    assert fast is not None, value  # every other record pydantic accepts without a config
    assert type(fast) is PositionFields
    # The same values, of the same types (10 vs 10.0), with the same sign of zero.
    assert repr(tuple(fast)) == repr(_values(msg)), value
    assert fast.message() == msg
    return "accepted"


def test_the_fast_decode_is_on() -> None:
    assert FAST_POSITION_OFF is None


def test_the_fast_decode_agrees_with_pydantic_on_a_randomized_corpus() -> None:
    seen: dict[str, int] = {}
    for seed in range(20_000):
        kind = check(record(seed))
        seen[kind] = seen.get(kind, 0) + 1
    # Both sides of the line, in numbers.
    assert seen["accepted"] > 5_000 and seen["refused"] > 5_000 and seen["config"] > 500, seen


@given(st.integers(min_value=0, max_value=2**32))
@settings(max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_fast_decode_agrees_with_pydantic_property(seed: int) -> None:
    check(record(seed))


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=70)
)


def _literal(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return repr(v)
    return orjson.dumps(v).decode()


@given(
    st.fixed_dictionaries(
        {
            "asset": st.text(max_size=70) | st.sampled_from(["BTC", "ETH"]),
            "size": st.floats(-2 * MAX_SIZE, 2 * MAX_SIZE, allow_nan=False) | st.integers(),
            "entry_price": st.floats(-1, 2 * MAX_PRICE, allow_nan=False) | st.integers(-1, 10),
        },
        optional={
            "position_id": st.none() | st.text(max_size=300),
            "ts": st.none() | st.integers(-1, 2 * MAX_TS_MS) | st.floats(0, 1e15),
            "opened_at": st.none() | st.integers(-1, 2 * MAX_TS_MS),
            "age_minutes": st.none() | st.floats(-1, 2e9, allow_nan=False) | st.integers(-1, 10),
            "unrealized_pnl": st.none() | st.floats(allow_nan=False) | st.integers(),
            "config": st.none() | st.just({"max_loss_pct": 0.03}),
            "extra": _json_scalars,
        },
    )
)
@settings(max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example({"asset": "A", "size": -0.0, "entry_price": 5e-324})
@example({"asset": "A", "size": 2**64, "entry_price": 1, "unrealized_pnl": 2**63 - 1})
def test_the_fast_decode_agrees_with_pydantic_on_generated_bodies(body: dict[str, Any]) -> None:
    try:
        value = orjson.dumps(body)
    except TypeError:  # an integer orjson cannot write (> 64 bits): written by hand
        value = ("{" + ",".join(f'"{k}":{_literal(v)}' for k, v in body.items()) + "}").encode()
    check(value)


# ---------------------------------------------------------------- what the checks cover
class _Loose(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    asset: str


class _Validated(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    asset: str

    @field_validator("asset")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class _Pattern(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    asset: str = Field(pattern="^[A-Z]+$")


@pytest.mark.parametrize("model", [_Loose, _Validated, _Pattern])
def test_a_model_the_checks_do_not_cover_is_refused_at_import(model: type[BaseModel]) -> None:
    with pytest.raises(Unsupported):
        fast_decoder(model, PositionFields)


def test_fields_that_are_not_the_models_are_refused_at_import() -> None:
    from typing import NamedTuple

    class Other(NamedTuple):
        asset: str

    with pytest.raises(Unsupported):
        fast_decoder(PositionMessage, Other)
