"""Promise 7 (issue 8), security.

- Kafka TLS and SASL (PLAIN, SCRAM-SHA-256/512) settings pass from `stream-risk run`'s
  flags and env to the aiokafka clients the engine builds: checked on the clients' own
  configuration (the brokers here speak neither), and every client the engine's Kafka code
  creates is built with the security arguments (a source check, so a new client cannot
  forget them). The password comes from env or a file only, never a flag.
- The sidecar binds 127.0.0.1 unless told otherwise and limits body size.
- Secrets are never echoed: a recognisable password is set in the env of real
  `stream-risk run` processes (INFO and DEBUG logging, a broker that refuses SASL, bad
  settings), and their logs, error outputs, `/metrics`, `/readyz`, `/positions` and error
  responses are searched for it.
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import http.client
import os
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

import stream_risk
from stream_risk.cli import build_parser, load_settings
from stream_risk.commands import _kafka_flags
from stream_risk.service import processor_config
from stream_risk.settings import Settings

from .support import EngineProcess, Topics

PKG = Path(stream_risk.__file__).parent


# ---------------------------------------------------------------------- TLS material
@pytest.fixture(scope="module")
def ca_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA certificate, a client certificate and its key (PEM files)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:
        pytest.fail(f"the TLS tests need the cryptography package (dev extras): {exc}")
    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stream-risk test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}
    pem = cert.public_bytes(serialization.Encoding.PEM)
    files["ca"].write_bytes(pem)
    files["cert"].write_bytes(pem)
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _clients(cfg_kwargs: dict[str, Any], bootstrap: str) -> list[Any]:
    """The three kinds of aiokafka client, built as the engine builds them."""
    return [
        AIOKafkaProducer(bootstrap_servers=bootstrap, **cfg_kwargs),
        AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, **cfg_kwargs),
        AIOKafkaAdminClient(bootstrap_servers=bootstrap, **cfg_kwargs),
    ]


def _client_of(c: Any) -> Any:
    return c.client if isinstance(c, AIOKafkaProducer) else c._client


async def _settings_from_run_flags(argv: list[str]) -> Settings:
    """What `stream-risk run ARGV` loads (the same flags as its handler passes)."""
    args = build_parser().parse_args(["run", *argv])
    return load_settings(
        args,
        http_host=args.http_host,
        http_port=args.http_port,
        group_id=args.group_id,
        emit=args.emit,
        create_topics=args.create_topics,
        **_kafka_flags(args),
    )


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_SSL", "SCRAM-SHA-256"),
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SSL", None),
    ],
)
async def test_flags_and_env_reach_the_aiokafka_clients(
    protocol: str,
    mechanism: str | None,
    ca_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("STREAM_RISK_SASL_PASSWORD", password)
    argv = ["--bootstrap-servers", "kafka-1:9093,kafka-2:9093", "--security-protocol", protocol]
    if mechanism:
        argv += ["--sasl-mechanism", mechanism, "--sasl-username", "risk-engine"]
    if protocol.endswith("SSL"):
        argv += [
            "--ssl-cafile",
            str(ca_files["ca"]),
            "--ssl-certfile",
            str(ca_files["cert"]),
            "--ssl-keyfile",
            str(ca_files["key"]),
        ]
    settings = await _settings_from_run_flags(argv)
    cfg = processor_config(settings)
    assert cfg.bootstrap_servers == "kafka-1:9093,kafka-2:9093"
    for c in _clients(cfg.client_kwargs, cfg.bootstrap_servers):
        client = _client_of(c)
        assert client._security_protocol == protocol
        if mechanism:
            assert client._sasl_mechanism == mechanism
            assert client._sasl_plain_username == "risk-engine"
            assert client._sasl_plain_password == password
        ctx = client._ssl_context
        if protocol.endswith("SSL"):
            assert isinstance(ctx, ssl.SSLContext)
            assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
            names = [str(c["subject"]) for c in ctx.get_ca_certs()]
            assert any("stream-risk test CA" in n for n in names), names
        else:
            assert ctx is None
        if isinstance(c, AIOKafkaAdminClient):
            await c.close()


async def test_password_from_a_file_reaches_the_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAM_RISK_SASL_PASSWORD", raising=False)
    secret = tmp_path / "kafka-password"
    secret.write_text("from-a-file-123\n")
    settings = await _settings_from_run_flags(
        [
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "SCRAM-SHA-256",
            "--sasl-username",
            "risk",
            "--sasl-password-file",
            str(secret),
        ]
    )
    for c in _clients(processor_config(settings).client_kwargs, "k:9092"):
        assert _client_of(c)._sasl_plain_password == "from-a-file-123"
        if isinstance(c, AIOKafkaAdminClient):
            await c.close()


def test_the_password_is_never_a_flag() -> None:
    """`--sasl-password SECRET` must be refused as a flag, without echoing SECRET."""
    canary = f"flag-pw-{uuid.uuid4().hex}"
    argv = [
        "run",
        "--sasl-password",
        canary,
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "PLAIN",
        "--sasl-username",
        "u",
        "--bootstrap-servers",
        "127.0.0.1:1",
    ]
    p = subprocess.run(
        [sys.executable, "-m", "stream_risk", *argv], capture_output=True, timeout=60
    )
    assert p.returncode == 2
    assert canary.encode() not in p.stdout + p.stderr


def test_every_engine_kafka_client_gets_the_security_arguments() -> None:
    """Each AIOKafka{Producer,Consumer,AdminClient}(...) built by the engine's Kafka code
    (and by `topics`/`replay --publish`) splats the client kwargs (security) into it."""
    files = [*sorted((PKG / "kafka").glob("*.py")), PKG / "replay" / "publish.py"]
    exempt = {"embedded.py"}  # probes the loopback broker it started itself
    calls = []
    for f in files:
        if f.name in exempt:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", "")
                if name in {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}:
                    splat = any(k.arg is None for k in node.keywords)
                    calls.append((f"{f.name}:{node.lineno}", splat))
    assert len(calls) >= 5, calls
    assert [c for c, ok in calls if not ok] == []


# ---------------------------------------------------------------------- the sidecar
def _listening(port: int) -> list[str]:
    """Local addresses listening on `port` (Linux /proc/net/tcp and tcp6)."""
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, p = parts[1].split(":")
            if int(p, 16) == port and parts[3] == "0A":  # LISTEN
                if width == 8:
                    out.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, 32, 8))
                    out.append(socket.inet_ntop(socket.AF_INET6, raw))
    return out


@pytest.fixture(scope="module")
def canary() -> str:
    return f"Canary-{uuid.uuid4().hex}-Pw"


@pytest.fixture(scope="module")
def secret_engines(
    kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory, canary: str
) -> Iterator[dict[str, EngineProcess]]:
    """`stream-risk run` processes with the canary password in their env:
    - "plain": PLAINTEXT to the session broker, INFO (the password is set but unused);
    - "sasl": SASL_PLAINTEXT PLAIN, DEBUG logging, to a broker that refuses SASL, so it
      retries and logs connection errors for as long as it runs."""
    topics = Topics.new()
    asyncio.run(topics.create(kafka_broker.bootstrap))
    d = tmp_path_factory.mktemp("secrets")
    env = {"STREAM_RISK_SASL_PASSWORD": canary, "STREAM_RISK_SASL_USERNAME": "risk"}
    engines = {
        "plain": EngineProcess(kafka_broker.bootstrap, topics, d, name="plain", env=env),
        "sasl": EngineProcess(
            kafka_broker.bootstrap,
            topics,
            d,
            "--log-level",
            "DEBUG",
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "PLAIN",
            name="sasl",
            env=env,
        ),
    }
    try:
        for e in engines.values():
            e.start()
        asyncio.run(engines["plain"].wait_ready())

        async def sidecar_up(e: EngineProcess) -> None:
            for _ in range(200):
                if (await e.readiness()).status is not None:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(e.tail())

        asyncio.run(sidecar_up(engines["sasl"]))
        yield engines
    finally:
        for e in engines.values():
            e.cleanup()


@pytest.mark.broker
def test_the_sidecar_binds_loopback_by_default(secret_engines: dict[str, EngineProcess]) -> None:
    assert Settings.load().http_host == "127.0.0.1"
    for e in secret_engines.values():
        addrs = _listening(e.port)
        assert addrs and set(addrs) <= {"127.0.0.1"}, addrs


def _post(port: int, body: bytes, chunked: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if chunked:
            conn.putrequest("POST", "/assess")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for i in range(0, len(body), 8192):
                part = body[i : i + 8192]
                conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request("POST", "/assess", body=body)
        r = conn.getresponse()
        return r.status, r.read()
    except (ConnectionError, http.client.HTTPException):
        return -1, b""  # the server may close early on an oversized upload
    finally:
        conn.close()


@pytest.mark.broker
def test_the_sidecar_limits_body_size(secret_engines: dict[str, EngineProcess]) -> None:
    e = secret_engines["plain"]
    big = b'{"position": {"asset": "' + b"A" * (1 << 20) + b'"}}'
    status, body = _post(e.port, big)
    assert status == 413 and b"limit" in body, (status, body[:200])
    status, body = _post(e.port, big, chunked=True)
    assert status in (413, -1), (status, body[:200])
    assert e.alive()
    assert _post(e.port, b"{}")[0] == 422  # and it still answers


@pytest.mark.broker
def test_no_secret_in_logs_errors_or_metrics(
    secret_engines: dict[str, EngineProcess], canary: str, tmp_path: Path
) -> None:
    async def scrape(e: EngineProcess) -> list[bytes]:
        out = []
        for path in ("/metrics", "/readyz", "/healthz", "/positions", "/nope"):
            out.append((await e.get(path))[1])
        return out

    seen: dict[str, bytes] = {}
    for name, e in secret_engines.items():
        for i, body in enumerate(asyncio.run(scrape(e))):
            seen[f"{name} http {i}"] = body
        seen[f"{name} 413/422"] = _post(e.port, b"x" * (70 * 1024))[1] + _post(e.port, b"{")[1]
    sasl = secret_engines["sasl"]
    reasons = asyncio.run(sasl.readiness()).reasons
    assert any("unreachable" in r for r in reasons), reasons  # it did try, and failed
    # Error outputs of commands that fail with the password in their env.
    env = {**os.environ, "STREAM_RISK_SASL_PASSWORD": canary}
    failing = [
        ["run", "--security-protocol", "SASL_SSL", "--bootstrap-servers", "127.0.0.1:1"],
        [
            "run",
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "SCRAM-SHA-256",
            "--sasl-password-file",
            str(tmp_path / "nope"),
        ],
        [
            "topics",
            "list",
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            "u",
            "--bootstrap-servers",
            "127.0.0.1:1",
        ],
        ["run", "--sasl-mechanism", "MD5"],
    ]
    for argv in failing:
        p = subprocess.run(
            [sys.executable, "-m", "stream_risk", *argv],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert p.returncode != 0, argv
        seen[" ".join(argv)] = p.stdout + p.stderr
    for name, e in secret_engines.items():
        e.terminate()
        seen[f"{name} log"] = e.log().encode()
    sasl_log = seen["sasl log"]
    assert b" DEBUG " in sasl_log and b"retrying" in sasl_log  # DEBUG, with its errors
    leaks = [where for where, text in seen.items() if canary.encode() in text]
    assert not leaks, f"the password appears in: {leaks}"


def test_debug_logging_does_not_leak_a_sasl_authenticate_request(canary: str) -> None:
    """What aiokafka logs at DEBUG when it authenticates against a SASL broker (its own log
    call, `Request to HOST:PORT ID: <struct>`), under the engine's logging set-up."""
    code = f"""
import logging, sys
from stream_risk.cli import build_parser, load_settings
from aiokafka.protocol.admin import SaslAuthenticateRequest_v1
args = build_parser().parse_args(["run", "--log-level", "DEBUG"])
load_settings(args)
token = "\\0".join(["risk", "risk", {canary!r}]).encode()
logging.getLogger("aiokafka.conn").debug(
    "Request to %s:%d %d: %s", "kafka", 9092, 7, SaslAuthenticateRequest_v1(token)
)
logging.getLogger("stream_risk.engine").debug("debug logging is on")
"""
    env = {**os.environ, "STREAM_RISK_SASL_PASSWORD": canary}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert b"debug logging is on" in p.stderr  # the set-up logs at DEBUG
    assert canary.encode() not in p.stderr + p.stdout
