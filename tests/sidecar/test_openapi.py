"""`GET /openapi.json` and `GET /docs` (docs/design.md D21): the document is valid OpenAPI
3.1, lists exactly the routes the router has, describes the `/positions` parameters and the
error answers, its `/assess` example is the README's worked BTC case (HEDGE_PARTIAL, 48.82)
and the sidecar's real answer to it; real answers of running sidecars (an engine with
positions, limits and config history; the whole book's risk-book records; serve-only; and
their errors) validate against the schemas it documents. `/docs` is served from the
packages, references only its own origin, each file it names answers with its type, and a
real headless chromium renders every operation from it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate as validate_openapi

from sidecar.book_state import WholeBook
from stream_risk.book.net import MarketInputs, NetBook, net_record
from stream_risk.book.partial import Partial
from stream_risk.config import DEFAULT_CONFIG
from stream_risk.engine import ConfigEvent, Engine, Lineage, PositionEvent, TickEvent
from stream_risk.models import MarketTick, PositionMessage
from stream_risk.sidecar import SidecarState, StatelessState, create_app
from stream_risk.sidecar.openapi import UNDESCRIBED, openapi_document
from stream_risk.state import EngineState

T0 = 1_700_000_000_000

#: The README's worked case (`POST /assess`).
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

#: What the sidecar serves, written out by hand: a new route must be added here too.
EXPECTED_ROUTES = {
    ("GET", "/"),
    ("GET", "/static/{name}"),
    ("GET", "/events"),
    ("POST", "/assess"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/positions"),
    ("GET", "/positions/{position_id}"),
    ("GET", "/config"),
    ("GET", "/exposure"),
    ("GET", "/book"),
    ("GET", "/book/{asset}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/static/{name}"),
}


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


async def document(c: TestClient[Any, Any]) -> dict[str, Any]:
    r = await c.get("/openapi.json")
    assert r.status == 200 and r.content_type == "application/json"
    doc: dict[str, Any] = await r.json()
    return doc


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }


def check(doc: dict[str, Any], body: Any, method: str, path: str, status: int) -> None:
    """`body` is valid against the schema `doc` gives `method path`'s `status` answer."""
    answer = operations(doc)[(method, path)]["responses"][str(status)]
    schema = dict(answer["content"]["application/json"]["schema"])
    schema["components"] = doc["components"]
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


# ---------------------------------------------------------------------- the document
async def test_the_document_is_valid_openapi_3_1(client: TestClient[Any, Any]) -> None:
    doc = await document(client)
    assert doc["openapi"].startswith("3.1.")
    validate_openapi(doc)  # raises on any error, e.g. a $ref to no schema
    # Bearer auth is declared and optional (no requirement, or the token).
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert {} in doc["security"] and {"bearerAuth": []} in doc["security"]
    assert operations(doc)[("GET", "/healthz")]["security"] == []


async def test_it_lists_exactly_the_routes_the_router_has() -> None:
    app = create_app()
    router = {
        (route.method, resource.canonical)
        for resource in app.router.resources()
        for route in resource
        if route.method not in ("HEAD", "*")  # HEAD: GET's twin; "*": 405s and the 404
    }
    assert router == EXPECTED_ROUTES
    async with TestClient(TestServer(app)) as c:
        doc = await document(c)
    assert set(operations(doc)) == router
    undescribed = [mp for mp, op in operations(doc).items() if op["summary"] == UNDESCRIBED]
    assert undescribed == []
    # The 404 of an unknown path names the two new endpoints too.
    async with TestClient(TestServer(create_app())) as c:
        r = await c.get("/nowhere")
        endpoints = " ".join((await r.json())["endpoints"])
    assert "/openapi.json" in endpoints and "/docs" in endpoints


def test_a_route_nobody_described_is_listed_all_the_same() -> None:
    doc = openapi_document([("GET", "/healthz"), ("GET", "/new/{thing}")])
    op = doc["paths"]["/new/{thing}"]["get"]
    assert op["summary"] == UNDESCRIBED
    assert [(p["name"], p["in"], p["required"]) for p in op["parameters"]] == [
        ("thing", "path", True)
    ]
    validate_openapi(doc)


