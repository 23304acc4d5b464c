"""Optional bearer-token auth on the sidecar (docs/design.md D22): both states, over a real
socket (aiohttp's TestServer and client), the login flow of the page, the SSE stream with the
login cookie, and that the token never shows in logs, error bodies, `/config` or the settings.
The settings' token sources, and `stream-risk serve` / `run` as a user starts them, close it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from kafka_helpers import Rec, produce
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from stream_risk.cli import _keep_secrets_out_of_logs, main
from stream_risk.kafka.embedded import free_port as free_local_port
from stream_risk.settings import ConfigError, Settings
from stream_risk.sidecar import SidecarState, create_app
from stream_risk.sidecar.auth import COOKIE, HttpAuth, add_auth

#: Recognisable, so that a leak anywhere is found by a plain substring search.
TOKEN = "TOKEN-7f3a9c-never-in-logs-Q8"
WRONG = "WRONG-0b1d2e-not-the-token-Z5"
#: The cookie's value, computed here from its definition (HMAC-SHA256 of the label, keyed by
#: the token), not read from the code.
SESSION = hmac.new(TOKEN.encode(), b"stream-risk sidecar session v1", hashlib.sha256).hexdigest()
#: The 401's body, as docs/design.md D22 words it.
UNAUTHORIZED = {
    "error": "unauthorized",
    "detail": "send Authorization: Bearer <token> (the token in STREAM_RISK_HTTP_TOKEN or the "
    "token file)",
}
ASSESS = {
    "position": {"asset": "BTC", "size": 10, "entry_price": 45000, "age_minutes": 60},
    "market": {"current_price": 44000, "volatility_1d": 0.05, "spot_spread_bps": 3},
}

Client = TestClient[web.Request, web.Application]


class Book(SidecarState):
    """A small real state: one position and one `risk-book` record."""

    def is_ready(self) -> tuple[bool, list[str]]:
        return True, []

    def positions(self, asset: str | None = None) -> list[dict[str, Any]]:
        row = {"position_id": "p1", "asset": "BTC", "size": 1.0, "action": "HOLD"}
        return [row] if asset in (None, "BTC") else []

    def book_records(self) -> dict[str, dict[str, Any]] | None:
        return {"BTC": {"asset": "BTC", "net_size": 1.0}}


#: Each protected request: (method, path, the status it gets with the token).
PROTECTED: list[tuple[str, str, int]] = [
    ("GET", "/", 200),
    ("GET", "/static/dashboard.js", 200),
    ("GET", "/static/favicon.svg", 200),
    ("GET", "/positions", 200),
    ("GET", "/positions?asset=BTC", 200),
    ("GET", "/positions/p1", 200),
    ("GET", "/exposure", 200),
    ("GET", "/config", 200),
    ("GET", "/book", 200),
    ("GET", "/book/BTC", 200),
    ("POST", "/assess", 200),
    ("GET", "/no-such-route", 404),  # the catch-all: its endpoint list is not shown either
]


async def started(auth: HttpAuth | None) -> Client:
    client: Client = TestClient(TestServer(create_app(Book(), auth=auth)))
    await client.start_server()
    return client


@pytest.fixture
async def on() -> AsyncIterator[Client]:
    c = await started(HttpAuth(TOKEN))
    try:
        yield c
    finally:
        await c.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(value: str = SESSION) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


async def send(c: Client, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    data = orjson.dumps(ASSESS) if method == "POST" else None
    return await c.request(method, path, data=data, headers=headers, allow_redirects=False)


# ---------------------------------------------------------------------- off (the default)
async def test_without_a_token_every_route_answers_as_before() -> None:
    c = await started(None)
    try:
        for method, path, status in PROTECTED:
            r = await send(c, method, path)
            assert r.status == status, (method, path)
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await c.get(path)).status == 200, path
        r = await c.get("/login")  # no login route when there is nothing to log in to
        assert r.status == 404
    finally:
        await c.close()


# ---------------------------------------------------------------------- on
@pytest.mark.parametrize(("method", "path", "status"), PROTECTED)
async def test_a_protected_route_wants_the_token(
    on: Client, method: str, path: str, status: int
) -> None:
    r = await send(on, method, path, {"Accept": "application/json"})
    assert r.status == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    if path != "/":  # the page answers its login form instead (below)
        assert r.content_type == "application/json"
        assert await r.json() == UNAUTHORIZED

    r = await send(on, method, path, bearer(WRONG))
    assert r.status == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert WRONG not in await r.text()

    r = await send(on, method, path, {"Authorization": f"Basic {TOKEN}"})  # not a bearer
    assert r.status == 401

    r = await send(on, method, path, cookie("0" * 64))
    assert r.status == 401

    assert (await send(on, method, path, bearer())).status == status
    assert (await send(on, method, path, {"Authorization": f"bearer  {TOKEN} "})).status == status
    assert (await send(on, method, path, cookie())).status == status


async def test_health_and_readiness_stay_open(on: Client) -> None:
    r = await on.get("/healthz")
    assert r.status == 200 and await r.json() == {"status": "ok"}
    r = await on.get("/readyz")
    assert r.status == 200 and (await r.json())["ready"] is True
    # A wrong token sent to an open route changes nothing.
    assert (await on.get("/healthz", headers=bearer(WRONG))).status == 200


async def test_metrics_open_by_default_and_protected_when_configured(on: Client) -> None:
    r = await on.get("/metrics")
    assert r.status == 200 and "stream_risk_" in await r.text()
    c = await started(HttpAuth(TOKEN, metrics_auth=True))
    try:
        r = await c.get("/metrics")
        assert r.status == 401 and await r.json() == UNAUTHORIZED
        r = await c.get("/metrics", headers=bearer())
        assert r.status == 200
        # The refusals are counted under their route, kind "unauthorized".
        refused = [
            s.value
            for family in text_string_to_metric_families(await r.text())
            for s in family.samples
            if s.name == "stream_risk_http_errors_total"
            and s.labels == {"path": "/metrics", "kind": "unauthorized"}
        ]
        assert refused == [1.0]
    finally:
        await c.close()


async def test_the_rule_covers_routes_added_later() -> None:
    """`/docs` and `/openapi.json` (another slice's) are protected by the rule, not a list."""

    async def doc(request: web.Request) -> web.Response:
        return web.json_response({"openapi": "3.1.0"})

    app = web.Application()
    app.router.add_get("/openapi.json", doc)
    app.router.add_get("/docs", doc)
    app.router.add_get("/healthz", doc)
    add_auth(app, HttpAuth(TOKEN))
    async with TestClient(TestServer(app)) as c:
        for path in ("/openapi.json", "/docs"):
            assert (await c.get(path)).status == 401
            assert (await c.get(path, headers=bearer())).status == 200
        assert (await c.get("/healthz")).status == 200
    # And in the sidecar as built today (routes there or not yet): never answered without it.
    c2 = await started(HttpAuth(TOKEN))
    try:
        for path in ("/openapi.json", "/docs"):
            assert (await c2.get(path)).status == 401
    finally:
        await c2.close()


# ---------------------------------------------------------------------- the page's login
async def test_the_page_without_a_token_is_a_login_form(on: Client) -> None:
    r = await on.get("/")
    assert r.status == 401 and r.content_type == "text/html"
    html = await r.text()
    assert '<form method="post" action="/login">' in html
    assert 'name="token"' in html and 'type="password"' in html
    assert "<script" not in html  # nothing to fetch: the page's own files are protected
    assert r.headers["Cache-Control"] == "no-store"
    r = await on.get("/login")
    assert r.status == 200 and 'action="/login"' in await r.text()


async def test_login_sets_a_session_cookie_that_is_not_the_token(on: Client) -> None:
    r = await on.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/"
    [set_cookie] = r.headers.getall("Set-Cookie")
    assert TOKEN not in set_cookie
    attrs = [a.strip() for a in set_cookie.split(";")]
    assert attrs[0] == f"{COOKIE}={SESSION}"
    lowered = {a.lower() for a in attrs[1:]}
    assert {"httponly", "path=/", "samesite=strict"} <= lowered
    assert "secure" not in lowered  # plain http: a Secure cookie would never come back
    # The cookie opens the page, which then reads its data with it.
    page = await on.get("/", headers=cookie())
    assert page.status == 200 and 'action="/login"' not in await page.text()
    assert (await on.get("/positions", headers=cookie())).status == 200
    # Logged in already: /login goes to the page.
    r = await on.get("/login", headers=cookie(), allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/"


async def test_login_behind_a_tls_proxy_sets_a_secure_cookie(on: Client) -> None:
    r = await on.post(
        "/login",
        data={"token": TOKEN},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert r.status == 303
    assert "secure" in {a.strip().lower() for a in r.headers["Set-Cookie"].split(";")}


@pytest.mark.parametrize("form", [{"token": WRONG}, {"token": ""}, {}, {"other": TOKEN}])
async def test_a_wrong_login_is_refused_without_echoing_it(
    on: Client, form: dict[str, str]
) -> None:
    r = await on.post("/login", data=form, allow_redirects=False)
    assert r.status == 401 and r.content_type == "text/html"
    html = await r.text()
    assert "not the token" in html
    assert WRONG not in html and TOKEN not in html
    assert "Set-Cookie" not in r.headers


async def test_a_login_body_that_is_not_a_form_is_a_400(on: Client) -> None:
    r = await on.post(
        "/login",
        data=b"--x\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        allow_redirects=False,
    )
    assert r.status == 400 and r.content_type == "text/html"
    assert "Set-Cookie" not in r.headers and "a token field" in await r.text()


async def test_logout_clears_the_cookie(on: Client) -> None:
    r = await on.post("/logout", headers=cookie(), allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    set_cookie = r.headers["Set-Cookie"]
    assert set_cookie.startswith(f'{COOKIE}=""') and "max-age=0" in set_cookie.lower()


async def test_a_stale_cookie_gets_the_login_form_and_is_cleared(on: Client) -> None:
    stale = hmac.new(b"the-previous-token", b"stream-risk sidecar session v1", hashlib.sha256)
    r = await on.get("/", headers=cookie(stale.hexdigest()))
    assert r.status == 401 and "log in again" in await r.text()
    assert "max-age=0" in r.headers["Set-Cookie"].lower()


async def test_the_event_stream_works_with_the_login_cookie(on: Client) -> None:
    assert (await on.get("/events")).status == 401
    async with on.get("/events", headers=cookie()) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        event, data = "", b""
        while not data:  # the first event: the snapshot
            line = (await r.content.readline()).rstrip(b"\n")
            if line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
    assert event == "snapshot"
    assert orjson.loads(data)["status"]["ready"] is True


# ---------------------------------------------------------------------- the token stays secret
async def test_the_token_never_shows_in_logs_bodies_or_config(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    c = await started(HttpAuth(TOKEN))
    bodies: list[str] = []
    try:
        for method, path, _ in PROTECTED:
            for headers in ({}, bearer(WRONG), bearer(TOKEN[:-1]), bearer(), cookie()):
                r = await send(c, method, path, headers)
                if path != "/" and not path.startswith("/static"):
                    bodies.append(await r.text())
        for form in ({"token": TOKEN}, {"token": TOKEN + "x"}):
            r = await c.post("/login", data=form, allow_redirects=False)
            bodies.append(await r.text())
        for path in ("/config", "/readyz", "/healthz", "/metrics"):
            bodies.append(await (await c.get(path, headers=bearer())).text())
    finally:
        await c.close()
    assert len(bodies) > 50
    for body in bodies:
        assert TOKEN not in body and TOKEN[:-1] not in body
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text
    assert TOKEN not in repr(HttpAuth(TOKEN))


def test_the_log_filter_redacts_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_keep_secrets_out_of_logs` (run by every command that loads its settings) puts a
    filter on the log handlers that turns the token into `***`, whichever logger logs it."""
    monkeypatch.setenv("STREAM_RISK_HTTP_TOKEN", TOKEN)
    settings = Settings.load()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        _keep_secrets_out_of_logs(settings)
        logging.getLogger("aiohttp.server").error("header was %r", f"Bearer {TOKEN}")
        logging.getLogger("stream_risk.x").warning("bytes: %s", TOKEN.encode())
    finally:
        root.removeHandler(handler)
    text = out.getvalue()
    assert TOKEN not in text
    assert text.count("***") == 2 and "Bearer ***" in text
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert TOKEN not in settings.model_dump_json()


# ---------------------------------------------------------------------- settings
@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("STREAM_RISK_"):
            monkeypatch.delenv(k)


@pytest.mark.usefixtures("no_env")
def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().http_token_value() is None  # off by default
    assert Settings.load().http_metrics_auth is False
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert Settings.load(http_token_file=f).http_token_value() == TOKEN
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'http_token_file = "{f}"\n')  # the file's path may be in the config file
    assert Settings.load(config_file=cfg).http_token_value() == TOKEN
    monkeypatch.setenv("STREAM_RISK_HTTP_TOKEN_FILE", str(f))
    assert Settings.load().http_token_value() == TOKEN
    monkeypatch.delenv("STREAM_RISK_HTTP_TOKEN_FILE")
    monkeypatch.setenv("STREAM_RISK_HTTP_TOKEN", "")  # compose's `${VAR:-}`: still off
    assert Settings.load().http_token_value() is None
    monkeypatch.setenv("STREAM_RISK_HTTP_TOKEN", TOKEN)
    assert Settings.load().http_token_value() == TOKEN
    with pytest.raises(ValidationError, match="not both"):
        Settings.load(http_token_file=f)
    monkeypatch.setenv("STREAM_RISK_HTTP_METRICS_AUTH", "true")
    assert Settings.load().http_metrics_auth is True


@pytest.mark.usefixtures("no_env")
def test_the_token_is_never_a_flag_nor_in_the_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be given as a flag") as exc:
        Settings.load(http_token=TOKEN)
    assert TOKEN not in str(exc.value) and "STREAM_RISK_HTTP_TOKEN" in str(exc.value)
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'http_token = "{TOKEN}"\n')
    with pytest.raises(ConfigError, match="http_token_file") as exc:
        Settings.load(config_file=cfg)
    assert TOKEN not in str(exc.value)


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "is empty"),
        ("  \n", "is empty"),
        ("short-token\n", "has 11 characters: use at least 16"),
        ("two words in a long token", "space"),
    ],
)
def test_a_bad_token_file_is_a_clear_error(tmp_path: Path, content: str, says: str) -> None:
    f = tmp_path / "token"
    f.write_text(content)
    with pytest.raises(ConfigError, match=says) as exc:
        Settings.load(http_token_file=f).http_token_value()
    assert str(f) in str(exc.value)
    if content.strip():
        assert content.strip() not in str(exc.value)


@pytest.mark.usefixtures("no_env")
def test_a_missing_token_file_names_it(tmp_path: Path) -> None:
    f = tmp_path / "nope"
    with pytest.raises(ConfigError, match="cannot read it") as exc:
        Settings.load(http_token_file=f).http_token_value()
    assert str(f) in str(exc.value) and "--http-token-file" in str(exc.value)


# ---------------------------------------------------------------------- the commands
@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_bad_token_file_stops_the_start_with_exit_2(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "token"
    empty.write_text("")
    # `run` would retry an unreachable broker for ever: the token is checked before.
    extra = ["--bootstrap-servers", "127.0.0.1:1"] if command == "run" else []
    port_flag = "--port" if command == "serve" else "--http-port"
    code = main([command, "--http-token-file", str(empty), port_flag, "0", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert f"http_token_file {empty} is empty" in err


def test_the_token_as_a_flag_is_refused_without_repeating_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("serve", "run"):
        assert main([command, "--http-token", TOKEN]) == 2
        err = capsys.readouterr().err
        assert "--http-token is not accepted" in err and "STREAM_RISK_HTTP_TOKEN" in err
        assert TOKEN not in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def status_of(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            status: int = r.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`stream-risk serve --http-token-file FILE` as a user starts it."""
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_RISK_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_risk.cli",
            "serve",
            "--port",
            str(port),
            "--http-token-file",
            str(f),
            "--log-level",
            "DEBUG",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()
            try:
                if status_of(base + "/healthz", {}) == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /healthz in 20 s"
            time.sleep(0.05)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_with_a_token_file(serving: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, base = serving
    assert status_of(base + "/readyz", {}) == 200
    assert status_of(base + "/config", {}) == 401
    assert status_of(base + "/config", bearer(WRONG)) == 401
    assert status_of(base + "/config", bearer()) == 200
    assert status_of(base + "/metrics", {}) == 200
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert b"bearer-token auth on: all but /healthz and /readyz, /metrics open" in err
    assert TOKEN.encode() not in out + err


async def test_run_against_a_broker_with_a_token(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`stream-risk run --http-token-file` as a user starts it, on the session's broker: the
    book is read with the token only, health stays open, and the token is in none of its
    output, DEBUG logs included."""
    import aiohttp

    tag = os.urandom(4).hex()
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    port = free_local_port("127.0.0.1")
    log = tmp_path / "engine.log"
    log_file = log.open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_RISK_")}
    for topic in ("POSITIONS", "MARKET_TICKS", "ACTIONS", "DLQ", "CONFIG", "ALERTS"):
        env[f"STREAM_RISK_TOPIC_{topic}"] = f"{topic.lower()}-{tag}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_risk",
            "run",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--http-port",
            str(port),
            "--group-id",
            f"g-{tag}",
            "--create-topics",
            "--http-token-file",
            str(f),
            "--log-level",
            "DEBUG",
        ],
        env=env,
        stdout=log_file,  # a file, not a pipe: DEBUG fills a pipe and blocks the engine
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            deadline = time.monotonic() + 40
            while True:  # /readyz answers without the token
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    async with s.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the engine was not ready in 40 s"
                await asyncio.sleep(0.1)
            value = {"asset": "BTC", "size": 2.0, "entry_price": 40000.0, "age_minutes": 5}
            value["ts"] = time.time_ns() // 1_000_000
            await produce(
                kafka_bootstrap, f"positions-{tag}", [Rec(b"p-auth", orjson.dumps(value))]
            )
            async with s.get(base + "/positions/p-auth") as r:
                assert r.status == 401 and await r.json() == UNAUTHORIZED
            while True:
                async with s.get(base + "/positions/p-auth", headers=bearer()) as r:
                    if r.status == 200:
                        assert (await r.json())["asset"] == "BTC"
                        break
                    assert r.status == 404  # not consumed yet
                assert time.monotonic() < deadline + 20, "the position never showed"
                await asyncio.sleep(0.1)
            async with s.get(base + "/exposure", headers=bearer(WRONG)) as r:
                assert r.status == 401
            async with s.get(base + "/metrics") as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "bearer-token auth on" in text
    assert TOKEN not in text
