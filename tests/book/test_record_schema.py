"""`risk-book` records as `book.net.net_record` makes them validate against the committed
schema (schemas/risk-book.schema.json) and the `BookRecord` model, which declare exactly
the record's fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import orjson
import pytest

from stream_risk.book.net import MarketInputs, NetBook, net_record
from stream_risk.book.partial import Partial
from stream_risk.config import DEFAULT_CONFIG
from stream_risk.models import BookRecord

from .test_aggregate import FakeInputs, btc, fed

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
T0 = 1_700_000_000_000
TWO_SIDED = Partial(2, 1, 1, 10.0, 90.0, 50.0, 20.0, 5_480_000.0, 520_000.0, 90.0 * T0)
FLAT = Partial(2, 1, 1, 0.0, 80.0, 40.0, 40.0, 4_880_000.0, -80_000.0, 80.0 * T0)
SHORT = Partial(1, 0, 1, -3.0, 3.0, 0.0, 0.0, 300.0, -300.0, 3.0 * T0)


def schema() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((SCHEMAS / "risk-book.schema.json").read_bytes())
    return data


def as_sent(t: Partial, m: MarketInputs | None) -> dict[str, Any]:
    rec = net_record(NetBook.of("BTC", t, m, DEFAULT_CONFIG, T0), DEFAULT_CONFIG, [], T0 + 1)
    data: dict[str, Any] = orjson.loads(orjson.dumps(rec))  # as it travels: JSON types only
    return data


def samples() -> dict[str, dict[str, Any]]:
    m = MarketInputs(T0, 61_000.0, 0.05, 2.0, 0.03)
    inputs = FakeInputs({"BTC": btc()}, {"BTC": {"max_net_notional_usd": 500_000.0}})
    ((_, breached),) = fed().evaluate(inputs, T0, T0).records
    assert breached is not None and breached["breaches"]
    return {
        "advice": as_sent(TWO_SIDED, m),  # HEDGE_PARTIAL with a hedge
        "hold-null-hedges": as_sent(FLAT, m),  # flat: HOLD, no suggested or netted hedge
        "no-market": as_sent(TWO_SIDED, None),
        "short-no-hedges": as_sent(SHORT, MarketInputs(T0, 100.0, 0.01, 2.0)),
        "breached": orjson.loads(orjson.dumps(breached)),
    }


SAMPLES = samples()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_records_validate(name: str) -> None:
    rec = SAMPLES[name]
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    jsonschema.validate(rec, s, cls=jsonschema.Draft202012Validator)
    assert BookRecord.model_validate(rec).model_dump(mode="json") == rec


def test_the_samples_cover_the_nullable_parts() -> None:
    assert SAMPLES["advice"]["advice"]["suggested_hedge"] is not None
    assert SAMPLES["hold-null-hedges"]["advice"]["suggested_hedge"] is None
    assert SAMPLES["hold-null-hedges"]["netted_hedge"] is None
    assert SAMPLES["no-market"]["advice"] is None and SAMPLES["no-market"]["price"] is None
    assert SAMPLES["short-no-hedges"]["netted_hedge"] is None


def test_the_schema_declares_exactly_the_record_fields() -> None:
    s = schema()
    for rec in SAMPLES.values():
        assert set(s["properties"]) == set(rec)
    defs = s["$defs"]
    advice = SAMPLES["advice"]
    assert set(defs["BookAdvice"]["properties"]) == set(advice["advice"])
    assert set(defs["PerPositionHedges"]["properties"]) == set(advice["per_position_hedges"])
    assert set(defs["HedgeOut"]["properties"]) == set(advice["netted_hedge"])
    assert set(defs["BookBreach"]["properties"]) == set(SAMPLES["breached"]["breaches"][0])
    assert set(s["required"]) == set(advice) - {"schema_version"}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("net_size"),
        lambda r: r["advice"].update(action="SELL_EVERYTHING"),
        lambda r: r["advice"]["suggested_hedge"].update(instrument="option"),
        lambda r: r["per_position_hedges"].pop("total_cost_usd"),
        lambda r: r.update(positions=1.5),
        lambda r: r.update(breaches=[{"scope": "asset:BTC", "limit": "max_loss"}]),
    ],
)
def test_broken_records_are_rejected(mutate: Any) -> None:
    rec = orjson.loads(orjson.dumps(SAMPLES["advice"]))
    mutate(rec)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rec, schema(), cls=jsonschema.Draft202012Validator)


def test_a_contribution_as_sent_validates_against_its_schema() -> None:
    # The internal topic's value (`Partial.to_json`) against schemas/risk-book-partial.
    data: dict[str, Any] = orjson.loads((SCHEMAS / "risk-book-partial.schema.json").read_bytes())
    sent = orjson.loads(TWO_SIDED.to_json())
    jsonschema.validate(sent, data)
    assert sent["net_size"] == 10.0 and sent["positions"] == 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**sent, "extra": 1}, data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in sent.items() if k != "gross_size"}, data)