async def test_positions_parameters_and_path_parameters(client: TestClient[Any, Any]) -> None:
    ops = operations(await document(client))
    params = {p["name"]: p for p in ops[("GET", "/positions")]["parameters"]}
    assert set(params) == {"asset", "action", "min_score", "max_score", "limit", "cursor"}
    assert all(p["in"] == "query" and not p["required"] for p in params.values())
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 100,
    }
    assert set(params["action"]["schema"]["enum"]) == {
        "HOLD",
        "REDUCE",
        "HEDGE_PARTIAL",
        "HEDGE_FULL",
        "LIQUIDATE",
    }
    for key, name in [(("GET", "/positions/{position_id}"), "position_id"),
                      (("GET", "/book/{asset}"), "asset")]:  # fmt: skip
        (p,) = ops[key]["parameters"]
        assert (p["name"], p["in"], p["required"]) == (name, "path", True)


async def test_error_answers_are_documented_where_they_happen(
    client: TestClient[Any, Any],
) -> None:
    ops = operations(await document(client))

    def statuses(method: str, path: str) -> set[str]:
        return set(ops[(method, path)]["responses"])

    assert statuses("POST", "/assess") == {"200", "413", "422"}
    assert statuses("GET", "/positions") == {"200", "422"}
    assert statuses("GET", "/positions/{position_id}") == {"200", "404"}
    assert statuses("GET", "/readyz") == {"200", "503"}
    assert statuses("GET", "/book") == {"200", "409"}
    assert statuses("GET", "/book/{asset}") == {"200", "404", "409"}
    body = ops[("POST", "/assess")]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AssessRequest"
    }
    # Non-JSON answers say their media type.
    assert "text/plain" in ops[("GET", "/metrics")]["responses"]["200"]["content"]
    assert "text/event-stream" in ops[("GET", "/events")]["responses"]["200"]["content"]
    assert "text/html" in ops[("GET", "/docs")]["responses"]["200"]["content"]


async def test_the_assess_example_is_the_worked_btc_case_and_the_real_answer(
    client: TestClient[Any, Any],
) -> None:
    doc = await document(client)
    op = operations(doc)[("POST", "/assess")]
    example_in = op["requestBody"]["content"]["application/json"]["example"]
    assert example_in == WORKED
    example_out = op["responses"]["200"]["content"]["application/json"]["example"]
    # The README's breakdown: loss 30 (its cap), age 60 of 480 min × 20 = 2.5, volatility
    # 0.05 ≥ 0.04 (high) = 15, size 440,000 of 5M depth × 15 = 1.32: 48.82, HEDGE_PARTIAL
    # (45 ≤ score < 60), half hedged.
    assert example_out["action"] == "HEDGE_PARTIAL"
    assert example_out["risk_score"] == pytest.approx(48.82, abs=1e-9)
    assert example_out["hedge_pct"] == 0.5
    parts = example_out["risk_breakdown"]
    assert parts["position_age"] == pytest.approx(2.5)
    assert parts["volatility_regime"] == pytest.approx(15.0)
    assert parts["size_vs_liquidity"] == pytest.approx(1.32)
    assert example_out["position_notional_usd"] == pytest.approx(440_000.0)
    assert example_out["current_unrealized_pnl"] == pytest.approx(-10_000.0)
    r = await client.post("/assess", data=orjson.dumps(example_in))
    real = await r.json()
    assert r.status == 200
    assert {k: v for k, v in real.items() if k != "ts_ms"} == {
        k: v for k, v in example_out.items() if k != "ts_ms"
    }
    check(doc, example_out, "POST", "/assess", 200)
    check(doc, real, "POST", "/assess", 200)
    # The 422 example is the real answer to a real mistake, and fits its schema.
    bad = op["responses"]["422"]["content"]["application/json"]["example"]
    assert {e["field"] for e in bad["detail"]} == {"market.volatility_1d", "market.spot_spread_bps"}
    check(doc, bad, "POST", "/assess", 422)


