"""Settings: flags > env STREAM_RISK_* > config file > defaults; nested risk config; secrets."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_risk.config import RiskConfig
from stream_risk.settings import ConfigError, Settings


@pytest.fixture(autouse=True)
def no_stream_risk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("STREAM_RISK_"):
            monkeypatch.delenv(k)


def toml(tmp_path: Path, text: str, name: str = "settings.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults() -> None:
    s = Settings.load()
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert s.bootstrap_servers == "localhost:9092"
    assert s.group_id == "stream-risk" and s.client_id == "stream-risk"
    assert s.emit == "changed" and s.create_topics is False
    assert (s.max_tick_age_s, s.tick_lookback_s) == (60, 300)
    assert (s.topic_positions, s.topic_market_ticks, s.topic_actions, s.topic_dlq) == (
        "positions",
        "market-ticks",
        "risk-actions",
        "risk-dlq",
    )
    assert s.log_level == "INFO" and s.security_protocol == "PLAINTEXT"
    assert s.sasl_password is None
    assert s.risk == RiskConfig()


def test_precedence_flags_over_env_over_file_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = toml(
        tmp_path,
        'group_id = "file"\nclient_id = "file"\nbootstrap_servers = "file:9092"\n',
    )
    # file only
    s = Settings.load(config_file=cfg)
    assert (s.group_id, s.client_id, s.bootstrap_servers) == ("file", "file", "file:9092")
    assert s.http_port == 8080  # default where nobody says otherwise
    # env beats file
    monkeypatch.setenv("STREAM_RISK_GROUP_ID", "env")
    monkeypatch.setenv("STREAM_RISK_CLIENT_ID", "env")
    s = Settings.load(config_file=cfg)
    assert (s.group_id, s.client_id, s.bootstrap_servers) == ("env", "env", "file:9092")
    # a flag beats env; a flag not given (None) does not
    s = Settings.load(config_file=cfg, group_id="flag", client_id=None)
    assert (s.group_id, s.client_id, s.bootstrap_servers) == ("flag", "env", "file:9092")


def test_config_file_from_env_and_flag_beats_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = toml(tmp_path, "http_port = 7001\n", "a.toml")
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"http_port": 7002, "emit": "all"}))
    monkeypatch.setenv("STREAM_RISK_CONFIG_FILE", str(a))
    assert Settings.load().http_port == 7001
    assert Settings().http_port == 7001  # plain construction honours the env too
    s = Settings.load(config_file=b)  # --config wins over the env-named file
    assert (s.http_port, s.emit) == (7002, "all")


def test_nested_risk_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_RISK_RISK__MAX_LOSS_PCT", "0.03")
    monkeypatch.setenv("STREAM_RISK_RISK__MAX_HOLD_MINUTES", "240")
    s = Settings.load()
    assert s.risk.max_loss_pct == 0.03
    assert s.risk.max_hold_minutes == 240
    assert s.risk.max_hedge_cost_bps == RiskConfig().max_hedge_cost_bps  # others default


def test_nested_risk_config_merges_file_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = toml(tmp_path, "[risk]\nmax_loss_pct = 0.04\nmax_hold_minutes = 120\n")
    monkeypatch.setenv("STREAM_RISK_RISK__MAX_LOSS_PCT", "0.01")
    s = Settings.load(config_file=cfg)
    assert (s.risk.max_loss_pct, s.risk.max_hold_minutes) == (0.01, 120)


def test_nested_risk_config_as_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_RISK_RISK", '{"max_hedge_cost_bps": 20}')
    assert Settings.load().risk.max_hedge_cost_bps == 20


@pytest.mark.parametrize("value", ["0", "2", "nan", "lots"])
def test_nested_risk_config_out_of_range_names_the_field(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("STREAM_RISK_RISK__MAX_LOSS_PCT", value)
    with pytest.raises(ValidationError) as e:
        Settings.load()
    assert [err["loc"] for err in e.value.errors()] == [("risk", "max_loss_pct")]


def test_values_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="http_port"):
        Settings.load(http_port=70000)
    with pytest.raises(ValidationError, match="emit"):
        Settings.load(emit="sometimes")
    monkeypatch.setenv("STREAM_RISK_MAX_TICK_AGE_S", "-1")
    with pytest.raises(ValidationError, match="max_tick_age_s"):
        Settings.load()


def test_case_insensitive_enums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_RISK_LOG_LEVEL", "debug")
    monkeypatch.setenv("STREAM_RISK_SECURITY_PROTOCOL", "sasl_ssl")
    s = Settings.load()
    assert (s.log_level, s.security_protocol) == ("DEBUG", "SASL_SSL")


# ---------------------------------------------------------------------- config file errors
def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="bootstrap_server"):
        Settings.load(config_file=toml(tmp_path, 'bootstrap_server = "typo:9092"\n'))


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.load(config_file=tmp_path / "missing.toml")


def test_bad_file_type_and_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        Settings.load(config_file=toml(tmp_path, "x: 1\n", "settings.yaml"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(config_file=toml(tmp_path, "http_port = \n"))
    with pytest.raises(ConfigError, match="top level"):
        Settings.load(config_file=toml(tmp_path, "[1, 2]", "s.json"))


# ---------------------------------------------------------------------- secrets
def test_password_never_from_a_flag() -> None:
    with pytest.raises(ConfigError, match="cannot be given as a flag"):
        Settings.load(sasl_password="hunter2")


def test_password_never_from_the_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STREAM_RISK_SASL_PASSWORD"):
        Settings.load(config_file=toml(tmp_path, 'sasl_password = "hunter2"\n'))


def test_password_from_env_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_RISK_SASL_PASSWORD", "hunter2")
    s = Settings.load()
    assert s.sasl_password_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


def test_password_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    s = Settings.load(sasl_password_file=pw)
    assert s.sasl_password_value() == "hunter2"
    monkeypatch.setenv("STREAM_RISK_SASL_PASSWORD", "other")
    with pytest.raises(ValidationError, match="not both"):
        Settings.load(sasl_password_file=pw)


# ---------------------------------------------------------------------- aiokafka kwargs
def test_kafka_kwargs_plaintext() -> None:
    s = Settings.load(bootstrap_servers="k1:9092,k2:9092", client_id="me")
    assert s.kafka_client_kwargs() == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "client_id": "me",
        "security_protocol": "PLAINTEXT",
    }


def test_kafka_kwargs_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_RISK_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAM_RISK_SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("STREAM_RISK_SASL_USERNAME", "risk")
    with pytest.raises(ConfigError, match="sasl_password"):
        Settings.load().kafka_security_kwargs()
    monkeypatch.setenv("STREAM_RISK_SASL_PASSWORD", "hunter2")
    assert Settings.load().kafka_security_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "risk",
        "sasl_plain_password": "hunter2",
    }


def test_kafka_kwargs_ssl(tmp_path: Path) -> None:
    kw = Settings.load(security_protocol="SSL").kafka_security_kwargs()
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].check_hostname is True
    with pytest.raises(ConfigError, match="no such file"):
        Settings.load(security_protocol="SSL", ssl_cafile=tmp_path / "ca.pem").kafka_client_kwargs()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load the TLS files"):
        Settings.load(security_protocol="SSL", ssl_cafile=junk).kafka_client_kwargs()


def test_commit_interval_from_flag_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_risk.commands import run_arguments
    from stream_risk.service import processor_config

    assert Settings.load().commit_interval_ms == 100
    cfg = toml(tmp_path, "commit_interval_ms = 500\n")
    assert Settings.load(config_file=cfg).commit_interval_ms == 500
    monkeypatch.setenv("STREAM_RISK_COMMIT_INTERVAL_MS", "250")
    s = Settings.load(config_file=cfg)
    assert s.commit_interval_ms == 250
    assert processor_config(s).commit_interval_ms == 250
    assert Settings.load(config_file=cfg, commit_interval_ms=40).commit_interval_ms == 40
    with pytest.raises(ValidationError, match="commit_interval_ms"):
        Settings.load(commit_interval_ms=0)
    import argparse

    p = argparse.ArgumentParser()
    run_arguments(p)
    assert p.parse_args(["--commit-interval-ms", "75"]).commit_interval_ms == 75
