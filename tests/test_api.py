"""The stateless /assess operation: parsing, errors that name fields, the response shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_risk import __version__
from stream_risk.api import InvalidInput, assess_body, assess_request, parse_request, response
from stream_risk.models import AssessResponse

WORKED: dict[str, Any] = {
    "position": {"asset": "BTC", "size": 10, "entry_price": 45000, "age_minutes": 60},
    "market": {
        "current_price": 44000,
        "volatility_1d": 0.05,
        "spot_spread_bps": 3,
        "perp_funding_rate": 0.08,
        "bid_depth_usd": 5e6,
        "ask_depth_usd": 5e6,
    },
}

REFERENCE_FIELDS = {
    "action",
    "hedge_pct",
    "risk_score",
    "reasoning",
    "suggested_hedge",
    "pnl_scenarios",
    "position_notional_usd",
    "current_unrealized_pnl",
    "re_evaluate_minutes",
}
HEDGE_FIELDS = {
    "instrument",
    "size",
    "spread_cost_usd",
    "funding_cost_1d_usd",
    "total_cost_usd",
    "total_cost_bps",
}
PNL_FIELDS = {
    "move_down_5pct",
    "move_down_2pct",
    "move_up_2pct",
    "move_up_5pct",
    "hedged_down_5pct",
    "hedged_down_2pct",
    "hedged_up_2pct",
    "hedged_up_5pct",
}
BREAKDOWN_FIELDS = {
    "loss_severity",
    "position_age",
    "volatility_regime",
    "size_vs_liquidity",
    "total",
}


def body(data: Any) -> bytes:
    return orjson.dumps(data)


def with_(path: str, value: Any) -> dict[str, Any]:
    """WORKED with `a.b` set to value (a deep copy)."""
    data: dict[str, Any] = orjson.loads(orjson.dumps(WORKED))
    part, field = path.split(".")
    data.setdefault(part, {})[field] = value
    return data


def errors(raw: bytes | str) -> list[dict[str, Any]]:
    with pytest.raises(InvalidInput) as ei:
        parse_request(raw)
    return ei.value.errors


def fields(raw: bytes | str) -> list[str]:
    return [e["field"] for e in errors(raw)]


# ------------------------------------------------------------------ parse_request
@pytest.mark.parametrize("raw", [b"", "", b"   ", "\n\t"])
def test_empty_body(raw: bytes | str) -> None:
    errs = errors(raw)
    assert [e["field"] for e in errs] == ["body"]
    assert errs[0]["type"] == "missing"


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"position": }', b"NaN", b"\xff\xfe"])
def test_malformed_json(raw: bytes) -> None:
    errs = errors(raw)
    assert [e["field"] for e in errs] == ["body"]
    assert errs[0]["type"] == "json_invalid"
    assert "not valid JSON" in errs[0]["message"]


@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"x"'])
def test_not_an_object(raw: bytes) -> None:
    assert fields(raw) == ["body"]


def test_huge_number_is_refused_naming_its_field_not_read_as_inf() -> None:
    # orjson refuses 1e400 (it would be inf) and so the whole body; the error names the
    # field, as POST /assess and `stream-risk assess` both say (one parser).
    raw = b'{"position": {"asset": "BTC", "size": 1e400, "entry_price": 1}, "market": {}}'
    errs = errors(raw)
    assert errs[0] == {
        "field": "position.size",
        "message": "Input should be a finite number",
        "type": "finite_number",
    }
    assert "market.current_price" in fields(raw)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("position.entry_price", -1),
        ("position.entry_price", "abc"),
        ("position.size", "ten"),
        ("position.size", [10]),
        ("position.asset", 5),
        ("position.age_minutes", -3),
        ("position.unrealized_pnl", {"usd": 1}),
        ("market.current_price", 0),
        ("market.volatility_1d", 3),
        ("market.volatility_1d", "nan"),
        ("market.spot_spread_bps", None),
        ("market.bid_depth_usd", -5),
        ("market.ask_depth_usd", "inf"),
        ("market.perp_funding_rate", "high"),
        ("config.max_loss_pct", 0),
        ("config.max_loss_pct", 1.5),
        ("config.max_hedge_cost_bps", -1),
        ("config.max_hold_minutes", "long"),
        ("config.unknown_knob", 1),
        ("position.unknown", 1),
    ],
)
def test_bad_field_is_named(path: str, bad: Any) -> None:
    errs = errors(body(with_(path, bad)))
    assert [e["field"] for e in errs] == [path]
    assert errs[0]["message"]
    assert errs[0]["type"]


def test_every_bad_field_is_named() -> None:
    data = with_("position.entry_price", -1)
    data["market"]["volatility_1d"] = -1
    data["config"] = {"max_loss_pct": 2}
    assert sorted(fields(body(data))) == [
        "config.max_loss_pct",
        "market.volatility_1d",
        "position.entry_price",
    ]


def test_missing_parts_and_fields() -> None:
    assert fields(body({"position": WORKED["position"]})) == ["market"]
    data = orjson.loads(body(WORKED))
    del data["position"]["entry_price"]
    del data["market"]["current_price"]
    assert sorted(fields(body(data))) == ["market.current_price", "position.entry_price"]


def test_config_cross_field_rule_named_config() -> None:
    errs = errors(body({**WORKED, "config": {"reduce_score": 50}}))
    assert [e["field"] for e in errs] == ["config"]
    assert "reduce_score" in errs[0]["message"]


def test_invalid_input_body_and_message() -> None:
    with pytest.raises(InvalidInput) as ei:
        parse_request(body(with_("position.entry_price", -1)))
    b = ei.value.body()
    assert b["error"] == "invalid request"
    assert b["detail"][0]["field"] == "position.entry_price"
    assert "position.entry_price" in str(ei.value)
    orjson.dumps(b)  # serialisable


def test_accepts_str_and_bytes() -> None:
    raw = body(WORKED)
    assert parse_request(raw) == parse_request(raw.decode())


# ------------------------------------------------------------------ response
def test_response_has_every_reference_field() -> None:
    a, out = assess_body(body(WORKED), ts_ms=1_700_000_000_123)
    assert set(out) >= REFERENCE_FIELDS
    assert set(out) >= {"version", "ts_ms", "risk_breakdown"}
    assert out["version"] == __version__
    assert out["ts_ms"] == 1_700_000_000_123
    assert set(out["suggested_hedge"]) == HEDGE_FIELDS
    assert set(out["pnl_scenarios"]) == PNL_FIELDS
    assert set(out["risk_breakdown"]) == BREAKDOWN_FIELDS
    assert out["action"] == a.action == "HEDGE_PARTIAL"
    AssessResponse.model_validate(out)
    orjson.dumps(out)


def test_response_worked_example_numbers() -> None:
    _, out = assess_body(body(WORKED), ts_ms=0)
    exp = pytest.approx
    assert out["risk_score"] == exp(30 + 60 / 480 * 20 + 15 + 440000 / 5e6 * 15, rel=1e-9)
    assert out["hedge_pct"] == 0.5
    assert out["position_notional_usd"] == exp(10 * 44000, rel=1e-9)
    assert out["current_unrealized_pnl"] == exp(10 * (44000 - 45000), rel=1e-9)
    assert out["re_evaluate_minutes"] == 60
    assert out["suggested_hedge"]["instrument"] == "perp_short"
    assert out["suggested_hedge"]["total_cost_usd"] == exp(220000 * 3 / 10000, rel=1e-9)
    assert out["pnl_scenarios"]["hedged_down_5pct"] == exp(10 * 44000 * -0.05 * 0.5, rel=1e-9)
    b = out["risk_breakdown"]
    parts = b["loss_severity"] + b["position_age"] + b["volatility_regime"]
    assert parts + b["size_vs_liquidity"] == exp(b["total"], rel=1e-9)


def test_response_flat_position() -> None:
    _, out = assess_body(body(with_("position.size", 0)), ts_ms=1)
    assert out["action"] == "HOLD"
    assert out["suggested_hedge"] is None
    assert out["risk_score"] == 0
    assert out["re_evaluate_minutes"] == 240
    assert set(out["pnl_scenarios"].values()) == {0}
    AssessResponse.model_validate(out)


def test_request_config_overrides() -> None:
    _, out = assess_body(body({**WORKED, "config": {"max_hedge_cost_bps": 2}}), ts_ms=0)
    assert out["action"] == "HOLD"  # full hedge costs 3bps > 2
    assert out["reasoning"].startswith("Hedge cost too high")
    _, out = assess_body(body({**WORKED, "config": {"max_loss_pct": 0.1}}), ts_ms=0)
    assert out["risk_score"] == pytest.approx(15 + 2.5 + 15 + 1.32, rel=1e-9)
    assert out["action"] == "HOLD"


def test_given_unrealized_pnl_passes_through() -> None:
    _, out = assess_body(body(with_("position.unrealized_pnl", -1234.5)), ts_ms=0)
    assert out["current_unrealized_pnl"] == -1234.5


def test_assess_request_and_response_compose() -> None:
    req = parse_request(body(WORKED))
    a = assess_request(req)
    out = response(a, 5)
    assert out["ts_ms"] == 5
    assert out["risk_score"] == a.risk_score