async def test_every_example_fits_its_schema(client: TestClient[Any, Any]) -> None:
    doc = await document(client)
    seen = []
    for (method, path), op in operations(doc).items():
        media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        if "example" in media:
            schema = {**media["schema"], "components": doc["components"]}
            jsonschema.validate(media["example"], schema, cls=jsonschema.Draft202012Validator)
            seen.append((method, path, "body"))
        for status, answer in op["responses"].items():
            media = answer.get("content", {}).get("application/json", {})
            if "example" in media:
                check(doc, media["example"], method, path, int(status))
                seen.append((method, path, status))
    assert {
        ("POST", "/assess", "body"),
        ("POST", "/assess", "200"),
        ("POST", "/assess", "413"),
        ("POST", "/assess", "422"),
        ("GET", "/positions", "200"),
        ("GET", "/positions/{position_id}", "200"),
        ("GET", "/exposure", "200"),
        ("GET", "/config", "200"),
    } <= set(seen)
    # The engine's examples hold the worked case: its action is the one /assess gives.
    ops = operations(doc)
    row = ops[("GET", "/positions/{position_id}")]["responses"]["200"]["content"]
    action = row["application/json"]["example"]["latest_action"]
    assert (action["action"], action["risk_score"]) == ("HEDGE_PARTIAL", pytest.approx(48.82))
    exposure = ops[("GET", "/exposure")]["responses"]["200"]["content"]["application/json"]
    # 10 BTC at 44,000: 440,000 of net notional; a 5 % fall costs 22,000, half hedged 11,000.
    btc = exposure["example"]["assets"]["BTC"]
    assert btc["net_notional_usd"] == pytest.approx(440_000.0)
    assert btc["pnl_down_5pct"] == pytest.approx(-22_000.0)
    assert btc["hedged_pnl_down_5pct"] == pytest.approx(-11_000.0)


# ---------------------------------------------------------------------- real answers
def tick(asset: str, price: float, vol: float) -> TickEvent:
    msg = MarketTick(asset=asset, ts=T0, current_price=price, volatility_1d=vol,
                     spot_spread_bps=3.0, perp_funding_rate=0.08,
                     bid_depth_usd=5e6, ask_depth_usd=5e6)  # fmt: skip
    return TickEvent(msg, Lineage("market-ticks", 0, 7, T0))


def pos(pid: str, asset: str, size: float, entry: float) -> PositionEvent:
    msg = PositionMessage.model_validate(
        {"position_id": pid, "asset": asset, "size": size, "entry_price": entry, "ts": T0,
         "age_minutes": 60.0}
    )  # fmt: skip
    return PositionEvent(pid, msg, 0, Lineage("positions", 0, 3, T0))


def engine_book() -> Engine:
    """The worked BTC position, a short on ETH, an XRP position without a tick (no action
    yet); a global net-notional limit BTC breaches (10 × 44,000 = 440,000 > 100,000), an
    asset override, and a rejected record (reduce above hedge_partial) in the history."""
    engine = Engine()
    engine.step(
        [
            tick("BTC", 44_000.0, 0.05),
            tick("ETH", 2_000.0, 0.01),
            pos("p-btc-1", "BTC", 10.0, 45_000.0),
            pos("p-eth-1", "ETH", -5.0, 2_100.0),
            pos("p-xrp-1", "XRP", 100.0, 0.5),
            ConfigEvent(
                "global",
                {"max_net_notional_usd": 100_000.0},
                Lineage("risk-config", 0, 0, T0),
                "desk",
            ),
            ConfigEvent(
                "asset:ETH", {"hedge_partial_pct": 0.6}, Lineage("risk-config", 0, 1, T0), "desk"
            ),
            ConfigEvent("global", {"reduce_score": 99.0}, Lineage("risk-config", 0, 2, T0), "desk"),
        ],
        T0,
    )
    return engine


def whole_book() -> WholeBook:
    """risk-book records as the book stage makes them (`net_record`): with a market and
    advice, and without a market."""
    t = Partial(2, 1, 1, 10.0, 90.0, 50.0, 20.0, 5_480_000.0, 520_000.0, 90.0 * T0)
    m = MarketInputs(T0, 61_000.0, 0.05, 2.0, 0.03)
    records = {
        asset: orjson.loads(orjson.dumps(net_record(
            NetBook.of(asset, t, market, DEFAULT_CONFIG, T0), DEFAULT_CONFIG, [], T0 + 1
        )))
        for asset, market in (("BTC", m), ("SOL", None))
    }  # fmt: skip
    return WholeBook(records)


async def answers(c: TestClient[Any, Any], doc: dict[str, Any], calls: list[Any]) -> int:
    """GET each (path, documented path, status) and validate its body; how many."""
    for path, template, status in calls:
        r = await c.get(path)
        assert r.status == status, (path, await r.text())
        check(doc, await r.json(), "GET", template, status)
    return len(calls)


