"""The aiohttp sidecar (DESIGN §5): `/assess`, `/healthz`, `/readyz`, `/metrics`, `/positions`,
`/positions/{id}`, `/config`, `/exposure`, `/book`, `/book/{asset}` (the whole book's
`risk-book` records, docs/design.md D17), and the dashboard (`/`, `/static/...`, `/events`:
`stream_risk.sidecar.dashboard`); `/openapi.json` and `/docs`, this API documented
(`stream_risk.sidecar.openapi`, D21).

    create_app(state=None, registry=None, *, metrics=None, max_body_bytes=65536, auth=None)

Every answer is JSON (but `/metrics`, Prometheus text), errors included: 404 for an unknown
path, 405 for a wrong method, 413 for a body over the limit, 422 naming each bad field, and
a 500 only for a bug, which is logged with its traceback (tests assert it never happens).

It is built for throughput (benchmarked against FastAPI + uvicorn): no middleware, metrics
recorded inline with pre-bound label children, the body read raw and parsed by orjson
whatever its content type, and the response serialised by orjson.

`GET /positions`, a page read in chunks: `stream_risk.sidecar.positions`. The error answers
and `observed`, which times each handler, maps its errors to them and counts them:
`stream_risk.sidecar.errors`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stream_risk.api import InvalidInput, assess_body
from stream_risk.metrics import EngineView, Metrics
from stream_risk.sidecar.auth import HttpAuth, add_auth
from stream_risk.sidecar.dashboard import add_dashboard
from stream_risk.sidecar.errors import (
    JSON,
    Handler,
    Rejected,
    error_kind,
    json_response,
    method_not_allowed,
    not_found,
    observed,
    too_large,
)
from stream_risk.sidecar.exposure import book_exposure, exposure_of
from stream_risk.sidecar.openapi import add_openapi
from stream_risk.sidecar.positions import positions_handler
from stream_risk.state import SidecarState, StatelessState

log = logging.getLogger("stream_risk.sidecar")

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024

STATE_KEY: Final = web.AppKey("stream_risk_state", SidecarState)
METRICS_KEY: Final = web.AppKey("stream_risk_metrics", Metrics)

ENDPOINTS: Final = (
    "GET / (dashboard)",
    "GET /events (dashboard updates, SSE)",
    "POST /assess",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /positions[?asset=&action=&min_score=&max_score=&limit=&cursor=]",
    "GET /positions/{position_id}",
    "GET /config",
    "GET /exposure",
    "GET /book",
    "GET /book/{asset}",
    "GET /openapi.json (this API, OpenAPI 3.1)",
    "GET /docs (interactive API docs)",
)

#: What `/book` answers when the book stage is off (docs/design.md D17, operations.md).
BOOK_STAGE_OFF: Final = (
    "the book stage is off: this instance shows only its own positions (GET /exposure "
    'says "scope": "instance"). Turn it on by creating the topics risk-book-partials '
    "and risk-book (e.g. `stream-risk topics create`, or `stream-risk run "
    "--create-topics`) and restarting the engines"
)

_HEALTHZ_BODY: Final = orjson.dumps({"status": "ok"})


# ---------------------------------------------------------------------- the app
def create_app(
    state: SidecarState | None = None,
    registry: CollectorRegistry | None = None,
    *,
    metrics: Metrics | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    auth: HttpAuth | None = None,
) -> web.Application:
    """The sidecar application.

    state: readiness and `/positions` (default `StatelessState`: serve-only, always ready).
    registry: where the metrics live (default: a new one, never the global default).
        The process's `Metrics` is `Metrics.for_registry(registry)`, so an engine sharing
        the registry shares the metrics objects. `metrics` may be passed instead.
    max_body_bytes: `POST /assess` bodies above it get 413.
    auth: a bearer token protecting all but `/healthz`, `/readyz` (and `/metrics`, unless
        configured): `stream_risk.sidecar.auth`, docs/design.md D22. None: no auth.
    """
    if state is None:
        state = StatelessState()
    if metrics is None:
        metrics = Metrics.for_registry(registry if registry is not None else CollectorRegistry())
    elif registry is not None and metrics.registry is not registry:
        raise ValueError("metrics belongs to another registry than the one given")
    m = metrics
    if not m.state.bound:
        # No engine beside it (`serve`): /metrics still says whether it is ready.
        m.state.bind(lambda: EngineView(ready=state.is_ready()[0]))
    limit = max_body_bytes
    perf = time.perf_counter
    now_ns = time.time_ns
    too_large_body = orjson.dumps(too_large(limit))

    async def assess(request: web.Request) -> web.Response:
        try:
            declared = request.content_length
            if declared is not None and declared > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
            a, out = assess_body(await request.read(), now_ns() // 1_000_000)
        except InvalidInput as exc:
            raise Rejected.invalid(exc, error_kind(exc)) from exc
        except web.HTTPRequestEntityTooLarge as exc:
            raise Rejected(413, too_large_body, "too_large") from exc
        resp = web.Response(body=orjson.dumps(out), content_type=JSON)
        m.http_assessments.inc()
        m.action(a.action)
        return resp

    async def healthz(request: web.Request) -> web.Response:
        t0 = perf()
        resp = web.Response(body=_HEALTHZ_BODY, content_type=JSON)
        m.observe_http("/healthz", request.method, 200, perf() - t0)
        return resp

    async def readyz(request: web.Request) -> web.Response:
        t0 = perf()
        try:
            ready, reasons = state.is_ready()
        except Exception as exc:
            log.exception("readiness check failed")
            ready, reasons = False, [f"readiness check failed: {type(exc).__name__}: {exc}"]
        status = 200 if ready else 503
        resp = json_response(status, {"ready": ready, "mode": state.mode, "reasons": list(reasons)})
        m.observe_http("/readyz", request.method, status, perf() - t0)
        return resp

    async def metrics_handler(request: web.Request) -> web.Response:
        t0 = perf()
        resp = web.Response(body=m.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
        m.observe_http("/metrics", request.method, 200, perf() - t0)
        return resp

    async def position(request: web.Request) -> web.Response:
        pid = request.match_info["position_id"]
        row = state.position(pid)
        if row is not None:
            return web.Response(
                body=orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS), content_type=JSON
            )
        if state.mode == "stateless":
            why = "this is a stateless sidecar (stream-risk serve): it has no table"
        else:
            why = (
                "not in this instance's table: closed, not consumed yet, or held by "
                "another instance of the consumer group (each holds its positions "
                "partitions); list what is here with GET /positions"
            )
        body = {"error": "position not found", "position_id": pid, "detail": why}
        raise Rejected(404, orjson.dumps(body), "not_found")

    async def config(request: web.Request) -> web.Response:
        view = state.risk_config()
        if view is None:
            from stream_risk.config import DEFAULT_CONFIG

            view = {
                "mode": state.mode,
                "defaults": DEFAULT_CONFIG.model_dump(),
                "scopes": {},
                "history": [],
            }
        else:
            view = {"mode": state.mode, **view}
        return json_response(200, view)

    async def exposure(request: web.Request) -> web.Response:
        # The state's own sums (the engine's `book_exposure`: O(assets), no row made; the
        # whole book's when the book stage runs, `scope` says which); only a state
        # without them (a test double, `serve`) is summed from its rows.
        view = state.exposure_view()
        if view is None:
            view = book_exposure(exposure_of(state, state.positions(None), None))
            view["scope"] = "instance"
        return web.Response(
            body=orjson.dumps({"mode": state.mode, **view}, option=orjson.OPT_NON_STR_KEYS),
            content_type=JSON,
        )

    def book_records() -> dict[str, dict[str, Any]]:
        records = state.book_records()
        if records is None:
            detail = BOOK_STAGE_OFF
            if state.mode == "stateless":
                detail = "this is a stateless sidecar (stream-risk serve): it has no book"
            body = {"error": "book stage off", "mode": state.mode, "detail": detail}
            raise Rejected(409, orjson.dumps(body), "book_stage_off")
        return records

    async def book(request: web.Request) -> web.Response:
        out = {"scope": "book", "assets": book_records()}
        return web.Response(
            body=orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS), content_type=JSON
        )

    async def book_asset(request: web.Request) -> web.Response:
        asset = request.match_info["asset"]
        records = book_records()
        record = records.get(asset)
        if record is None:  # case-insensitive, as `GET /positions?asset=`
            folded = asset.casefold()
            same = sorted(name for name in records if name.casefold() == folded)
            record = records[same[0]] if same else None
        if record is None:
            body = {
                "error": "asset not in the book",
                "asset": asset,
                "detail": f"no risk-book record for {asset!r}: the book holds no position "
                "of it (or none reached the book stage yet); the assets it holds are "
                "listed by GET /book",
            }
            raise Rejected(404, orjson.dumps(body), "not_found")
        return web.Response(
            body=orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS), content_type=JSON
        )

    app = web.Application(client_max_size=limit)
    app[STATE_KEY] = state
    app[METRICS_KEY] = m

    def answered(method: str, path: str, respond: Handler) -> tuple[str, str, Handler]:
        return method, path, observed(m, method, path, respond)

    routes: list[tuple[str, str, Handler]] = [
        answered("POST", "/assess", assess),
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", readyz),
        ("GET", "/metrics", metrics_handler),
        ("GET", "/positions", positions_handler(state, m)),
        answered("GET", "/positions/{position_id}", position),
        answered("GET", "/config", config),
        answered("GET", "/exposure", exposure),
        answered("GET", "/book", book),
        answered("GET", "/book/{asset}", book_asset),
    ]
    for method, path, handler in routes:
        if method == "GET":
            app.router.add_get(path, handler)  # answers HEAD too
        else:
            app.router.add_route(method, path, handler)
        app.router.add_route("*", path, method_not_allowed(m, path, method))
    add_dashboard(app, state, m)  # `/`, `/static/{name}`, `/events`: before the catch-all
    add_openapi(app, m, max_body_bytes=limit)  # `/openapi.json`, `/docs`, `/docs/static/...`

    if auth is not None:  # a middleware over every route, and `/login`, `/logout` (D22)
        add_auth(app, auth, m)
    app.router.add_route("*", "/{tail:.*}", not_found(m, ENDPOINTS))
    return app
