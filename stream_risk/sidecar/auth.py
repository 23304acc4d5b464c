"""Optional bearer-token auth on the sidecar (docs/design.md D22, docs/operations.md §6.1).

    auth = HttpAuth.of(settings.http_token_value(), metrics_auth=settings.http_metrics_auth)
    create_app(state, registry, auth=auth)     # None: no auth, no middleware (the default)

When on, a middleware lets a request through when it is for an open route or carries the
token; every other route is protected, so a route added later is protected without a word
here. The rule is over the *matched route* (its canonical path), not the raw path, so no
spelling of a URL reaches a protected handler through an open name:

- open: `/healthz`, `/readyz`, `/login`, `/logout`, and `/metrics` unless `metrics_auth`;
- everything else (the data, `POST /assess`, the page and its files, `/events`, `/docs`,
  `/openapi.json`, and the catch-all 404, so the endpoint list is not shown either).

A request carries the token as `Authorization: Bearer <token>` or as the session cookie the
login form sets (`POST /login`, for the browser page, whose EventSource cannot send a header).
The cookie holds `HMAC-SHA256(token, SESSION_LABEL)`, not the token: HttpOnly, SameSite=Strict,
Secure when the request came over https (or `X-Forwarded-Proto: https` from a proxy). Both are
compared with `hmac.compare_digest`. A refused request gets 401 with `WWW-Authenticate:
Bearer` and a JSON body saying what to send (`GET /` gets the login page instead); the token
presented is never echoed nor logged.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from stream_risk.metrics import Metrics
from stream_risk.sidecar.errors import JSON, Handler

#: The session cookie's name and what its value is the HMAC of (under the token).
COOKIE: Final = "stream_risk_session"
SESSION_LABEL: Final = b"stream-risk sidecar session v1"
LOGIN_PATH: Final = "/login"
LOGOUT_PATH: Final = "/logout"
#: Routes (canonical paths) answered without the token.
OPEN_ROUTES: Final = frozenset({"/healthz", "/readyz", LOGIN_PATH, LOGOUT_PATH})
METRICS_ROUTE: Final = "/metrics"
#: The page's route: refused with the login page rather than JSON.
PAGE_ROUTE: Final = "/"

UNAUTHORIZED_BODY: Final = orjson.dumps(
    {
        "error": "unauthorized",
        "detail": "send Authorization: Bearer <token> (the token in STREAM_RISK_HTTP_TOKEN "
        "or the token file)",
    }
)
_CHALLENGE: Final = 'Bearer realm="stream-risk"'
_CHALLENGE_INVALID: Final = 'Bearer realm="stream-risk", error="invalid_token"'
_PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}


class HttpAuth:
    """The sidecar's token and what it protects. Its repr never shows the token."""

    __slots__ = ("_session", "_token", "metrics_auth")

    def __init__(self, token: str, *, metrics_auth: bool = False) -> None:
        if not token:
            raise ValueError("an empty token protects nothing: pass None for no auth")
        self._token = token.encode()
        self._session = session_value(token).encode()
        self.metrics_auth = metrics_auth

    @classmethod
    def of(cls, token: str | None, *, metrics_auth: bool = False) -> HttpAuth | None:
        """Auth with this token, or None (no auth) when there is none."""
        return None if token is None else cls(token, metrics_auth=metrics_auth)

    def __repr__(self) -> str:
        return f"HttpAuth(token=***, metrics_auth={self.metrics_auth})"

    def is_open(self, route: str | None) -> bool:
        """Whether the route of this canonical path is answered without the token."""
        if route in OPEN_ROUTES:
            return True
        return route == METRICS_ROUTE and not self.metrics_auth

    def token_matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._token)

    def session_matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._session)

    def check(self, request: web.Request) -> bool | None:
        """True: the request carries the token (header or cookie); False: it carries a
        wrong one; None: it carries none."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            return scheme.lower() == "bearer" and self.token_matches(credentials.strip())
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            return self.session_matches(cookie)
        return None

    @property
    def session(self) -> str:
        """The cookie's value (derived from the token, not the token)."""
        return self._session.decode()


def describe_auth(auth: HttpAuth | None) -> str:
    """One phrase for the start-up log: whether, and over what, the sidecar wants a token."""
    if auth is None:
        return "no auth: set STREAM_RISK_HTTP_TOKEN or --http-token-file to require a token"
    metrics = "/metrics too" if auth.metrics_auth else "/metrics open"
    return f"bearer-token auth on: all but /healthz and /readyz, {metrics}"


def session_value(token: str) -> str:
    """`HMAC-SHA256(token, SESSION_LABEL)` in hex: what the login cookie carries."""
    return hmac.new(token.encode(), SESSION_LABEL, hashlib.sha256).hexdigest()


