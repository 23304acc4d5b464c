"""The sidecar's error answers, all JSON, and `observed`: a route's handler timed, its errors
mapped to those answers and counted (`stream_risk_http_errors_total{path, kind}`), the
request recorded (`stream_risk_http_request*{path, method, status}`).

    observed(metrics, "GET", "/config", respond)   # respond may raise Rejected: a 4xx
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from stream_risk.api import InvalidInput
from stream_risk.metrics import Metrics

log = logging.getLogger("stream_risk.sidecar")

JSON: Final = "application/json"
INTERNAL_BODY: Final = orjson.dumps(
    {"error": "internal error", "detail": "an unexpected error was logged; please report it"}
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=JSON, headers=headers)


def internal_error() -> web.Response:
    """500: a bug (logged by the caller with its traceback)."""
    return web.Response(status=500, body=INTERNAL_BODY, content_type=JSON)


def error_kind(exc: InvalidInput) -> str:
    """`malformed` when the body as a whole is unusable, else `validation`."""
    return "malformed" if any(e["field"] == "body" for e in exc.errors) else "validation"


def bad_field(field: str, message: str, kind: str = "value_error") -> dict[str, Any]:
    """One entry of a 422's `detail`."""
    return {"field": field, "message": message, "type": kind}


def too_large(limit: int) -> dict[str, Any]:
    """413's body."""
    return {
        "error": "request body too large",
        "limit_bytes": limit,
        "detail": [
            bad_field(
                "body",
                f"request body exceeds the {limit}-byte limit: send one position per request",
                "too_large",
            )
        ],
    }


class Rejected(Exception):
    """A request answered with a client error: its status and JSON body, and the `kind` its
    error is counted under."""

    def __init__(self, status: int, body: bytes, kind: str) -> None:
        super().__init__(kind)
        self.status, self.body, self.kind = status, body, kind

    @classmethod
    def invalid(cls, exc: InvalidInput, kind: str) -> Rejected:
        """422 naming each bad field."""
        return cls(422, orjson.dumps(exc.body()), kind)

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type=JSON)


def observed(m: Metrics, method: str, path: str, respond: Handler) -> Handler:
    """`respond` as the handler of `method path`: a `Rejected` its 4xx, any other exception
    a logged 500; the error counted and the request recorded under `path`."""
    perf = time.perf_counter

    async def handler(request: web.Request) -> web.StreamResponse:
        t0 = perf()
        try:
            resp = await respond(request)
        except Rejected as exc:
            resp = exc.response()
            m.http_error(path, exc.kind)
        except Exception:
            log.exception("%s %s failed", method, path)
            resp = internal_error()
            m.http_error(path, "internal")
        m.observe_http(path, request.method, resp.status, perf() - t0)
        return resp

    return handler


def method_not_allowed(m: Metrics, path: str, allowed: str) -> Handler:
    """405 for any method but `allowed` on `path`."""

    async def handler(request: web.Request) -> web.Response:
        m.http_error(path, "method_not_allowed")
        m.observe_http(path, request.method, 405, 0.0)
        return json_response(
            405,
            {"error": "method not allowed", "detail": f"use {allowed} {path}"},
            headers={"Allow": allowed},
        )

    return handler


def not_found(m: Metrics, endpoints: Sequence[str]) -> Handler:
    """404 for a path no route has, listing the endpoints."""

    async def handler(request: web.Request) -> web.Response:
        # The label is "other", never the raw path: a scanner must not blow up cardinality.
        m.http_error("other", "not_found")
        m.observe_http("other", request.method, 404, 0.0)
        return json_response(
            404,
            {"error": "not found", "detail": f"no route {request.path}", "endpoints": endpoints},
        )

    return handler