async def test_an_engines_answers_validate_against_the_document() -> None:
    engine = engine_book()
    view = engine.config_view()
    assert [h["status"] for h in view["history"]] == ["applied", "applied", "rejected"]
    async with TestClient(TestServer(create_app(EngineState(engine)))) as c:
        doc = await document(c)
        # The page's rows: one advised (its latest action a full risk-actions record), one
        # waiting for a price.
        r = await c.get("/positions")
        page = await r.json()
        actions = {row["position_id"]: row["latest_action"] for row in page["positions"]}
        assert actions["p-btc-1"]["action"] == "HEDGE_PARTIAL" and actions["p-xrp-1"] is None
        exposure = await (await c.get("/exposure")).json()
        assert exposure["breaches"], "the BTC limit breach is there to be validated"
        n = await answers(
            c,
            doc,
            [
                ("/positions", "/positions", 200),
                ("/positions?asset=btc&limit=1", "/positions", 200),
                ("/positions?limit=1&cursor=" + str(page["next_cursor"] or ""), "/positions", 200),
                ("/positions?limit=0&action=SELL&bogus=1", "/positions", 422),
                ("/positions/p-btc-1", "/positions/{position_id}", 200),
                ("/positions/p-xrp-1", "/positions/{position_id}", 200),
                ("/positions/nope", "/positions/{position_id}", 404),
                ("/config", "/config", 200),
                ("/exposure", "/exposure", 200),
                ("/book", "/book", 409),
                ("/book/BTC", "/book/{asset}", 409),
                ("/healthz", "/healthz", 200),
                ("/readyz", "/readyz", 200),
            ],
        )
    assert n == 13


async def test_the_whole_books_answers_validate_against_the_document() -> None:
    async with TestClient(TestServer(create_app(whole_book()))) as c:
        doc = await document(c)
        body = await (await c.get("/book")).json()
        assert set(body["assets"]) == {"BTC", "SOL"}
        assert body["assets"]["BTC"]["advice"] is not None
        assert body["assets"]["SOL"]["advice"] is None
        await answers(
            c,
            doc,
            [
                ("/book", "/book", 200),
                ("/book/btc", "/book/{asset}", 200),
                ("/book/SOL", "/book/{asset}", 200),
                ("/book/DOGE", "/book/{asset}", 404),
                ("/exposure", "/exposure", 200),
            ],
        )


class NotReady(StatelessState):
    def is_ready(self) -> tuple[bool, list[str]]:
        return False, ["broker unreachable: localhost:9092"]


async def test_serve_only_and_error_answers_validate_against_the_document() -> None:
    async with await start(max_body_bytes=1024) as c:
        doc = await document(c)
        await answers(
            c,
            doc,
            [
                ("/positions", "/positions", 200),
                ("/positions/p1", "/positions/{position_id}", 404),
                ("/config", "/config", 200),
                ("/exposure", "/exposure", 200),
                ("/book", "/book", 409),
            ],
        )
        # 413 with this app's limit, documented with it.
        r = await c.post("/assess", data=b"{" + b" " * 2000 + b"}")
        assert r.status == 413
        too_large = await r.json()
        check(doc, too_large, "POST", "/assess", 413)
        op = operations(doc)[("POST", "/assess")]
        assert op["responses"]["413"]["content"]["application/json"]["example"] == too_large
        r = await c.post("/assess", data=b'{"position": {}, "market": []}')
        assert r.status == 422
        check(doc, await r.json(), "POST", "/assess", 422)
    async with await start(NotReady()) as c:
        doc = await document(c)
        await answers(c, doc, [("/readyz", "/readyz", 503)])


async def test_a_schema_that_does_not_fit_is_caught() -> None:
    """The validation above can fail: an answer of the wrong shape is refused."""
    async with await start() as c:
        doc = await document(c)
    with pytest.raises(jsonschema.ValidationError):
        check(doc, {"ready": "yes", "mode": "engine", "reasons": []}, "GET", "/readyz", 200)
    with pytest.raises(jsonschema.ValidationError):
        check(doc, {"positions": [{"asset": "BTC"}]}, "GET", "/positions", 200)


