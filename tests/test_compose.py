"""docker-compose.yml, the Prometheus config and the Grafana dashboard, checked against the code
(there is no Docker engine here to run them):

- every metric a Grafana panel (or variable) queries is exported by the engine, read from the
  live `/metrics` of a running sidecar with a real `Metrics`, and every label a query groups
  or filters by is one that metric has;
- the topics kafka-init creates are `DEFAULT_SPECS` (names, partitions, configs), and the
  broker does not auto-create others;
- ports and addresses agree: Kafka's internal listener = the engine's bootstrap servers =
  kafka-init's; the engine's HTTP port = its published port = Prometheus' target = the
  Dockerfile's EXPOSE = the settings' default; Grafana's datasource = the Prometheus service;
- every `STREAM_RISK_*` variable set is a real setting; every mounted file exists;
- as a user runs it (issue 16): the image this repository builds is never pulled from a
  registry (the simulator shares the engine's), Grafana has no default admin password, every
  port is published on 127.0.0.1 only, the engine's token is optional and taken from the
  environment, the TLS proxy forwards to the engine's port, and the header says what
  production needs beyond this file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: a dev dependency
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from stream_risk.kafka.topics import DEFAULT_SPECS
from stream_risk.settings import ENV_PREFIX, Settings
from stream_risk.sidecar import Metrics, StatelessState, create_app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "stream-risk.json"

#: Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"instance", "job", "service"}
#: PromQL words that look like identifiers inside `by (...)` and friends.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = load_yaml(COMPOSE)
    assert isinstance(doc, dict) and "services" in doc
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    import json

    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


class Unset(Exception):
    """A `${VAR:?message}` whose variable is unset: compose stops with the message."""


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """A value as compose interpolates it from `env`: `${VAR}`, `${VAR:-default}`,
    `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, and `$$` for a `$`."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name)
        missing = got is None or (op is not None and op.startswith(":") and got == "")
        if op is not None and op.endswith("?") and missing:
            raise Unset(f"{name}: {arg}")
        if op is not None and op.endswith("-") and missing:
            return arg
        return got or ""

    return _VARIABLE.sub(one, value)


def published(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host address, host port, container port) of each `ports` entry."""
    out = set()
    for entry in service.get("ports") or []:
        *host, container = str(entry).split(":")
        address = host[0] if len(host) == 2 else "0.0.0.0"
        out.add((address, int(host[-1]), int(container)))
    return out


# ---------------------------------------------------------------------- metrics
@pytest.fixture(scope="module")
def exported() -> dict[str, tuple[str, set[str]]]:
    """Sample name -> (family type, its label names), from a live sidecar's `/metrics`."""
    import asyncio

    registry = CollectorRegistry()
    metrics = Metrics.for_registry(registry)

    async def scrape() -> str:
        async with TestClient(TestServer(create_app(StatelessState(), registry))) as c:
            resp = await c.get("/metrics")
            assert resp.status == 200
            return await resp.text()

    text = asyncio.run(scrape())
    labels_of = {
        m._name: set(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    # The engine's state, read when scraped (metrics.StateCollector): its families' labels.
    for fam in metrics.state.collect():
        labels_of[fam.name] = set(getattr(fam, "_labelnames", ()))
    out: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        labels = labels_of.get(family.name, set())
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",),
            "summary": ("_sum", "_count", "_created"),
        }.get(family.type, ("",))
        for suffix in suffixes:
            extra = {"le"} if suffix == "_bucket" else set()
            out[family.name + suffix] = (family.type, labels | extra)
    assert any(name.startswith("stream_risk_") for name in out)
    return out


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, expr, legendFormat) of every panel target and query variable."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels") or [])

    for p in panels(dashboard["panels"]):
        for t in p.get("targets") or []:
            yield f"panel {p['title']!r}", t["expr"], t.get("legendFormat", "")
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            yield f"variable {v['name']!r}", q, ""


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bstream_risk_[a-zA-Z0-9_]+", expr))


def label_names(expr: str, legend: str) -> set[str]:
    """Labels an expression groups by, matches on or shows in its legend."""
    out: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        out |= {w.strip() for w in group.split(",") if w.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        out |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for fn_label in re.findall(r"label_values\([^,]+,\s*([a-zA-Z_]\w*)\)", expr):
        out.add(fn_label)
    out |= set(re.findall(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}", legend))
    return out - PROMQL_WORDS


def test_the_dashboard_covers_what_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(e for _, e, _ in queries(dashboard))
    for needed in (
        "stream_risk_actions_published_total",  # actions by type
        "stream_risk_tick_to_action_seconds_bucket",  # tick -> action latency
        "stream_risk_consumer_lag",  # lag
        "stream_risk_dlq_records_total",  # DLQ rate
        "stream_risk_table_positions",  # table sizes
        "stream_risk_table_assets",
    ):
        assert needed in exprs, needed
    assert "sum by (action) (rate(stream_risk_actions_published_total" in exprs
    assert "histogram_quantile(0.99" in exprs


def test_every_queried_metric_is_exported_with_the_labels_used(
    dashboard: dict[str, Any], exported: dict[str, tuple[str, set[str]]]
) -> None:
    checked = 0
    for where, expr, legend in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: queries no stream_risk metric: {expr}"
        for name in names:
            assert name in exported, f"{where}: {name} is not exported by the engine ({expr})"
            checked += 1
        known = set().union(*(exported[n][1] for n in names)) | TARGET_LABELS
        unknown = label_names(expr, legend) - known
        assert not unknown, f"{where}: labels {sorted(unknown)} not on {sorted(names)}"
    assert checked >= 20


def test_dashboard_panels_use_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    ds = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    [source] = ds["datasources"]
    assert source["type"] == "prometheus"
    for p in dashboard["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": source["uid"]}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == source["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:  # inside the 24-column grid
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0


# ---------------------------------------------------------------------- topics
def created_topics(services: dict[str, Any]) -> dict[str, tuple[int, dict[str, str]]]:
    script = "\n".join(services["kafka-init"]["command"])
    out: dict[str, tuple[int, dict[str, str]]] = {}
    for name, parts, rest in re.findall(r"^\s*create (\S+) (\d+)(.*)$", script, re.M):
        configs = dict(c.split("=", 1) for c in re.findall(r"--config (\S+)", rest))
        out[name] = (int(parts), configs)
    return out


def test_kafka_init_creates_exactly_the_topics_of_the_code(services: dict[str, Any]) -> None:
    topics = created_topics(services)
    expected = {s.name: (s.partitions, dict(s.configs)) for s in DEFAULT_SPECS}
    assert topics == expected
    defaults = Settings.load()
    for name in (
        defaults.topic_positions,
        defaults.topic_market_ticks,
        defaults.topic_actions,
        defaults.topic_dlq,
    ):
        assert name in topics
    kafka_env = env_of(services["kafka"])
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    init = services["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["restart"] == "no"


# ---------------------------------------------------------------------- addresses and ports
def listeners(value: str) -> dict[str, str]:
    return dict(item.split("://", 1) for item in value.split(","))


def test_engine_reaches_kafka_on_its_internal_listener(services: dict[str, Any]) -> None:
    kafka = env_of(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert not any("zookeeper" in s for s in services)
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    internal = advertised[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    engine = env_of(services["engine"])
    assert engine["STREAM_RISK_BOOTSTRAP_SERVERS"] == internal
    assert f"--bootstrap-server {internal}" in "\n".join(services["kafka-init"]["command"])
    assert env_of(services["simulator"])["STREAM_RISK_BOOTSTRAP_SERVERS"] == internal
    # The host listener is published on the same port it advertises.
    host = advertised["EXTERNAL"]
    assert host.startswith("localhost:")
    host_port = int(host.split(":")[1])
    assert ("127.0.0.1", host_port, host_port) in published(services["kafka"])
    engine_deps = services["engine"]["depends_on"]
    assert engine_deps["kafka-init"]["condition"] == "service_completed_successfully"


def test_http_port_agrees_everywhere(services: dict[str, Any]) -> None:
    engine_env = env_of(services["engine"])
    port = int(engine_env["STREAM_RISK_HTTP_PORT"])
    assert port == Settings.model_fields["http_port"].default == 8080
    assert engine_env["STREAM_RISK_HTTP_HOST"] == "0.0.0.0"  # reachable from other containers
    assert published(services["engine"]) == {("127.0.0.1", port, port)}
    prom = load_yaml(PROMETHEUS)
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "stream-risk"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"engine:{port}"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.M)
    assert f"STREAM_RISK_HTTP_PORT={port}" in dockerfile
    assert f"127.0.0.1:{port}/healthz" in dockerfile
    assert f"127.0.0.1:{port}/healthz" in str(services["engine"]["healthcheck"]["test"])


def test_grafana_reads_the_prometheus_service(services: dict[str, Any]) -> None:
    ds = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    [source] = ds["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert published(services["prometheus"]) == {("127.0.0.1", 9090, 9090)}
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "stream-risk.yml")
    [provider] = providers["providers"]
    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"] if v[0] == "."
    }
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/" + DASHBOARD.name


def test_every_mounted_file_exists(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
        build = svc.get("build")
        if build is not None:
            assert (ROOT / (build if isinstance(build, str) else build["context"])).is_dir()
            assert (ROOT / "Dockerfile").is_file()


def test_every_stream_risk_variable_is_a_setting(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name, svc in services.items():
        env = {k: v for k, v in env_of(svc).items() if k.startswith(ENV_PREFIX)}
        assert set(env) <= fields, f"{name}: unknown settings {set(env) - fields}"
        for k in list(os.environ):
            if k.startswith(ENV_PREFIX):
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, interpolate(v, {}))  # as `docker compose up` with no env
        s = Settings.load()  # valid values (raises otherwise)
        if "STREAM_RISK_HTTP_PORT" in env:
            assert s.http_port == int(env["STREAM_RISK_HTTP_PORT"])


def test_the_image_runs_the_engine_and_ships_the_dashboard() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["stream-risk"\]$', dockerfile, re.M)
    assert re.search(r'^CMD \["run"\]$', dockerfile, re.M)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["stream-risk"] == "stream_risk.cli:main"
    # A non-editable install (the image) must carry the page's files.
    patterns = pyproject["tool"]["setuptools"]["package-data"]["stream_risk"]
    from fnmatch import fnmatch

    for f in (ROOT / "stream_risk" / "sidecar" / "static").iterdir():
        rel = f.relative_to(ROOT / "stream_risk").as_posix()
        assert any(fnmatch(rel, p) for p in patterns), f"{rel} is not package data: {patterns}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "stream_risk" not in ignored and ".venv" in ignored


# ---------------------------------------------------------------------- as a user runs it
def test_the_image_built_here_is_never_pulled(services: dict[str, Any]) -> None:
    """`docker compose up` pulls a missing `image:` even beside `build:` unless told not to:
    the engine builds it (`pull_policy: build`) and the simulator runs that same image
    (`pull_policy: never`), so a registry's `stream-risk:latest` never runs here."""
    engine = services["engine"]
    assert engine["build"] == "." and engine["pull_policy"] == "build"
    ours = engine["image"]
    users = {name for name, svc in services.items() if svc.get("image") == ours}
    assert users == {"engine", "simulator"}
    simulator = services["simulator"]
    assert simulator["pull_policy"] == "never"
    assert "engine" in simulator["depends_on"]  # built (by the engine) before it starts
    assert simulator["profiles"] == ["simulator"]
    # Every other image names a registry image with a pinned version.
    for name, svc in services.items():
        if svc.get("image") != ours:
            image = svc["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


def test_grafana_has_no_default_admin_password(services: dict[str, Any]) -> None:
    raw = env_of(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"]
    with pytest.raises(Unset, match="GRAFANA_ADMIN_PASSWORD") as unset:
        interpolate(raw, {})
    assert "openssl rand" in str(unset.value)  # the error says how to make one
    with pytest.raises(Unset):
        interpolate(raw, {"GRAFANA_ADMIN_PASSWORD": ""})
    assert interpolate(raw, {"GRAFANA_ADMIN_PASSWORD": "s3cret-pw"}) == "s3cret-pw"
    text = COMPOSE.read_text()
    assert ":-admin" not in text and "admin/admin" not in text


def test_every_port_is_published_on_localhost_only(services: dict[str, Any]) -> None:
    ports = {name: published(svc) for name, svc in services.items() if svc.get("ports")}
    assert set(ports) == {"kafka", "engine", "prometheus", "grafana", "proxy"}
    for name, entries in ports.items():
        for address, _, _ in entries:
            assert address == "127.0.0.1", f"{name} is published on {address}"


def test_the_engine_token_is_optional_and_from_the_environment(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = env_of(services["engine"])["STREAM_RISK_HTTP_TOKEN"]
    assert raw == "${STREAM_RISK_HTTP_TOKEN:-}"  # no token written in the file
    for k in list(os.environ):
        if k.startswith(ENV_PREFIX):
            monkeypatch.delenv(k)
    monkeypatch.setenv("STREAM_RISK_HTTP_TOKEN", interpolate(raw, {}))
    assert Settings.load().http_token_value() is None  # unset on the host: no auth
    token = "a-token-of-32-characters-0123456"
    monkeypatch.setenv(
        "STREAM_RISK_HTTP_TOKEN", interpolate(raw, {"STREAM_RISK_HTTP_TOKEN": token})
    )
    settings = Settings.load()
    assert settings.http_token_value() == token
    # What compose and Prometheus call stays open with a token: the engine's healthcheck and
    # the scrape (unless the engine asks for the token on /metrics, which Prometheus lacks).
    from stream_risk.sidecar.auth import HttpAuth

    auth = HttpAuth(token, metrics_auth=settings.http_metrics_auth)
    assert auth.is_open("/healthz") and "/healthz" in str(services["engine"]["healthcheck"])
    prom = load_yaml(PROMETHEUS)
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "stream-risk"]
    assert auth.is_open(job.get("metrics_path", "/metrics")) or "authorization" in job


def caddy_sites(text: str) -> dict[str, list[str]]:
    """Each top-level site block of a Caddyfile: its address -> its directive lines."""
    sites: dict[str, list[str]] = {}
    current: list[str] | None = None
    depth = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if depth == 0 and line.endswith("{"):
            address = line[:-1].strip()
            current = sites.setdefault(address, []) if address else None
        elif depth == 1 and current is not None and line != "}":
            current.append(line)
        depth += line.count("{") - line.count("}")
    assert depth == 0, "unbalanced braces in the Caddyfile"
    return sites


def test_the_tls_proxy_forwards_to_the_engine(services: dict[str, Any]) -> None:
    proxy = services["proxy"]
    assert proxy["profiles"] == ["tls"]
    assert proxy["image"].startswith("caddy:")
    assert "engine" in proxy["depends_on"]
    [(_, host_port, container_port)] = published(proxy)
    assert container_port == 443 and host_port != 8080
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    caddyfile = ROOT / mounts["/etc/caddy/Caddyfile"]
    sites = caddy_sites(caddyfile.read_text())
    [(site, directives)] = sites.items()
    assert site.startswith("https://")
    port = int(env_of(services["engine"])["STREAM_RISK_HTTP_PORT"])
    assert f"reverse_proxy engine:{port}" in directives
    assert "tls internal" in directives  # localhost: Caddy's own CA, no ACME


def test_the_header_says_what_production_needs() -> None:
    header = []
    for line in COMPOSE.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = " ".join(" ".join(header).replace("#", " ").split())
    for needed in (
        "replication factor 3",
        "min.insync.replicas 2",
        "retention",
        "TLS and SASL",
        "STREAM_RISK_HTTP_TOKEN",
        "GRAFANA_ADMIN_PASSWORD",
        "--profile tls",
    ):
        assert needed in text, needed
