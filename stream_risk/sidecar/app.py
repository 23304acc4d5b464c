"""The aiohttp sidecar (DESIGN §5): `/assess`, `/healthz`, `/readyz`, `/metrics`, `/positions`,
`/positions/{id}`, `/config`, `/exposure`, and the dashboard (`/`, `/static/...`, `/events`:
`stream_risk.sidecar.dashboard`).

    create_app(state=None, registry=None, *, metrics=None, max_body_bytes=65536)

Every answer is JSON (but `/metrics`, Prometheus text), errors included: 404 for an unknown
path, 405 for a wrong method, 413 for a body over the limit, 422 naming each bad field, and
a 500 only for a bug, which is logged with its traceback (tests assert it never happens).

It is built for throughput (benchmarked against FastAPI + uvicorn): no middleware, metrics
recorded inline with pre-bound label children, the body read raw and parsed by orjson
whatever its content type, and the response serialised by orjson.

`GET /positions` is a page (docs/design.md D14): `asset` (case-insensitive), `action`,
`min_score`, `max_score`, `limit` (default 100, at most 1000) and `cursor` (the previous
page's `next_cursor`); rows in position-id order. No read holds the event loop for more than
a few milliseconds, whatever the table's size: the page is read from the state in chunks
(at most `CHUNK_ROWS` rows and `CHUNK_SCAN` candidates each, the loop free in between) and
a request examines at most `SCAN_BUDGET` candidates: a sparse filter answers a partial page
(`partial: true`, fewer rows than `limit`, possibly none) with a `next_cursor` to go on
from, like a DynamoDB scan page. The end is `next_cursor: null`, never an empty page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stream_risk.api import InvalidInput, assess_body
from stream_risk.engine.views import MAX_LIMIT, PositionQuery
from stream_risk.metrics import EngineView, Metrics
from stream_risk.rules import ACTIONS
from stream_risk.sidecar.dashboard import add_dashboard
from stream_risk.sidecar.exposure import (
    Exposure,
    book_exposure,
    exposure_from_view,
    exposure_of,
    state_exposure,
)
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

#: `GET /positions`: rows a page has unless `limit` says otherwise.
DEFAULT_LIMIT: Final = 100
#: Candidates one request examines at most (a sparse filter ends its page early).
SCAN_BUDGET: Final = 20_000
#: Rows and candidates read from the state in one go, between which the loop is free.
CHUNK_ROWS: Final = 50
CHUNK_SCAN: Final = 1_000
POSITIONS_PARAMS: Final = ("asset", "action", "min_score", "max_score", "limit", "cursor")


def encode_cursor(after: str) -> str:
    """An opaque cursor: the position id the next page starts after."""
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The position id in a cursor; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = orjson.loads(raw)["after"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(after, str):
        raise ValueError("not a cursor")
    return after


def _bad(field: str, message: str, kind: str = "value_error") -> dict[str, Any]:
    return {"field": field, "message": message, "type": kind}


def parse_positions_query(params: Mapping[str, str]) -> tuple[PositionQuery, int]:
    """`GET /positions`'s query string: the first chunk's `PositionQuery` and the page's
    limit. Raises InvalidInput naming every bad parameter."""
    errors = []
    for name in params:
        if name not in POSITIONS_PARAMS:
            errors.append(
                _bad(
                    name,
                    f"unknown parameter; /positions takes {', '.join(POSITIONS_PARAMS)}",
                    "unknown",
                )
            )
    asset = (params.get("asset") or "").strip() or None
    if asset is not None and len(asset) > 64:
        errors.append(_bad("asset", "an asset name is at most 64 characters"))
    action = (params.get("action") or "").strip().upper() or None
    if action is not None and action not in ACTIONS:
        errors.append(_bad("action", f"unknown action; one of {', '.join(ACTIONS)}"))
    scores: dict[str, float | None] = {}
    for name in ("min_score", "max_score"):
        raw = params.get(name)
        scores[name] = None
        if raw is None or raw == "":
            continue
        try:
            v = float(raw)
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            errors.append(_bad(name, f"a number of points, 0 to 100 (got {raw!r})", "number"))
        else:
            scores[name] = v
    lo, hi = scores["min_score"], scores["max_score"]
    if lo is not None and hi is not None and lo > hi:
        errors.append(_bad("min_score", f"min_score {lo:g} is above max_score {hi:g}"))
    limit = DEFAULT_LIMIT
    raw_limit = params.get("limit")
    if raw_limit not in (None, ""):
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            errors.append(
                _bad("limit", f"an integer from 1 to {MAX_LIMIT} (got {raw_limit!r})", "range")
            )
    after = None
    cursor = params.get("cursor")
    if cursor:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            errors.append(
                _bad(
                    "cursor",
                    "not a cursor of this server: pass the previous page's next_cursor as "
                    "it is, or none for the first page",
                )
            )
    if errors:
        raise InvalidInput(errors)
    return PositionQuery(
        asset=asset,
        action=action,
        min_score=lo,
        max_score=hi,
        after=after,
        limit=min(limit, CHUNK_ROWS),
        budget=CHUNK_SCAN,
    ), limit


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

    async def positions(request: web.Request) -> web.StreamResponse:
        t0 = perf()
        resp: web.StreamResponse | None = None
        try:
            q, limit = parse_positions_query(request.query)
            if request.method == "HEAD":  # no body to stream (it would corrupt the reply)
                resp = web.Response(content_type=_JSON)
                m.observe_http("/positions", request.method, 200, perf() - t0)
                return resp
            # The exposure of the page's assets (and the filter's), made chunk by chunk
            # beside the rows: bounded by the page, not the book. None: the state has no
            # per-asset sums (then from its whole view, once, at the end).
            exposure: Exposure | None = {}
            n = scanned = 0
            after = q.after
            while True:
                page = state.positions_page(q)
                if resp is None:
                    # Streamed chunk by chunk (the socket takes each as it is made): the
                    # status is sent once the first chunk was read without error.
                    resp = web.StreamResponse(headers={"Content-Type": _JSON})
                    await resp.prepare(request)
                    await resp.write(b'{"positions":[')
                if page.rows:
                    data = orjson.dumps(page.rows, option=orjson.OPT_NON_STR_KEYS)[1:-1]
                    await resp.write(b"," + data if n else data)
                    if exposure is not None:
                        new = {str(r.get("asset")) for r in page.rows} - exposure.keys()
                        some = state.asset_exposure(new) if new else {}
                        if some is None:
                            exposure = None
                        else:
                            exposure.update(exposure_from_view({"assets": some}))
                n += len(page.rows)
                scanned += page.scanned
                after = page.next_after
                left = SCAN_BUDGET - scanned
                if after is None or n >= limit or left <= 0:
                    break
                q = replace(
                    q, after=after, limit=min(CHUNK_ROWS, limit - n), budget=min(CHUNK_SCAN, left)
                )
                await asyncio.sleep(0)  # the loop is free between chunks
            await asyncio.sleep(0)  # and before the end of the body
            if q.asset is not None:  # the filter's asset even on an empty page
                spellings = {q.asset, q.asset.upper(), q.asset.lower()}
                exposure = state_exposure(state, q.asset, spellings | (exposure or {}).keys())
            elif exposure is None:
                exposure = state_exposure(state, None, None)
            meta = {
                "mode": state.mode,
                "count": n,
                "next_cursor": None if after is None else encode_cursor(after),
                "partial": after is not None and n < limit,
                "scanned": scanned,
                "limit": limit,
                "filter": {
                    "asset": q.asset,
                    "action": q.action,
                    "min_score": q.min_score,
                    "max_score": q.max_score,
                },
                "total": state.count(q.asset),
                "exposure": exposure,
            }
            await resp.write(b"]," + orjson.dumps(meta, option=orjson.OPT_NON_STR_KEYS)[1:])
            await resp.write_eof()
        except InvalidInput as exc:
            resp = web.Response(status=422, body=orjson.dumps(exc.body()), content_type=_JSON)
            m.http_error("/positions", "validation")
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away
        except Exception:
            log.exception("GET /positions failed")
            m.http_error("/positions", "internal")
            if resp is not None:  # part of the body is sent: cut it, the client sees it
                resp.force_close()
                raise
            resp = web.Response(status=500, body=_INTERNAL, content_type=_JSON)
        m.observe_http("/positions", request.method, resp.status, perf() - t0)
        return resp

    async def position(request: web.Request) -> web.Response:
        t0 = perf()
        pid = request.match_info["position_id"]
        try:
            row = state.position(pid)
            if row is not None:
                resp = web.Response(
                    body=orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS), content_type=_JSON
                )
            else:
                if state.mode == "stateless":
                    why = "this is a stateless sidecar (stream-risk serve): it has no table"
                else:
                    why = (
                        "not in this instance's table: closed, not consumed yet, or held by "
                        "another instance of the consumer group (each holds its positions "
                        "partitions); list what is here with GET /positions"
                    )
                resp = _json(
                    404,
                    {"error": "position not found", "position_id": pid, "detail": why},
                )
                m.http_error("/positions/{position_id}", "not_found")
        except Exception:
            log.exception("GET /positions/{position_id} failed")
            resp = web.Response(status=500, body=_INTERNAL, content_type=_JSON)
            m.http_error("/positions/{position_id}", "internal")
        m.observe_http("/positions/{position_id}", request.method, resp.status, perf() - t0)
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
            # The state's own sums (the engine's `book_exposure`: O(assets), no row made);
            # only a state without them (a test double, `serve`) is summed from its rows.
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
        ("GET", "/positions/{position_id}", position),
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
