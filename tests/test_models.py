"""Edge models: they reject bad input naming the field, and default like the reference."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from stream_risk.api import InvalidInput, parse_request
from stream_risk.config import DEFAULT_CONFIG, RiskConfig
from stream_risk.models import (
    SCHEMA_MODELS,
    AssessRequest,
    AssessResponse,
    MarketIn,
    MarketTick,
    PositionIn,
    PositionMessage,
    RiskAction,
)

POSITION: dict[str, Any] = {"asset": "BTC", "size": 10, "entry_price": 45000, "age_minutes": 60}
MARKET: dict[str, Any] = {
    "current_price": 44000,
    "volatility_1d": 0.05,
    "spot_spread_bps": 3,
    "perp_funding_rate": 0.08,
    "bid_depth_usd": 5e6,
    "ask_depth_usd": 5e6,
}
POSITION_MSG: dict[str, Any] = {
    "position_id": "desk1-BTC",
    "asset": "BTC",
    "size": -2.5,
    "entry_price": 45000,
    "ts": 1_700_000_000_000,
    "opened_at": 1_699_999_000_000,
}
TICK: dict[str, Any] = {"asset": "BTC", "ts": 1_700_000_000_000, "current_price": 44000}

BAD_NUMBERS = [math.nan, math.inf, -math.inf, "abc", [1], {"x": 1}]


def locs(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.errors()]


def rejects(model: type[BaseModel], data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as ei:
        model.model_validate(data)
    return locs(ei.value)


# ------------------------------------------------------------------ PositionIn
@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("asset", ""),
        ("asset", "X" * 65),
        ("asset", 5),
        ("asset", None),
        ("size", 1e16),
        ("size", -1e16),
        ("size", None),
        ("entry_price", 0),
        ("entry_price", -1),
        ("entry_price", 1e13),
        ("age_minutes", -1),
        ("age_minutes", 2e9),
        ("unrealized_pnl", 1e19),
        *[
            (f, b)
            for f in ("size", "entry_price", "age_minutes", "unrealized_pnl")
            for b in BAD_NUMBERS
        ],
    ],
)
def test_position_rejects(field: str, bad: Any) -> None:
    assert rejects(PositionIn, {**POSITION, field: bad}) == [field]


@pytest.mark.parametrize("field", ["asset", "size", "entry_price"])
def test_position_required(field: str) -> None:
    data = dict(POSITION)
    del data[field]
    assert rejects(PositionIn, data) == [field]


def test_position_unknown_field() -> None:
    assert rejects(PositionIn, {**POSITION, "sise": 1}) == ["sise"]


def test_position_defaults() -> None:
    p = PositionIn.model_validate({"asset": "ETH", "size": -3, "entry_price": 2000})
    assert p.age_minutes == 0
    assert p.unrealized_pnl is None
    assert p.size == -3.0 and isinstance(p.size, float)


def test_position_accepts_zero_and_negative_size() -> None:
    assert PositionIn.model_validate({**POSITION, "size": 0}).size == 0
    assert PositionIn.model_validate({**POSITION, "size": -1e15}).size == -1e15


# ------------------------------------------------------------------ MarketIn
@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("current_price", 0),
        ("current_price", -44000),
        ("volatility_1d", -0.01),
        ("volatility_1d", 1.01),
        ("spot_spread_bps", -1),
        ("spot_spread_bps", 10_001),
        ("perp_funding_rate", 101),
        ("perp_funding_rate", -101),
        ("bid_depth_usd", 0),
        ("ask_depth_usd", -1),
        *[
            (f, b)
            for f in (
                "current_price",
                "volatility_1d",
                "spot_spread_bps",
                "perp_funding_rate",
                "bid_depth_usd",
                "ask_depth_usd",
            )
            for b in BAD_NUMBERS
        ],
    ],
)
def test_market_rejects(field: str, bad: Any) -> None:
    assert rejects(MarketIn, {**MARKET, field: bad}) == [field]


@pytest.mark.parametrize("field", ["current_price", "volatility_1d", "spot_spread_bps"])
def test_market_required(field: str) -> None:
    data = dict(MARKET)
    del data[field]
    assert rejects(MarketIn, data) == [field]


def test_market_defaults() -> None:
    m = MarketIn.model_validate({"current_price": 1, "volatility_1d": 0, "spot_spread_bps": 0})
    assert m.perp_funding_rate == 0
    assert m.bid_depth_usd == 1_000_000
    assert m.ask_depth_usd == 1_000_000


def test_market_bounds_inclusive() -> None:
    m = MarketIn.model_validate({**MARKET, "volatility_1d": 1, "spot_spread_bps": 0})
    assert (m.volatility_1d, m.spot_spread_bps) == (1, 0)
    assert MarketIn.model_validate({**MARKET, "volatility_1d": 0}).volatility_1d == 0


def test_market_unknown_field() -> None:
    assert rejects(MarketIn, {**MARKET, "funding": 0.1}) == ["funding"]


# ------------------------------------------------------------------ AssessRequest
def test_request_nested_names() -> None:
    data = {
        "position": {**POSITION, "entry_price": -1},
        "market": {**MARKET, "volatility_1d": math.nan},
        "config": {"max_loss_pct": 5},
    }
    assert sorted(rejects(AssessRequest, data)) == [
        "config.max_loss_pct",
        "market.volatility_1d",
        "position.entry_price",
    ]


def test_request_required_parts() -> None:
    assert rejects(AssessRequest, {"position": POSITION}) == ["market"]
    assert rejects(AssessRequest, {"market": MARKET}) == ["position"]
    assert rejects(AssessRequest, {"position": POSITION, "market": MARKET, "x": 1}) == ["x"]


def test_request_config_defaults_and_overrides() -> None:
    r = AssessRequest.model_validate({"position": POSITION, "market": MARKET})
    assert r.config is None
    r = AssessRequest.model_validate(
        {"position": POSITION, "market": MARKET, "config": {"max_hedge_cost_bps": 20}}
    )
    # The config is a patch: only the fields it sets, merged later onto the server's config.
    assert r.config is not None
    assert r.config.model_dump(exclude_none=True) == {"max_hedge_cost_bps": 20}
    assert DEFAULT_CONFIG.merged(r.config.model_dump(exclude_none=True)) == RiskConfig(
        max_hedge_cost_bps=20
    )
    r = AssessRequest.model_validate({"position": POSITION, "market": MARKET, "config": None})
    assert r.config is None


def test_request_config_unknown_and_cross_field() -> None:
    data = {"position": POSITION, "market": MARKET, "config": {"max_los_pct": 0.1}}
    assert rejects(AssessRequest, data) == ["config.max_los_pct"]
    # Cross-field rules need the config it patches: the model takes the patch, and
    # `api.parse_request` rejects it once merged (tests/test_api.py).
    data = {"position": POSITION, "market": MARKET, "config": {"reduce_score": 50}}
    AssessRequest.model_validate(data)
    with pytest.raises(InvalidInput) as ei:
        parse_request(orjson.dumps(data))
    assert [e["field"] for e in ei.value.errors] == ["config"]


# ------------------------------------------------------------------ PositionMessage
def test_position_message_defaults() -> None:
    m = PositionMessage.model_validate({"asset": "BTC", "size": 1, "entry_price": 1})
    assert m.position_id is None
    assert m.ts is None and m.opened_at is None and m.age_minutes is None
    assert m.unrealized_pnl is None and m.config is None


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("position_id", ""),
        ("asset", ""),
        ("size", math.nan),
        ("entry_price", 0),
        ("ts", -1),
        ("ts", 10**15),  # µs, not ms
        ("ts", 1.5),
        ("ts", "soon"),
        ("opened_at", -5),
        ("age_minutes", -1),
        ("unrealized_pnl", math.inf),
    ],
)
def test_position_message_rejects(field: str, bad: Any) -> None:
    assert rejects(PositionMessage, {**POSITION_MSG, field: bad}) == [field]


def test_position_message_config_patch() -> None:
    m = PositionMessage.model_validate({**POSITION_MSG, "config": {"max_loss_pct": 0.1}})
    assert m.config is not None
    assert m.config.model_dump(exclude_none=True) == {"max_loss_pct": 0.1}
    assert rejects(PositionMessage, {**POSITION_MSG, "config": {"max_loss_pct": 0}}) == [
        "config.max_loss_pct"
    ]
    assert rejects(PositionMessage, {**POSITION_MSG, "config": {"bogus": 1}}) == ["config.bogus"]


def test_position_message_unknown_field() -> None:
    assert rejects(PositionMessage, {**POSITION_MSG, "qty": 1}) == ["qty"]


# ------------------------------------------------------------------ MarketTick
def test_tick_defaults() -> None:
    t = MarketTick.model_validate(TICK)
    for f in (
        "volatility_1d",
        "spot_spread_bps",
        "perp_funding_rate",
        "bid_depth_usd",
        "ask_depth_usd",
    ):
        assert getattr(t, f) is None


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("asset", ""),
        ("ts", -1),
        ("ts", None),
        ("ts", 10**15),
        ("current_price", 0),
        ("current_price", math.nan),
        ("volatility_1d", 2),
        ("spot_spread_bps", -1),
        ("perp_funding_rate", math.inf),
        ("bid_depth_usd", 0),
        ("ask_depth_usd", "deep"),
    ],
)
def test_tick_rejects(field: str, bad: Any) -> None:
    assert rejects(MarketTick, {**TICK, field: bad}) == [field]


@pytest.mark.parametrize("field", ["asset", "ts", "current_price"])
def test_tick_required(field: str) -> None:
    data = dict(TICK)
    del data[field]
    assert rejects(MarketTick, data) == [field]


def test_tick_unknown_field() -> None:
    assert rejects(MarketTick, {**TICK, "price": 1}) == ["price"]


# ------------------------------------------------------------------ outputs
def test_response_models_allow_extra_fields_and_validate_actions() -> None:
    from stream_risk.api import assess_request, response

    req = AssessRequest.model_validate({"position": POSITION, "market": MARKET})
    out = response(assess_request(req), 1_700_000_000_000)
    parsed = AssessResponse.model_validate({**out, "extra_field": 1})
    assert parsed.action == "HEDGE_PARTIAL"
    with pytest.raises(ValidationError):
        AssessResponse.model_validate({**out, "action": "PANIC"})
    action = RiskAction.model_validate(
        {
            **out,
            "position_id": "p",
            "asset": "BTC",
            "trigger": "tick",
            "event_ts": 1,
            "tick_ts": 1,
            "position_ts": 1,
            "assessed_at": 2,
            "stale_market_data": False,
            "next_evaluation_ts": 3_600_001,
        }
    )
    assert action.schema_version == 1


def test_schema_models_listed() -> None:
    assert set(SCHEMA_MODELS) == {
        "assess-request",
        "assess-response",
        "position",
        "market-tick",
        "risk-action",
        "risk-config",
        "risk-alert",
        "risk-book",
        "risk-book-partial",
    }


@pytest.mark.parametrize("bad", [True, "45000", None])
def test_numbers_must_be_json_numbers_not_booleans_or_strings(bad: Any) -> None:
    # A risk engine must not read `true` as 1 unit or "45000" as a price: strict numbers.
    assert rejects(PositionIn, {**POSITION, "entry_price": bad}) == ["entry_price"]
    assert rejects(MarketIn, {**MARKET, "current_price": bad}) == ["current_price"]
    assert rejects(MarketTick, {**TICK, "current_price": bad}) == ["current_price"]
