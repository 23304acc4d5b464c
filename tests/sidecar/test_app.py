"""The sidecar over a real socket: aiohttp's TestServer listens on a free localhost port and
the requests go through aiohttp's client. No mocks: the state objects are small real
implementations of `SidecarState`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from stream_risk.metrics import EngineView
from stream_risk.sidecar import (
    DEFAULT_MAX_BODY_BYTES,
    Metrics,
    SidecarState,
    StatelessState,
    create_app,
)

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


def body_with(path: str, value: Any) -> bytes:
    """The worked example with `path` (dotted) set to `value`, or deleted if value is ...."""
    doc = orjson.loads(orjson.dumps(WORKED))
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return orjson.dumps(doc)


class NotReady(SidecarState):
    def is_ready(self) -> tuple[bool, list[str]]:
        return False, ["positions partition 3 still rebuilding", "broker unreachable"]


class Broken(SidecarState):
    def is_ready(self) -> tuple[bool, list[str]]:
        raise RuntimeError("engine bug")

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        raise RuntimeError("engine bug")


class Book(SidecarState):
    ROWS = (
        {"position_id": "p1", "asset": "BTC", "action": "HOLD"},
        {"position_id": "p2", "asset": "ETH", "action": "REDUCE"},
    )

    def is_ready(self) -> tuple[bool, list[str]]:
        return True, []

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ROWS if asset is None or r["asset"] == asset]


async def start(state: SidecarState | None = None, **kw: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(state, **kw)))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    c = await start()
    try:
        yield c
    finally:
        await c.close()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def still_alive(c: TestClient[Any, Any]) -> None:
    r = await c.get("/healthz")
    assert r.status == 200
    r = await c.post("/assess", data=orjson.dumps(WORKED))
    assert r.status == 200


# ---------------------------------------------------------------------- POST /assess
async def test_worked_example(client: TestClient[Any, Any]) -> None:
    r = await client.post(
        "/assess", data=orjson.dumps(WORKED), headers={"Content-Type": "application/json"}
    )
    assert r.status == 200
    assert r.content_type == "application/json"
    out = await r.json()
    assert out["risk_score"] == pytest.approx(48.82, abs=1e-9)
    assert out["action"] == "HEDGE_PARTIAL"
    assert out["hedge_pct"] == 0.5
    hedge = out["suggested_hedge"]
    assert hedge["instrument"] == "perp_short"
    assert hedge["size"] == 5.0
    assert hedge["total_cost_usd"] == pytest.approx(66.0)
    assert out["re_evaluate_minutes"] == 60
    assert out["position_notional_usd"] == 440000
    assert out["current_unrealized_pnl"] == -10000
    assert set(out["pnl_scenarios"]) == {
        "move_down_5pct",
        "move_down_2pct",
        "move_up_2pct",
        "move_up_5pct",
        "hedged_down_5pct",
        "hedged_down_2pct",
        "hedged_up_2pct",
        "hedged_up_5pct",
    }
    assert out["pnl_scenarios"]["hedged_down_5pct"] == -11000
    assert out["version"] == "0.1.0"
    assert isinstance(out["ts_ms"], int) and out["ts_ms"] > 1_600_000_000_000
    assert out["reasoning"].startswith("Risk score 49/100")


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "garbage"]
)
async def test_any_content_type_is_parsed_as_json(
    client: TestClient[Any, Any], content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = await client.post("/assess", data=orjson.dumps(WORKED), headers=headers)
    assert r.status == 200
    assert (await r.json())["action"] == "HEDGE_PARTIAL"


async def test_request_config_applies(client: TestClient[Any, Any]) -> None:
    # A 1 bps hedge-cost limit makes the 3 bps full hedge too expensive: HOLD.
    r = await client.post("/assess", data=body_with("config.max_hedge_cost_bps", 1))
    out = await r.json()
    assert r.status == 200
    assert out["action"] == "HOLD" and out["suggested_hedge"] is None


RAW_WORKED = orjson.dumps(WORKED).decode()

INVALID: list[tuple[str, bytes, list[str]]] = [
    ("missing field", body_with("market.volatility_1d", ...), ["market.volatility_1d"]),
    ("missing object", body_with("position", ...), ["position"]),
    ("wrong type", body_with("position.size", "ten"), ["position.size"]),
    ("wrong type object", body_with("market", [1, 2]), ["market"]),
    ("object for a float", body_with("position.entry_price", {"a": 1}), ["position.entry_price"]),
    ("out of range >0", body_with("position.entry_price", 0), ["position.entry_price"]),
    ("out of range vol", body_with("market.volatility_1d", 1.5), ["market.volatility_1d"]),
    ("negative age", body_with("position.age_minutes", -1), ["position.age_minutes"]),
    ("empty asset", body_with("position.asset", ""), ["position.asset"]),
    ("raw NaN", RAW_WORKED.replace('"size":10', '"size":NaN').encode(), ["position.size"]),
    (
        "raw Infinity",
        RAW_WORKED.replace('"current_price":44000', '"current_price":Infinity').encode(),
        ["market.current_price"],
    ),
    (
        "overflowing number",
        RAW_WORKED.replace('"spot_spread_bps":3', '"spot_spread_bps":1e400').encode(),
        ["market.spot_spread_bps"],
    ),
    ("malformed JSON", b'{"position": {"asset": "BTC",', ["body"]),
    ("not UTF-8", b'{"position": "\xff\xfe"}', ["body"]),
    ("empty body", b"", ["body"]),
    ("whitespace body", b"  \n ", ["body"]),
    ("JSON array", b"[1, 2, 3]", ["body"]),
    ("JSON string", b'"hello"', ["body"]),
    ("JSON null", b"null", ["body"]),
    ("unknown field", body_with("position.colour", "red"), ["position.colour"]),
    ("unknown top-level field", body_with("extra", 1), ["extra"]),
    ("config out of range", body_with("config.max_loss_pct", 2), ["config.max_loss_pct"]),
    ("config unknown key", body_with("config.max_loss", 0.1), ["config.max_loss"]),
    ("config wrong type", body_with("config", "strict"), ["config"]),
    (
        "config inconsistent bands",
        body_with("config", {"liquidate_score": 50, "hedge_full_score": 60}),
        ["config"],
    ),
]


@pytest.mark.parametrize(("case", "body", "fields"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_input_is_422_naming_each_field(
    client: TestClient[Any, Any], case: str, body: bytes, fields: list[str]
) -> None:
    r = await client.post("/assess", data=body)
    assert r.status == 422, await r.text()
    assert r.content_type == "application/json"
    out = await r.json()
    assert out["error"] == "invalid request"
    named = [e["field"] for e in out["detail"]]
    assert set(fields) <= set(named), named
    for e in out["detail"]:
        assert e["message"] and e["type"]
    await still_alive(client)


async def test_every_bad_field_is_named_at_once(client: TestClient[Any, Any]) -> None:
    doc = {
        "position": {"asset": "BTC", "size": "x", "entry_price": -1},
        "market": {"current_price": 1, "volatility_1d": 2},
        "config": {"max_hold_minutes": 0},
    }
    r = await client.post("/assess", data=orjson.dumps(doc))
    assert r.status == 422
    named = {e["field"] for e in (await r.json())["detail"]}
    assert named == {
        "position.size",
        "position.entry_price",
        "market.volatility_1d",
        "market.spot_spread_bps",
        "config.max_hold_minutes",
    }


async def test_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    big = b'{"position": {"asset": "' + b"A" * (DEFAULT_MAX_BODY_BYTES + 10) + b'"}}'
    r = await client.post("/assess", data=big)
    assert r.status == 413
    out = await r.json()
    assert out["limit_bytes"] == DEFAULT_MAX_BODY_BYTES
    assert str(DEFAULT_MAX_BODY_BYTES) in out["detail"][0]["message"]
    await still_alive(client)


async def test_chunked_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    r = await client.post("/assess", data=chunks())  # no Content-Length: chunked
    assert r.status == 413
    assert (await r.json())["limit_bytes"] == DEFAULT_MAX_BODY_BYTES
    await still_alive(client)


async def test_body_at_the_limit_is_accepted() -> None:
    body = orjson.dumps(WORKED)
    c = await start(max_body_bytes=len(body))
    try:
        r = await c.post("/assess", data=body)
        assert r.status == 200
        r = await c.post("/assess", data=body + b" ")
        assert r.status == 413
    finally:
        await c.close()


async def test_wrong_method_and_unknown_path_answer_json(client: TestClient[Any, Any]) -> None:
    r = await client.get("/assess")
    assert r.status == 405
    assert r.headers["Allow"] == "POST"
    assert "POST /assess" in (await r.json())["detail"]
    r = await client.post("/healthz")
    assert r.status == 405
    r = await client.get("/no/such/thing")
    assert r.status == 404
    out = await r.json()
    assert "POST /assess" in out["endpoints"]
    await still_alive(client)


# ---------------------------------------------------------------------- health and readiness
async def test_healthz(client: TestClient[Any, Any]) -> None:
    r = await client.get("/healthz")
    assert r.status == 200
    assert await r.json() == {"status": "ok"}
    r = await client.head("/healthz")
    assert r.status == 200


async def test_readyz_serve_only_is_ready(client: TestClient[Any, Any]) -> None:
    r = await client.get("/readyz")
    assert r.status == 200
    assert await r.json() == {"ready": True, "mode": "stateless", "reasons": []}


async def test_readyz_not_ready_is_503_with_reasons() -> None:
    c = await start(NotReady())
    try:
        r = await c.get("/readyz")
        assert r.status == 503
        out = await r.json()
        assert out["ready"] is False
        assert out["reasons"] == ["positions partition 3 still rebuilding", "broker unreachable"]
        text = await (await c.get("/metrics")).text()
        assert sample(text, "stream_risk_ready") == 0
        # Not ready for the stream says nothing about the stateless endpoint.
        await still_alive(c)
    finally:
        await c.close()


async def test_broken_state_is_not_ready_and_never_crashes_the_server() -> None:
    c = await start(Broken())
    try:
        r = await c.get("/readyz")
        assert r.status == 503
        assert "engine bug" in (await r.json())["reasons"][0]
        r = await c.get("/positions")
        assert r.status == 500  # an engine bug: logged, answered in JSON
        assert "error" in await r.json()
        await still_alive(c)
    finally:
        await c.close()


# ---------------------------------------------------------------------- /positions
async def test_positions_serve_only_is_empty_and_says_stateless(
    client: TestClient[Any, Any],
) -> None:
    r = await client.get("/positions")
    assert r.status == 200
    assert await r.json() == {
        "mode": "stateless",
        "count": 0,
        "positions": [],
        "next_cursor": None,
        "partial": False,
        "scanned": 0,
        "limit": 100,
        "filter": {"asset": None, "action": None, "min_score": None, "max_score": None},
        "total": 0,
        "exposure": {},
    }


async def test_positions_from_the_engine_state_filtered_by_asset() -> None:
    c = await start(Book())
    try:
        out = await (await c.get("/positions")).json()
        assert out["mode"] == "engine" and out["count"] == 2
        out = await (await c.get("/positions", params={"asset": "ETH"})).json()
        assert out["positions"] == [{"position_id": "p2", "asset": "ETH", "action": "REDUCE"}]
    finally:
        await c.close()


# ---------------------------------------------------------------------- /metrics
ENGINE_METRICS = [
    "stream_risk_records_consumed",
    "stream_risk_dlq_records",
    "stream_risk_tick_to_action_seconds",
    "stream_risk_consumer_lag",
    "stream_risk_table_positions",
    "stream_risk_table_assets",
    "stream_risk_timers_pending",
    "stream_risk_rebuild_seconds",
    "stream_risk_actions_published",
    "stream_risk_stale_market_data",
    "stream_risk_out_of_order",
    "stream_risk_duplicates",
    "stream_risk_idempotence_enabled",
    "stream_risk_broker_connected",
    "stream_risk_ready",
]


async def test_metrics_count_requests_assessments_actions_and_errors(
    client: TestClient[Any, Any],
) -> None:
    for _ in range(3):
        assert (await client.post("/assess", data=orjson.dumps(WORKED))).status == 200
    flat = body_with("position.size", 0)
    assert (await client.post("/assess", data=flat)).status == 200
    assert (await client.post("/assess", data=b"{")).status == 422
    assert (await client.post("/assess", data=body_with("position.size", "x"))).status == 422
    assert (await client.get("/healthz")).status == 200

    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = await r.text()
    req = "stream_risk_http_requests_total"
    assert sample(text, req, path="/assess", method="POST", status="200") == 4
    assert sample(text, req, path="/assess", method="POST", status="422") == 2
    assert sample(text, req, path="/healthz", method="GET", status="200") == 1
    assert sample(text, "stream_risk_assessments_total", source="http") == 4
    assert sample(text, "stream_risk_actions_total", action="HEDGE_PARTIAL") == 3
    assert sample(text, "stream_risk_actions_total", action="HOLD") == 1
    err = "stream_risk_http_errors_total"
    assert sample(text, err, path="/assess", kind="malformed") == 1
    assert sample(text, err, path="/assess", kind="validation") == 1
    assert sample(text, "stream_risk_http_request_seconds_count", path="/assess") == 6

    names = {f.name for f in text_string_to_metric_families(text)}
    for name in ENGINE_METRICS:
        assert name in names, name
    assert all(n.startswith("stream_risk_") for n in names if not n.startswith(("python_",)))


async def test_each_app_has_its_own_registry() -> None:
    a, b = await start(), await start()
    try:
        await a.post("/assess", data=orjson.dumps(WORKED))
        ta = await (await a.get("/metrics")).text()
        tb = await (await b.get("/metrics")).text()
        assert sample(ta, "stream_risk_assessments_total", source="http") == 1
        assert sample(tb, "stream_risk_assessments_total", source="http") == 0
    finally:
        await a.close()
        await b.close()


async def test_engine_and_sidecar_share_metrics_through_the_registry() -> None:
    registry = CollectorRegistry()
    engine_metrics = Metrics.for_registry(registry)  # what the engine would hold
    engine_metrics.records_consumed.labels("positions").inc(7)
    engine_metrics.state.bind(lambda: EngineView(table_positions=3))  # read when scraped
    c = await start(StatelessState(), registry=registry)
    try:
        text = await (await c.get("/metrics")).text()
        assert sample(text, "stream_risk_records_consumed_total", topic="positions") == 7
        assert sample(text, "stream_risk_table_positions") == 3
    finally:
        await c.close()
    assert Metrics.for_registry(registry) is engine_metrics
    with pytest.raises(ValueError):
        create_app(registry=CollectorRegistry(), metrics=engine_metrics)
