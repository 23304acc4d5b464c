"""Hypothesis against one running sidecar: whatever the body, `POST /assess` answers 200,
413 or 422 in JSON, never a 5xx, and the server keeps answering."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stream_risk.assessor import ACTIONS
from stream_risk.sidecar import create_app

from .test_app import WORKED

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

FIELDS = {
    "position": ["asset", "size", "entry_price", "age_minutes", "unrealized_pnl"],
    "market": [
        "current_price",
        "volatility_1d",
        "spot_spread_bps",
        "perp_funding_rate",
        "bid_depth_usd",
        "ask_depth_usd",
    ],
    "config": ["max_loss_pct", "max_hold_minutes", "max_hedge_cost_bps", "liquidate_score"],
}

surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3)
keys = st.text(max_size=12) | surrogates
numbers = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.sampled_from([0, -0.0, 1e-320, 5e-324, 1e308, -1e308, 2**63, -(2**63) - 1])
)
leaves = st.none() | st.booleans() | numbers | st.text(max_size=20) | surrogates
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)


def dumps(value: Any) -> bytes:
    """Stdlib JSON, which writes NaN/Infinity raw and escapes lone surrogates."""
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """The worked example with a few fields replaced by junk, deleted or added."""
    doc: dict[str, Any] = orjson.loads(orjson.dumps(WORKED))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from([*FIELDS, None]))
        if section is None:
            doc[draw(keys)] = draw(json_values)
            continue
        target = doc.get(section)
        if not isinstance(target, dict):
            target = doc[section] = {}
        key = draw(st.sampled_from(FIELDS[section]) | keys)
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(json_values)
    return dumps(doc)


def wide(lo: float, hi: float, gt: bool = False) -> st.SearchStrategy[Any]:
    """Numbers in [lo, hi] (or (lo, hi] when gt), as floats of every magnitude or ints."""
    floats = st.floats(min_value=lo, max_value=hi, exclude_min=gt)
    first, last = math.floor(lo) + gt, math.floor(hi)
    return floats | st.integers(first, last) if first <= last else floats


@st.composite
def extreme_requests(draw: st.DrawFn) -> bytes:
    """Well-formed requests with in-range numbers of every magnitude (and a config that may
    break a cross-field rule): the model must cope, never crash."""
    position = {
        "asset": draw(st.text(min_size=1, max_size=8)),
        "size": draw(wide(-1e15, 1e15)),
        "entry_price": draw(wide(0, 1e12, gt=True)),
        "age_minutes": draw(wide(0, 1e9)),
    }
    if draw(st.booleans()):
        position["unrealized_pnl"] = draw(wide(-1e18, 1e18))
    market = {
        "current_price": draw(wide(0, 1e12, gt=True)),
        "volatility_1d": draw(wide(0, 1)),
        "spot_spread_bps": draw(wide(0, 10_000)),
        "perp_funding_rate": draw(wide(-100, 100)),
        "bid_depth_usd": draw(wide(0, 1e18, gt=True)),
        "ask_depth_usd": draw(wide(0, 1e18, gt=True)),
    }
    doc: dict[str, Any] = {"position": position, "market": market}
    if draw(st.booleans()):
        doc["config"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "max_loss_pct": wide(0, 1, gt=True),
                    "max_hold_minutes": wide(0, 1e9, gt=True),
                    "max_hedge_cost_bps": wide(0, 1e6, gt=True),
                    "vol_reference": wide(0, 1, gt=True),
                    "high_vol_threshold": wide(0, 1, gt=True),
                    "days_per_year": wide(0, 1e6, gt=True),
                    "large_move": wide(0, 0.999, gt=True),
                },
            )
        )
    return dumps(doc)


bodies = (
    json_values.map(dumps)
    | mutated_requests()
    | extreme_requests()
    | st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    c: TestClient[Any, Any] = TestClient(TestServer(create_app()))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()


def check_answer(status: int, out: Any) -> None:
    event(f"status {status}")
    assert status in (200, 413, 422), (status, out)
    assert isinstance(out, dict)
    if status == 200:
        assert out["action"] in ACTIONS
        assert 0 <= out["risk_score"] <= 100
        for k in ("risk_score", "hedge_pct", "position_notional_usd", "current_unrealized_pnl"):
            assert isinstance(out[k], int | float) and math.isfinite(out[k]), (k, out[k])
        for v in out["pnl_scenarios"].values():
            assert math.isfinite(v)
    else:
        assert out["detail"], out
        for e in out["detail"]:
            assert isinstance(e["field"], str) and e["message"]


@SETTINGS
@given(body=bodies, content_type=st.sampled_from([None, "application/json", "text/plain"]))
async def test_assess_never_answers_5xx(
    client: TestClient[Any, Any], body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = await client.post("/assess", data=body, headers=headers)
    check_answer(r.status, orjson.loads(await r.read()))


@SETTINGS
@given(body=extreme_requests())
async def test_extreme_requests_are_assessed_or_named(
    client: TestClient[Any, Any], body: bytes
) -> None:
    r = await client.post("/assess", data=body)
    check_answer(r.status, orjson.loads(await r.read()))


async def test_server_still_answers_after_the_properties(client: TestClient[Any, Any]) -> None:
    r = await client.post("/assess", data=orjson.dumps(WORKED))
    assert r.status == 200
    assert (await client.get("/healthz")).status == 200