# ---------------------------------------------------------------------- /docs
class Refs(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.attrs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("src", "href"):
                self.refs.append(value)
            self.attrs[name] = value


EXPECTED_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


async def test_docs_is_served_from_the_package_with_same_origin_assets(
    client: TestClient[Any, Any],
) -> None:
    r = await client.get("/docs")
    assert r.status == 200 and r.content_type == "text/html"
    html = await r.text()
    assert not re.search(r"https?://", html), "the page names another host"
    parser = Refs()
    parser.feed(html)
    base = str(client.make_url("/docs"))
    origin = urlsplit(base)[:2]
    names = set()
    for ref in parser.refs:
        url = urljoin(base, ref)
        assert urlsplit(url)[:2] == origin, ref
        got = await client.get(urlsplit(url).path)
        ext = "." + url.rsplit(".", 1)[-1]
        assert got.status == 200, url
        assert got.content_type == EXPECTED_TYPES[ext], url
        assert len(await got.read()) > 0
        names.add(url.rsplit("/", 1)[-1])
    assert {"swagger-ui.css", "swagger-ui-bundle.js", "docs.js"} <= names
    # The page's document is this sidecar's.
    spec = urljoin(base, parser.attrs["data-spec-url"])
    assert urlsplit(spec).path == "/openapi.json"
    # Its script names no other host either (it builds the URL from the page's).
    script = await (await client.get("/docs/static/docs.js")).text()
    assert not re.search(r"https?://", script)


@pytest.mark.parametrize("name", ["index.j2", "..%2Fopenapi.py", "swagger-initializer.js", "x"])
async def test_nothing_else_is_reachable_under_docs(
    client: TestClient[Any, Any], name: str
) -> None:
    r = await client.get(f"/docs/static/{name}")
    assert r.status == 404
    body = await r.json()
    assert "swagger-ui.css" in body["detail"]  # says which files there are


@pytest.mark.timeout(90)
async def test_a_real_browser_renders_every_operation() -> None:
    from demo.cdp import Chromium

    runner = web.AppRunner(create_app(EngineState(engine_book())), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/docs"
    try:
        async with Chromium(1280, 900) as browser:
            await browser.navigate(url)
            count = "document.querySelectorAll('.opblock').length"
            seen = await browser.wait_for(f"{count} >= {len(EXPECTED_ROUTES)} && {count}")
            assert seen == len(EXPECTED_ROUTES), browser.console
            paths = await browser.evaluate(
                "[...document.querySelectorAll('.opblock-summary-path')]"
                ".map(e => e.getAttribute('data-path')).sort().join(' ')"
            )
            assert "/assess" in paths.split() and "/positions/{position_id}" in paths.split()
            assert not await browser.evaluate("document.body.innerText.includes('Warning')")
            # Try it out: open POST /assess (its editor holds the example) and Execute.
            op = "document.querySelector('#operations-assess-post_assess {}')"
            await browser.evaluate(op.format(".opblock-summary-control") + ".click()")
            await browser.wait_for("!!" + op.format("button.execute"))
            await browser.evaluate(op.format("button.execute") + ".click()")
            answer = op.format(".live-responses-table tbody .response-col_status")
            status = await browser.wait_for(f"({answer} || {{}}).innerText")
            assert status.strip() == "200"
            body = await browser.evaluate(
                op.format(".live-responses-table tbody .response-col_description pre")
                + ".innerText"
            )
            out = orjson.loads(body)
            assert (out["action"], out["risk_score"]) == ("HEDGE_PARTIAL", 48.82)
    finally:
        await runner.cleanup()


def test_stream_risk_serve_serves_the_document_and_the_page() -> None:
    """The command, as a process: `stream-risk serve --port 0` (any free port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_RISK_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_risk.cli", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().decode()  # "stream-risk sidecar (stateless) on URL ..."
        found = re.search(r"(http://\S+)", line)
        assert found, (line, proc.stderr.read().decode() if proc.poll() is not None else "")
        base = found.group(1)
        with urllib.request.urlopen(base + "/openapi.json", timeout=10) as resp:
            doc = orjson.loads(resp.read())
        assert doc["openapi"].startswith("3.1.")
        assert set(operations(doc)) == EXPECTED_ROUTES
        with urllib.request.urlopen(base + "/docs", timeout=10) as resp:
            assert resp.headers.get_content_type() == "text/html"
            assert b"docs/static/swagger-ui-bundle.js" in resp.read()
    finally:
        proc.terminate()
        proc.wait(10)
