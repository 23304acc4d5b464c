"""The committed JSON Schemas in `schemas/` match the models, and describe real messages."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_risk.api import assess_body
from stream_risk.schemas_gen import render_schemas

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
HAVE_JSONSCHEMA = importlib.util.find_spec("jsonschema") is not None

REQUEST: dict[str, Any] = {
    "position": {"asset": "BTC", "size": 10, "entry_price": 45000, "age_minutes": 60},
    "market": {
        "current_price": 44000,
        "volatility_1d": 0.05,
        "spot_spread_bps": 3,
        "perp_funding_rate": 0.08,
        "bid_depth_usd": 5e6,
        "ask_depth_usd": 5e6,
    },
    "config": {"max_loss_pct": 0.05},
}


def samples() -> dict[str, dict[str, Any]]:
    _, resp = assess_body(orjson.dumps(REQUEST), ts_ms=1_700_000_000_000)
    resp = orjson.loads(orjson.dumps(resp))  # as it travels: JSON types only
    action = {
        **resp,
        "schema_version": 1,
        "position_id": "desk1-BTC",
        "asset": "BTC",
        "trigger": "tick",
        "event_ts": 1_700_000_000_000,
        "tick_ts": 1_700_000_000_000,
        "position_ts": 1_699_999_000_000,
        "assessed_at": 1_700_000_000_004,
        "stale_market_data": False,
        "next_evaluation_ts": 1_700_003_600_000,
        "config_version": {"asset:BTC": 7},
        "inputs": {
            "position": {k: v for k, v in REQUEST["position"].items()},
            "market": REQUEST["market"],
            "config": {"max_loss_pct": 0.1},
        },
        "lineage": {
            "position": {"topic": "positions", "partition": 2, "offset": 41},
            "tick": {"topic": "market-ticks", "partition": 0, "offset": 1234},
        },
    }
    return {
        "assess-request": REQUEST,
        "assess-response": resp,
        "position": {
            "position_id": "desk1-BTC",
            "asset": "BTC",
            "size": -2.5,
            "entry_price": 45000,
            "ts": 1_700_000_000_000,
            "opened_at": 1_699_999_000_000,
            "config": {"max_hold_minutes": 240},
        },
        "market-tick": {
            "asset": "BTC",
            "ts": 1_700_000_000_000,
            "current_price": 44000,
            "volatility_1d": 0.05,
        },
        "risk-action": action,
        "risk-config": {"max_loss_pct": 0.1, "max_net_notional_usd": 5_000_000},
        "risk-alert": {
            "key": "limit:asset:BTC:max_net_notional_usd",
            "kind": "exposure_limit",
            "state": "fired",
            "details": {"scope": "asset:BTC", "limit_usd": 5e6, "value_usd": 6.2e6},
            "ts": 1_700_000_000_000,
        },
    }


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((SCHEMAS / f"{name}.schema.json").read_bytes())
    return data


# ------------------------------------------------------------------ drift
def test_committed_schemas_match_the_models() -> None:
    rendered = render_schemas()
    committed = {p.name for p in SCHEMAS.glob("*.schema.json")}
    assert committed == set(rendered), (
        "schemas/ has different files than the models produce: run `make schemas`"
    )
    for fname, data in rendered.items():
        assert (SCHEMAS / fname).read_bytes() == data, (
            f"schemas/{fname} is out of date with stream_risk.models: run `make schemas`"
        )


def test_render_is_deterministic() -> None:
    assert render_schemas() == render_schemas()


# ------------------------------------------------------------------ the schemas describe messages
@pytest.mark.parametrize("name", sorted(samples()))
def test_schema_describes_sample(name: str) -> None:
    schema = load(name)
    sample = samples()[name]
    if HAVE_JSONSCHEMA:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]

        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(sample, schema, cls=jsonschema.Draft202012Validator)
    else:
        check_structure(schema, sample, schema)


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("assess-request", lambda s: s["position"].pop("entry_price")),
        ("assess-request", lambda s: s["market"].update(bogus=1)),
        ("position", lambda s: s.pop("asset")),
        ("market-tick", lambda s: s.update(price=1)),
        ("assess-response", lambda s: s.pop("risk_score")),
    ],
)
def test_schema_rejects_broken_sample(name: str, mutate: Any) -> None:
    schema = load(name)
    sample = orjson.loads(orjson.dumps(samples()[name]))
    mutate(sample)
    if HAVE_JSONSCHEMA:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]

        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(sample, schema, cls=jsonschema.Draft202012Validator)
    else:
        with pytest.raises(AssertionError):
            check_structure(schema, sample, schema)


def test_schema_ids_and_strictness() -> None:
    for name in samples():
        schema = load(name)
        assert schema["$id"] == f"stream-risk/{name}.schema.json"
        assert schema["type"] == "object"
    # Inputs are strict (unknown fields are errors); outputs may grow.
    for name in ("assess-request", "position", "market-tick"):
        assert load(name)["additionalProperties"] is False
    for name in ("assess-response", "risk-action"):
        assert load(name).get("additionalProperties", True) is not False


# ------------------------------------------------------------------ a small structural check
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = root["$defs"][ref.removeprefix("#/$defs/")]
    return node


def check_structure(node: dict[str, Any], value: Any, root: dict[str, Any]) -> None:
    """Required keys, no unknown keys where forbidden, JSON types, enums (jsonschema-lite)."""
    node = _resolve(node, root)
    if "anyOf" in node:
        errors = []
        for option in node["anyOf"]:
            try:
                check_structure(option, value, root)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"no anyOf option matches {value!r}: {errors}")
    if "type" in node:
        ok = _JSON_TYPES[node["type"]]
        assert isinstance(value, ok) and not (
            isinstance(value, bool) and node["type"] != "boolean"
        ), f"{value!r} is not {node['type']}"
    if "enum" in node:
        assert value in node["enum"], f"{value!r} not in {node['enum']}"
    if "const" in node:
        assert value == node["const"]
    if isinstance(value, dict) and "properties" in node:
        props: dict[str, Any] = node["properties"]
        missing = set(node.get("required", ())) - set(value)
        assert not missing, f"missing required {sorted(missing)}"
        if node.get("additionalProperties") is False:
            extra = set(value) - set(props)
            assert not extra, f"unknown fields {sorted(extra)}"
        for key, sub in value.items():
            if key in props:
                check_structure(props[key], sub, root)
