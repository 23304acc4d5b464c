"""`GET /openapi.json` (OpenAPI 3.1) and `GET /docs` (Swagger UI, from files in the
packages: no CDN) on the sidecar (docs/design.md D21).

    add_openapi(app, metrics=None, *, max_body_bytes=65536)   # in create_app, before the catch-all

The document lists the routes the app's router really has (read on the first request, when
the router is frozen): a route added later without a description here still appears, as
"not described yet", and a test fails on it. The schemas are generated from the pydantic
models: the `/assess` request and response and the topic records from `stream_risk.models`,
the other answers from `stream_risk.sidecar.responses`. The `/assess` examples are the
worked BTC case, assessed by the core when the document is made: the real answer.

The interactive page is `static/docs.html` and `static/docs.js` of this package, with
Swagger UI's files from the `swagger-ui-bundle-v2` package (Swagger UI 5: OpenAPI 3.1),
served under `/docs/static/`, a fixed list. Every URL in the page is relative, so it works
behind a reverse proxy that mounts the sidecar under a prefix.
"""

from __future__ import annotations

import functools
import importlib
import re
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from stream_risk import __version__
from stream_risk.api import InvalidInput, assess_body, parse_request
from stream_risk.engine import Engine, Lineage, PositionEvent, TickEvent
from stream_risk.engine.views import MAX_LIMIT
from stream_risk.metrics import Metrics
from stream_risk.models import (
    AssessRequest,
    AssessResponse,
    BookRecord,
    MarketTick,
    PositionMessage,
)
from stream_risk.rules import ACTIONS
from stream_risk.sidecar import responses as r
from stream_risk.sidecar.errors import JSON, too_large
from stream_risk.sidecar.exposure import exposure_from_view

OPENAPI_VERSION: Final = "3.1.0"
REF_TEMPLATE: Final = "#/components/schemas/{model}"
#: The `ts_ms` of the examples (2023-11-14 22:13:20 UTC): the document is the same every time.
EXAMPLE_TS_MS: Final = 1_700_000_000_000
#: The worked BTC case of the README.
WORKED_EXAMPLE: Final[Mapping[str, Any]] = {
    "position": {"asset": "BTC", "size": 10, "entry_price": 45000, "age_minutes": 60},
    "market": {
        "current_price": 44000,
        "volatility_1d": 0.05,
        "spot_spread_bps": 3,
        "perp_funding_rate": 0.08,
        "bid_depth_usd": 5_000_000,
        "ask_depth_usd": 5_000_000,
    },
}
#: Two mistakes at once: the 422 names both.
INVALID_EXAMPLE: Final[Mapping[str, Any]] = {
    "position": {"asset": "BTC", "size": 10, "entry_price": 45000},
    "market": {"current_price": 44000, "volatility_1d": 5},
}
UNDESCRIBED: Final = "not described yet"

#: `/docs/static/{name}`: Swagger UI's files (from swagger-ui-bundle-v2) and their types.
SWAGGER_FILES: Final[Mapping[str, str]] = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-bundle.js.map": "application/json",
    "swagger-ui.css.map": "application/json",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
#: `/docs/static/{name}`: our own, from `static/` of this package.
OWN_FILES: Final[Mapping[str, str]] = {"docs.js": "text/javascript"}
DOCS_PAGE: Final = "docs.html"

# ---------------------------------------------------------------------- the schemas
_RESPONSE_MODELS: Final[tuple[type[BaseModel], ...]] = (
    AssessResponse,
    r.InvalidRequest,
    r.TooLarge,
    r.ErrorOut,
    r.NotFound,
    r.Health,
    r.Readiness,
    r.PositionRow,
    r.PositionsPage,
    r.ConfigView,
    r.ExposureView,
    r.BookView,
    BookRecord,
)


