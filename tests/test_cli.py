"""`stream-risk` as a user runs it: real subprocesses, a real port, a real SIGINT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_risk import __version__
from stream_risk.cli import COMMANDS, main

WORKED = {
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
INVALID = {
    "position": {"asset": "BTC", "size": 10, "entry_price": 0},
    "market": {"current_price": 44000, "volatility_1d": "high", "spot_spread_bps": 3},
}
CMD = [sys.executable, "-m", "stream_risk.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_RISK_")}
    env.update(extra)
    return env


def run(*args: str, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CMD, *args], input=stdin, capture_output=True, timeout=60, env=clean_env(**env)
    )


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    p = tmp_path / "request.json"
    p.write_text(json.dumps(WORKED))
    return p


def check_worked(stdout: bytes) -> None:
    out = json.loads(stdout)
    assert out["action"] == "HEDGE_PARTIAL"
    assert out["risk_score"] == pytest.approx(48.82, abs=1e-9)
    assert out["suggested_hedge"]["instrument"] == "perp_short"
    assert out["suggested_hedge"]["size"] == 5.0
    assert out["position_notional_usd"] == 440000
    assert b"\n  " in stdout  # indented for a human


# ---------------------------------------------------------------------- assess
def test_assess_file(request_file: Path) -> None:
    r = run("assess", str(request_file))
    assert r.returncode == 0, r.stderr
    check_worked(r.stdout)


@pytest.mark.parametrize("args", [(), ("-",)], ids=["no-arg", "dash"])
def test_assess_stdin(args: tuple[str, ...]) -> None:
    r = run("assess", *args, stdin=json.dumps(WORKED).encode())
    assert r.returncode == 0, r.stderr
    check_worked(r.stdout)


def test_assess_invalid_names_each_field_on_stderr(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(INVALID))
    r = run("assess", str(p))
    assert r.returncode == 2
    assert r.stdout == b""
    lines = r.stderr.decode().splitlines()
    assert "position.entry_price: Input should be greater than 0" in lines
    assert any(line.startswith("market.volatility_1d: ") for line in lines)
    assert len(lines) == 2


def test_assess_nan_names_the_field() -> None:
    body = json.dumps(WORKED).replace('"size": 10', '"size": NaN').encode()
    r = run("assess", stdin=body)
    assert r.returncode == 2
    assert r.stderr.decode().startswith("position.size: ")


@pytest.mark.parametrize("body", [b"", b"{not json", b"[]"], ids=["empty", "malformed", "array"])
def test_assess_unusable_body(body: bytes) -> None:
    r = run("assess", stdin=body)
    assert r.returncode == 2
    assert r.stderr.decode().startswith("body: ")


def test_assess_unreadable_file_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    r = run("assess", str(missing))
    assert r.returncode == 2
    err = r.stderr.decode()
    assert str(missing) in err and "No such file" in err
    assert "stdin" in err  # what to do instead
    r = run("assess", str(tmp_path))  # a directory
    assert r.returncode == 2
    assert "cannot read" in r.stderr.decode()


def test_assess_in_process(request_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assess", str(request_file)]) == 0
    check_worked(capsys.readouterr().out.encode())


# ---------------------------------------------------------------------- top level
def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.decode().strip() == f"stream-risk {__version__}"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "stream-risk"
    assert script.exists(), "pip install -e . declares the stream-risk console script"
    r = subprocess.run([str(script), "--version"], capture_output=True, timeout=60)
    assert r.returncode == 0 and __version__ in r.stdout.decode()


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    for name in COMMANDS:
        assert name in err


def test_unknown_subcommand_and_unknown_flag_exit_2() -> None:
    assert main(["frobnicate"]) == 2
    assert main(["serve", "--sasl-password", "hunter2"]) == 2  # no such flag, by design


def test_subcommands_registered() -> None:
    assert {"serve", "assess"} <= set(COMMANDS)


# ---------------------------------------------------------------------- serve
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    proc = subprocess.Popen(
        [*CMD, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()
            try:
                if http("GET", base + "/healthz")[0] == 200:
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


def test_serve_answers_then_exits_0_on_ctrl_c(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, base = server
    assert http("GET", base + "/healthz") == (200, {"status": "ok"})
    assert http("GET", base + "/readyz")[0] == 200
    status, out = http("POST", base + "/assess", json.dumps(WORKED).encode())
    assert status == 200 and out["action"] == "HEDGE_PARTIAL"
    status, out = http("POST", base + "/assess", json.dumps(INVALID).encode())
    assert status == 422
    assert {e["field"] for e in out["detail"]} == {"position.entry_price", "market.volatility_1d"}

    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert base in stdout.decode()  # it printed where it listens


def test_serve_exits_0_on_sigterm(server: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, _ = server
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_serve_port_in_use_fails_clearly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("serve", "--port", str(port))
    assert r.returncode == 1
    err = r.stderr.decode()
    assert f"127.0.0.1:{port}" in err and "--port" in err


def test_serve_bad_setting_from_env_names_it() -> None:
    r = run("serve", STREAM_RISK_HTTP_PORT="99999")
    assert r.returncode == 2
    assert "http_port" in r.stderr.decode()


def test_serve_port_from_config_file(tmp_path: Path) -> None:
    """Flags > env > file: the file's port is used when neither flag nor env sets it."""
    port = free_port()
    cfg = tmp_path / "stream-risk.toml"
    cfg.write_text(f"http_port = {port}\n")
    proc = subprocess.Popen(
        [*CMD, "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    try:
        line = proc.stdout.readline().decode() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}" in line, proc.stderr.read() if proc.stderr else b""
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_a_command_whose_extra_is_missing_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engine's own install has no replay/demo packages (pyproject extras): `replay`
    then names the extra to install instead of a traceback."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` fails as if absent
    for name in [m for m in sys.modules if m.startswith("stream_risk.replay")]:
        monkeypatch.delitem(sys.modules, name)
    assert main(["replay", "--ticks", "ticks.csv"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'stream-risk[replay]'" in err and "pyarrow is missing" in err
