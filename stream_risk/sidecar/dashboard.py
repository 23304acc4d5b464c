"""The risk dashboard page on the sidecar: `/`, its static files, and live updates by SSE.

    add_dashboard(app, state, metrics=None)     # inside create_app, before the catch-all

Routes (GET):

- `/` : the page (`static/index.html`), served from the package: no CDN, works offline.
- `/static/{name}` : the page's script, style sheet and icon (a fixed list; nothing else).
- `/events` : Server-Sent Events (`text/event-stream`), one stream per open page:
    - `snapshot` first: `exposure` per asset, `desk` (limits, breaches, alerts, and `scope`:
      whether the cards are the whole book's, `"book"`, each asset with its net advice and
      saving, or this instance's only, `"instance"`: docs/design.md D17), `recent` (the
      latest actions, newest last) and `status` (ready, reasons, mode, how many
      positions). No rows: the page reads
      the table a page at a time from `GET /positions` (200 rows, next / previous, filters);
    - then `update` whenever something changed: `upserts` (rows the hub's sweep found
      changed), `removed` (position ids it found closed), `exposure`, `desk`, `status`;
    - `action` for each new action seen (a compact summary, with the previous action and
      score of that position) and for each closed position (`closed: true`): the live feed;
    - a `: ping` comment after 15 s of silence, so proxies keep the stream open.

How updates are found (a sweep of the table, in bounded work whatever its size) is
`stream_risk.sidecar.dashboard_hub`'s `DashboardHub`, one per app.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from importlib import resources
from typing import Final

from aiohttp import web

from stream_risk.metrics import Metrics
from stream_risk.sidecar.dashboard_hub import DashboardHub
from stream_risk.state import SidecarState

#: The files `/static/{name}` serves, with their content types. Nothing else is reachable.
STATIC_FILES: Final[Mapping[str, str]] = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
INDEX_FILE: Final = "index.html"

_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def _read_static(name: str) -> bytes:
    return (resources.files("stream_risk.sidecar") / "static" / name).read_bytes()


HUB_KEY: Final = web.AppKey("stream_risk_dashboard_hub", DashboardHub)


def add_dashboard(
    app: web.Application,
    state: SidecarState,
    metrics: Metrics | None = None,
    *,
    interval: float = 0.5,
    keepalive: float = 15.0,
) -> DashboardHub:
    """Add `/`, `/static/{name}` and `/events` to `app` (call it before any catch-all route).

    `metrics`: when given, the routes are counted like the sidecar's others
    (`stream_risk_http_requests_total{path="/" | "/static" | "/events"}`).
    """
    hub = DashboardHub(state, interval)
    app[HUB_KEY] = hub
    app.on_shutdown.append(hub.close)
    index = _read_static(INDEX_FILE)  # read once: fail at start-up, not on the first visit
    files = {name: _read_static(name) for name in STATIC_FILES}

    def observe(path: str, request: web.Request, status: int, t0: float) -> None:
        if metrics is not None:
            metrics.observe_http(path, request.method, status, time.perf_counter() - t0)

    async def page(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        resp = web.Response(
            body=index,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )
        observe("/", request, 200, t0)
        return resp

    async def static(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        name = request.match_info["name"]
        body = files.get(name)
        if body is None:
            observe("/static", request, 404, t0)
            return web.json_response(
                {"error": "not found", "detail": f"no static file {name!r}"}, status=404
            )
        ctype = STATIC_FILES[name]
        resp = web.Response(
            body=body,
            content_type=ctype,
            charset="utf-8" if ctype.startswith("text/") else None,
            headers={"Cache-Control": "no-cache"},
        )
        observe("/static", request, 200, t0)
        return resp

    async def events(request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        observe("/events", request, 200, t0)
        q = hub.subscribe()
        try:
            await resp.write(b"retry: 2000\n\n")
            while True:
                try:
                    data = await asyncio.wait_for(q.get(), keepalive)
                except TimeoutError:
                    data = b": ping\n\n"
                if data is None:
                    break
                await resp.write(data)
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            hub.unsubscribe(q)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp

    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/events", events)
    return hub


__all__ = [
    "HUB_KEY",
    "STATIC_FILES",
    "add_dashboard",
]