def _schemas() -> tuple[dict[str, str], dict[str, Any]]:
    """(model name -> its $ref, components.schemas) for the request and answer models."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(AssessRequest, "validation")]
    pairs += [(m, "serialization") for m in _RESPONSE_MODELS]
    refs, top = models_json_schema(pairs, ref_template=REF_TEMPLATE)
    names = {m.__name__: refs[(m, mode)]["$ref"] for m, mode in pairs}
    return names, dict(top.get("$defs", {}))


def _content(ref: str | None, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": ref} if ref else {}}
    if example is not None:
        media["example"] = example
    return {JSON: media}


def _json(obj: Any) -> Any:
    """`obj` as it travels (JSON types only)."""
    return orjson.loads(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS))


def _worked_engine() -> Engine:
    """An engine holding the worked case: position `p-btc-1` and a tick of its market."""
    p, m = WORKED_EXAMPLE["position"], WORKED_EXAMPLE["market"]
    tick = MarketTick(asset=p["asset"], ts=EXAMPLE_TS_MS, **{k: float(v) for k, v in m.items()})
    msg = PositionMessage(
        position_id="p-btc-1",
        asset=p["asset"],
        size=float(p["size"]),
        entry_price=float(p["entry_price"]),
        ts=EXAMPLE_TS_MS,
        age_minutes=float(p["age_minutes"]),
    )
    engine = Engine()
    engine.step(
        [
            TickEvent(tick, Lineage("market-ticks", 0, 41, EXAMPLE_TS_MS)),
            PositionEvent("p-btc-1", msg, 0, Lineage("positions", 0, 7, EXAMPLE_TS_MS)),
        ],
        EXAMPLE_TS_MS,
    )
    return engine


def _examples(max_body_bytes: int) -> dict[str, Any]:
    """The worked case assessed by the core (alone, and as an engine holds it), and real
    error bodies."""
    _, ok = assess_body(orjson.dumps(WORKED_EXAMPLE), EXAMPLE_TS_MS)
    try:
        parse_request(orjson.dumps(INVALID_EXAMPLE))
    except InvalidInput as exc:
        invalid = exc.body()
    else:  # pragma: no cover - the example is invalid by construction
        raise AssertionError("INVALID_EXAMPLE validated")
    engine = _worked_engine()
    row = engine.position("p-btc-1")
    view = engine.book_exposure()
    page = {
        "positions": [row],
        "mode": "engine",
        "count": 1,
        "next_cursor": None,
        "partial": False,
        "scanned": 1,
        "limit": 100,
        "filter": {"asset": "btc", "action": None, "min_score": None, "max_score": None},
        "total": 1,
        "exposure": exposure_from_view(view),
    }
    return {
        "assess_ok": _json(ok),
        "assess_invalid": invalid,
        "too_large": too_large(max_body_bytes),
        "row": _json(row),
        "page": _json(page),
        "exposure": _json({"mode": "engine", **view, "scope": "instance"}),
        "config": _json({"mode": "engine", **engine.config_view()}),
    }


# ---------------------------------------------------------------------- the operations
def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _p(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
        "example": example,
    }


_POSITIONS_PARAMS: Final = [
    _q("asset", {"type": "string", "maxLength": 64}, "Only this asset (case-insensitive)."),
    _q("action", {"type": "string", "enum": list(ACTIONS)}, "Only positions advised this."),
    _q("min_score", {"type": "number"}, "Risk score at least this (0..100)."),
    _q("max_score", {"type": "number"}, "Risk score at most this (0..100)."),
    _q(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
        "Rows in the page.",
    ),
    _q("cursor", {"type": "string"}, "The previous page's `next_cursor`, as it is."),
]

#: Operations answered with something else than JSON: media type and what it is.
_OTHER_MEDIA: Final[Mapping[tuple[str, str], tuple[str, str]]] = {
    ("GET", "/"): ("text/html", "The risk dashboard page."),
    ("GET", "/static/{name}"): ("application/octet-stream", "A file of the dashboard page."),
    ("GET", "/events"): ("text/event-stream", "Server-Sent Events: snapshot, update, action."),
    ("GET", "/metrics"): ("text/plain", "Prometheus metrics (text exposition format 0.0.4)."),
    ("GET", "/docs"): ("text/html", "This API's interactive documentation (Swagger UI)."),
    ("GET", "/docs/static/{name}"): ("application/octet-stream", "A file of the docs page."),
}

_OPEN: Final[list[dict[str, list[str]]]] = []  # no auth, whatever the sidecar's setting


def _operations(ex: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    """What each route is: summary, parameters, body, answers (status -> (description,
    model name or None, example))."""
    err = "ErrorOut"
    invalid = "InvalidRequest"
    return {
        ("POST", "/assess"): {
            "tag": "assess",
            "summary": "Assess one position (stateless)",
            "description": "The reference REST API's operation: the position and its market "
            "in, the advice out. `config` may override any model constant for this request. "
            "The example is the README's worked BTC case: HEDGE_PARTIAL, risk score 48.82.",
            "body": ("AssessRequest", dict(WORKED_EXAMPLE)),
            "responses": {
                200: ("The assessment.", "AssessResponse", ex["assess_ok"]),
                413: ("The body is over the limit.", "TooLarge", ex["too_large"]),
                422: ("Bad fields, each named.", invalid, ex["assess_invalid"]),
            },
        },
        ("GET", "/healthz"): {
            "tag": "probes",
            "summary": "Liveness",
            "security": _OPEN,
            "responses": {200: ("The process answers.", "Health", {"status": "ok"})},
        },
        ("GET", "/readyz"): {
            "tag": "probes",
            "summary": "Readiness",
            "description": "503 while a partition rebuilds or the broker is unreachable, "
            "with the reasons.",
            "security": _OPEN,
            "responses": {
                200: ("Ready.", "Readiness", {"ready": True, "mode": "engine", "reasons": []}),
                503: (
                    "Not ready, and why.",
                    "Readiness",
                    {
                        "ready": False,
                        "mode": "engine",
                        "reasons": ["positions partition 3 still rebuilding"],
                    },
                ),
            },
        },
        ("GET", "/metrics"): {"tag": "probes", "summary": "Prometheus metrics"},
        ("GET", "/positions"): {
            "tag": "book",
            "summary": "A page of the positions table, with their latest actions",
            "description": "Rows in position-id order. Follow `next_cursor` until it is null; "
            "a sparse filter may answer a `partial` page (fewer rows than `limit`, even none) "
            "with a cursor to go on from. `exposure`: the assets of the page.",
            "params": _POSITIONS_PARAMS,
            "responses": {
                200: ("A page (`?asset=btc`).", "PositionsPage", ex["page"]),
                422: ("Bad query parameters, each named.", invalid, None),
            },
        },
        ("GET", "/positions/{position_id}"): {
            "tag": "book",
            "summary": "One position and its latest action",
            "params": [_p("position_id", "The position's id (its positions key).", "p-btc-1")],
            "description": "The example: the worked BTC case as the engine holds it.",
            "responses": {
                200: ("The position.", "PositionRow", ex["row"]),
                404: ("Not in this instance's table, and why.", err, None),
            },
        },
        ("GET", "/config"): {
            "tag": "config",
            "summary": "The risk config in force per scope, and its history",
            "responses": {200: ("The config.", "ConfigView", ex["config"])},
        },
        ("GET", "/exposure"): {
            "tag": "book",
            "summary": "Net exposure per asset and of the book; limits and breaches",
            "responses": {200: ("The exposure.", "ExposureView", ex["exposure"])},
        },
        ("GET", "/book"): {
            "tag": "book",
            "summary": "The whole book's net position per asset (risk-book records)",
            "responses": {
                200: ("Every asset's record.", "BookView", None),
                409: ("The book stage is off, and how to turn it on.", err, None),
            },
        },
        ("GET", "/book/{asset}"): {
            "tag": "book",
            "summary": "One asset's risk-book record",
            "params": [_p("asset", "The asset (case-insensitive).", "BTC")],
            "responses": {
                200: ("The record.", "BookRecord", None),
                404: ("No record of this asset.", err, None),
                409: ("The book stage is off, and how to turn it on.", err, None),
            },
        },
        ("GET", "/"): {"tag": "pages", "summary": "The risk dashboard"},
        ("GET", "/static/{name}"): {
            "tag": "pages",
            "summary": "The dashboard's script, style sheet and icon",
            "params": [_p("name", "The file's name.", "dashboard.js")],
            "responses_extra": {404: ("No such file.", err, None)},
        },
        ("GET", "/events"): {"tag": "pages", "summary": "The dashboard's live updates (SSE)"},
        ("GET", "/openapi.json"): {
            "tag": "docs",
            "summary": "This document (OpenAPI 3.1)",
            "security": _OPEN,
            "responses": {200: ("The document.", None, None)},
        },
        ("GET", "/docs"): {"tag": "docs", "summary": "Interactive API docs", "security": _OPEN},
        ("GET", "/docs/static/{name}"): {
            "tag": "docs",
            "summary": "The docs page's files (Swagger UI)",
            "security": _OPEN,
            "params": [_p("name", "The file's name.", "swagger-ui.css")],
            "responses_extra": {404: ("No such file.", err, None)},
        },
    }


def _operation(
    method: str, path: str, spec: Mapping[str, Any] | None, refs: Mapping[str, str]
) -> dict[str, Any]:
    op_id = (method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", path)).rstrip("_")
    if spec is None:  # a route nobody described: listed all the same (a test fails on it)
        params = [_p(n, n, n) for n in re.findall(r"{(\w+)}", path)]
        op: dict[str, Any] = {"operationId": op_id, "summary": UNDESCRIBED, "tags": ["other"]}
        if params:
            op["parameters"] = params
        op["responses"] = {"200": {"description": UNDESCRIBED}}
        return op
    op = {"operationId": op_id, "summary": spec["summary"], "tags": [spec["tag"]]}
    if "description" in spec:
        op["description"] = spec["description"]
    if "params" in spec:
        op["parameters"] = spec["params"]
    if "security" in spec:
        op["security"] = spec["security"]
    if "body" in spec:
        name, example = spec["body"]
        op["requestBody"] = {"required": True, "content": _content(refs[name], example)}
    answers: dict[str, Any] = {}
    other = _OTHER_MEDIA.get((method, path))
    if "responses" in spec:
        for status, (text, model, example) in spec["responses"].items():
            ref = refs[model] if model else None
            answers[str(status)] = {"description": text, "content": _content(ref, example)}
    elif other is not None:
        media, text = other
        answers["200"] = {"description": text, "content": {media: {"schema": {}}}}
    for status, (text, model, example) in spec.get("responses_extra", {}).items():
        answers[str(status)] = {"description": text, "content": _content(refs[model], example)}
    op["responses"] = answers or {"200": {"description": "OK"}}
    return op


def openapi_document(
    routes: Iterable[tuple[str, str]], *, max_body_bytes: int = 65536
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these (method, path) routes."""
    refs, schemas = _schemas()
    specs = _operations(_examples(max_body_bytes))
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(set(routes), key=lambda mp: (mp[1], mp[0])):
        paths.setdefault(path, {})[method.lower()] = _operation(
            method, path, specs.get((method, path)), refs
        )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "stream-risk sidecar",
            "version": __version__,
            "description": "The HTTP side of stream-risk: the stateless `/assess` of the "
            "reference REST API, the engine's positions table, exposure, risk config and "
            "whole-book records, probes and metrics. Data endpoints may require a bearer "
            "token when the operator set one (`Authorization: Bearer <token>`); `/healthz` "
            "and `/readyz` are always open.",
        },
        "tags": [
            {"name": "assess", "description": "The reference REST API's operation."},
            {"name": "book", "description": "What the engine holds and advises."},
            {"name": "config", "description": "The risk config (topic risk-config)."},
            {"name": "probes", "description": "Liveness, readiness, metrics."},
            {"name": "pages", "description": "The dashboard."},
            {"name": "docs", "description": "This document and its page."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Only when the operator configured a token.",
                }
            },
        },
        # Optional: either no auth (the default) or the bearer token.
        "security": [{}, {"bearerAuth": []}],
    }


