"""The aiohttp sidecar (DESIGN §5): `/assess`, `/healthz`, `/readyz`, `/metrics`, `/positions`,
and the dashboard (`/`, `/static/...`, `/events`: `stream_risk.sidecar.dashboard`).

    create_app(state=None, registry=None, *, metrics=None, max_body_bytes=65536)

Every answer is JSON (but `/metrics`, Prometheus text), errors included: 404 for an unknown
path, 405 for a wrong method, 413 for a body over the limit, 422 naming each bad field, and
a 500 only for a bug, which is logged with its traceback (tests assert it never happens).

It is built for throughput (benchmarked against FastAPI + uvicorn): no middleware, metrics
recorded inline with pre-bound label children, the body read raw and parsed by orjson
whatever its content type, and the response serialised by orjson.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stream_risk.api import InvalidInput, assess_body
from stream_risk.metrics import EngineView, Metrics
from stream_risk.sidecar.dashboard import add_dashboard
from stream_risk.sidecar.exposure import book_exposure, exposure_of
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
    "GET /positions[?asset=BTC]",
    "GET /config",
    "GET /exposure",
)

_JSON: Final = "application/json"
_HEALTHZ_BODY: Final = orjson.dumps({"status": "ok"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_kind(exc: InvalidInput) -> str:
    """`malformed` when the body as a whole is unusable, else `validation`."""
    return "malformed" if any(e["field"] == "body" for e in exc.errors) else "validation"


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=_JSON, headers=headers)


def _too_large(limit: int) -> dict[str, Any]:
    return {
        "error": "request body too large",
        "limit_bytes": limit,
        "detail": [
            {
                "field": "body",
                "message": f"request body exceeds the {limit}-byte limit: send one position "
                "per request",
                "type": "too_large",
            }
        ],
    }


_INTERNAL: Final = orjson.dumps(
    {"error": "internal error", "detail": "an unexpected error was logged; please report it"}
)


# ---------------------------------------------------------------------- the app
def create_app(
    state: SidecarState | None = None,
    registry: CollectorRegistry | None = None,
    *,
    metrics: Metrics | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> web.Application:
    """The sidecar application.

    state: readiness and `/positions` (default `StatelessState`: serve-only, always ready).
    registry: where the metrics live (default: a new one, never the global default).
        The process's `Metrics` is `Metrics.for_registry(registry)`, so an engine sharing
        the registry shares the metrics objects. `metrics` may be passed instead.
    max_body_bytes: `POST /assess` bodies above it get 413.
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
    too_large_body = orjson.dumps(_too_large(limit))

    async def assess_handler(request: web.Request) -> web.Response:
        t0 = perf()
        try:
            declared = request.content_length
            if declared is not None and declared > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
            a, out = assess_body(await request.read(), now_ns() // 1_000_000)
            resp = web.Response(body=orjson.dumps(out), content_type=_JSON)
            m.http_assessments.inc()
            m.action(a.action)
        except InvalidInput as exc:
            resp = web.Response(status=422, body=orjson.dumps(exc.body()), content_type=_JSON)
            m.http_error("/assess", _error_kind(exc))
        except web.HTTPRequestEntityTooLarge:
            resp = web.Response(status=413, body=too_large_body, content_type=_JSON)
            m.http_error("/assess", "too_large")
        except Exception:
            log.exception("POST /assess failed")
            resp = web.Response(status=500, body=_INTERNAL, content_type=_JSON)
            m.http_error("/assess", "internal")
        m.observe_http("/assess", "POST", resp.status, perf() - t0)
        return resp

    async def healthz(request: web.Request) -> web.Response:
        t0 = perf()
        resp = web.Response(body=_HEALTHZ_BODY, content_type=_JSON)
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
        resp = _json(status, {"ready": ready, "mode": state.mode, "reasons": list(reasons)})
        m.observe_http("/readyz", request.method, status, perf() - t0)
        return resp

    async def metrics_handler(request: web.Request) -> web.Response:
        t0 = perf()
        resp = web.Response(body=m.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
        m.observe_http("/metrics", request.method, 200, perf() - t0)
        return resp

    async def positions(request: web.Request) -> web.Response:
        t0 = perf()
        asset = request.query.get("asset") or None
        try:
            rows = state.positions(asset)
            exposure = exposure_of(state, rows, asset)
            resp = web.Response(
                body=orjson.dumps(
                    {
                        "mode": state.mode,
                        "count": len(rows),
                        "positions": rows,
                        "exposure": exposure,
                    },
                    option=orjson.OPT_NON_STR_KEYS,
                ),
                content_type=_JSON,
            )
        except Exception:
            log.exception("GET /positions failed")
            resp = web.Response(status=500, body=_INTERNAL, content_type=_JSON)
            m.http_error("/positions", "internal")
        m.observe_http("/positions", request.method, resp.status, perf() - t0)
        return resp

    async def config_handler(request: web.Request) -> web.Response:
        t0 = perf()
        try:
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
            resp = _json(200, view)
        except Exception:
            log.exception("GET /config failed")
            resp = web.Response(status=500, body=_INTERNAL, content_type=_JSON)
            m.http_error("/config", "internal")
        m.observe_http("/config", request.method, resp.status, perf() - t0)
        return resp

    async def exposure_handler(request: web.Request) -> web.Response:
        t0 = perf()
        try:
            view = state.exposure_view()
            if view is None:
                view = book_exposure(exposure_of(state, state.positions(None), None))
            resp = web.Response(
                body=orjson.dumps({"mode": state.mode, **view}, option=orjson.OPT_NON_STR_KEYS),
                content_type=_JSON,
            )
        except Exception:
            log.exception("GET /exposure failed")
            resp = web.Response(status=500, body=_INTERNAL, content_type=_JSON)
            m.http_error("/exposure", "internal")
        m.observe_http("/exposure", request.method, resp.status, perf() - t0)
        return resp

    def wrong_method(path: str, allowed: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            m.http_error(path, "method_not_allowed")
            m.observe_http(path, request.method, 405, 0.0)
            return _json(
                405,
                {"error": "method not allowed", "detail": f"use {allowed} {path}"},
                headers={"Allow": allowed},
            )

        return handler

    async def not_found(request: web.Request) -> web.Response:
        # The label is "other", never the raw path: a scanner must not blow up cardinality.
        m.http_error("other", "not_found")
        m.observe_http("other", request.method, 404, 0.0)
        return _json(
            404,
            {"error": "not found", "detail": f"no route {request.path}", "endpoints": ENDPOINTS},
        )

    app = web.Application(client_max_size=limit)
    app[STATE_KEY] = state
    app[METRICS_KEY] = m
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/assess", assess_handler),
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", readyz),
        ("GET", "/metrics", metrics_handler),
        ("GET", "/positions", positions),
        ("GET", "/config", config_handler),
        ("GET", "/exposure", exposure_handler),
    ]
    for method, path, handler in routes:
        if method == "GET":
            app.router.add_get(path, handler)  # answers HEAD too
        else:
            app.router.add_route(method, path, handler)
        app.router.add_route("*", path, wrong_method(path, method))
    add_dashboard(app, state, m)  # `/`, `/static/{name}`, `/events`: before the catch-all
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