def came_over_https(request: web.Request) -> bool:
    """The request reached us over TLS, or a proxy that terminated TLS says so."""
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.secure or forwarded.split(",")[0].strip().lower() == "https"


def unauthorized(presented: bool) -> web.Response:
    """401 saying what to send (`error="invalid_token"` when a wrong one was sent)."""
    return web.Response(
        status=401,
        body=UNAUTHORIZED_BODY,
        content_type=JSON,
        headers={"WWW-Authenticate": _CHALLENGE_INVALID if presented else _CHALLENGE},
    )


def login_page(status: int, message: str = "", *, presented: bool = False) -> web.Response:
    """The login form (no script, no external file: the page's own files are protected)."""
    note = f'<p class="err" role="alert">{message}</p>' if message else ""
    html = _LOGIN_HTML.replace("{note}", note)
    headers = dict(_PAGE_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = _CHALLENGE_INVALID if presented else _CHALLENGE
    return web.Response(
        status=status, text=html, content_type="text/html", charset="utf-8", headers=headers
    )


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def add_auth(app: web.Application, auth: HttpAuth, metrics: Metrics | None = None) -> None:
    """Protect `app` (before any catch-all route: adds `/login` and `/logout`).

    `metrics`: refusals are counted like the sidecar's other errors
    (`stream_risk_http_errors_total{kind="unauthorized"}`, the route's canonical path, or
    `other` for no route)."""

    def observe(request: web.Request, route: str | None, status: int, t0: float) -> None:
        if metrics is not None:
            label = route if route is not None and "{tail" not in route else "other"
            metrics.http_error(label, "unauthorized")
            metrics.observe_http(label, request.method, status, time.perf_counter() - t0)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        if auth.is_open(route):
            return await handler(request)
        verdict = auth.check(request)
        if verdict:
            return await handler(request)
        t0 = time.perf_counter()
        if route == PAGE_ROUTE and request.method in ("GET", "HEAD"):
            stale = verdict is False and request.cookies.get(COOKIE) is not None
            message = "Your session has ended (the token changed): log in again." if stale else ""
            resp = login_page(401, message, presented=verdict is False)
            if stale:
                resp.del_cookie(COOKIE, path="/")
        else:
            resp = unauthorized(presented=verdict is False)
        observe(request, route, resp.status, t0)
        return resp

    async def login_form(request: web.Request) -> web.Response:
        if auth.check(request):
            raise web.HTTPSeeOther("/")
        return login_page(200)

    async def login(request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except (ValueError, HttpProcessingError):  # not a form (a broken multipart, say)
            return login_page(400, "Send the form: a token field.")
        token = form.get("token")
        if not isinstance(token, str) or not auth.token_matches(token.strip()):
            # Never echoed: the field comes back empty.
            return login_page(401, "That is not the token: try again.")
        resp = _see_other("/")
        resp.set_cookie(
            COOKIE,
            auth.session,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=came_over_https(request),
        )
        return resp

    async def logout(request: web.Request) -> web.Response:
        resp = _see_other(LOGIN_PATH)
        resp.del_cookie(COOKIE, path="/")
        return resp

    app.middlewares.append(require_token)
    app.router.add_get(LOGIN_PATH, login_form)
    app.router.add_post(LOGIN_PATH, login)
    app.router.add_post(LOGOUT_PATH, logout)


_LOGIN_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stream-risk: log in</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; background: #0f1419; color: #e6e6e6;
       display: flex; min-height: 100vh; margin: 0; align-items: center;
       justify-content: center; }
form { background: #1a2028; padding: 24px 28px; border-radius: 8px; width: 340px; }
h1 { font-size: 18px; margin: 0 0 12px; }
label { display: block; margin: 12px 0 4px; }
input { width: 100%; box-sizing: border-box; padding: 8px; border-radius: 4px;
        border: 1px solid #3a4450; background: #0f1419; color: inherit; }
button { margin-top: 16px; padding: 8px 16px; border: 0; border-radius: 4px;
         background: #2f81f7; color: #fff; font: inherit; cursor: pointer; }
.err { color: #ff7b72; }
.hint { color: #9aa4ae; font-size: 13px; }
</style>
</head>
<body>
<form method="post" action="/login">
<h1>stream-risk</h1>
<p class="hint">This sidecar needs its token: the one in STREAM_RISK_HTTP_TOKEN or the
token file it was started with.</p>
{note}
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password"
       required autofocus>
<button type="submit">Log in</button>
</form>
</body>
</html>
"""

__all__ = [
    "COOKIE",
    "OPEN_ROUTES",
    "UNAUTHORIZED_BODY",
    "HttpAuth",
    "add_auth",
    "describe_auth",
    "session_value",
]