def served_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route of `app` but HEAD (GET's twin) and the `*` ones (the
    405s and the catch-all 404)."""
    out = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        out.append((route.method, route.resource.canonical))
    return out


# ---------------------------------------------------------------------- the files
def _swagger_dir() -> Path:
    """Swagger UI's dist folder in the swagger-ui-bundle-v2 package."""
    module: Any = importlib.import_module("swagger_ui_bundle")
    return Path(module.swagger_ui_path)


@functools.cache
def docs_file(name: str) -> bytes | None:
    """A file `/docs/static/{name}` serves (read once), None when it is not one of them."""
    if name in OWN_FILES:
        return (resources.files("stream_risk.sidecar") / "static" / name).read_bytes()
    if name in SWAGGER_FILES:
        path = _swagger_dir() / name
        return path.read_bytes() if path.is_file() else None
    return None


def add_openapi(
    app: web.Application, metrics: Metrics | None = None, *, max_body_bytes: int = 65536
) -> None:
    """Add `/openapi.json`, `/docs` and `/docs/static/{name}` to `app` (before any
    catch-all route)."""
    page = (resources.files("stream_risk.sidecar") / "static" / DOCS_PAGE).read_bytes()
    document: list[bytes] = []  # made on the first request, when the router is complete

    def observe(path: str, request: web.Request, status: int, t0: float) -> None:
        if metrics is not None:
            metrics.observe_http(path, request.method, status, time.perf_counter() - t0)

    async def openapi_json(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        if not document:
            doc = openapi_document(served_routes(request.app), max_body_bytes=max_body_bytes)
            document.append(orjson.dumps(doc))
        resp = web.Response(body=document[0], content_type=JSON)
        observe("/openapi.json", request, 200, t0)
        return resp

    async def docs(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        resp = web.Response(body=page, content_type="text/html", charset="utf-8")
        observe("/docs", request, 200, t0)
        return resp

    async def static(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        name = request.match_info["name"]
        body = docs_file(name)
        if body is None:
            observe("/docs/static", request, 404, t0)
            known = ", ".join(sorted({*OWN_FILES, *SWAGGER_FILES}))
            return web.json_response(
                {"error": "not found", "detail": f"no docs file {name!r}; there are {known}"},
                status=404,
            )
        ctype = OWN_FILES.get(name) or SWAGGER_FILES[name]
        resp = web.Response(
            body=body,
            content_type=ctype,
            charset="utf-8" if ctype.startswith("text/") else None,
            headers={"Cache-Control": "public, max-age=3600"},
        )
        observe("/docs/static", request, 200, t0)
        return resp

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
    app.router.add_get("/docs/static/{name}", static)


__all__ = [
    "OPENAPI_VERSION",
    "WORKED_EXAMPLE",
    "add_openapi",
    "docs_file",
    "openapi_document",
    "served_routes",
]
