"""Process settings (DESIGN §7): command-line flags > env `STREAM_RISK_*` > config file > defaults.

    settings = Settings.load(config_file=None, http_port=9000)   # keyword args = flags

- Env: `STREAM_RISK_<FIELD>`, e.g. `STREAM_RISK_BOOTSTRAP_SERVERS=kafka:9092`; the nested
  risk config as `STREAM_RISK_RISK__MAX_LOSS_PCT=0.03` (or `STREAM_RISK_RISK='{"...": ...}'`).
- Config file: `--config FILE` (the `config_file` argument of `load`) or env
  `STREAM_RISK_CONFIG_FILE`; TOML (`.toml`) or JSON (`.json`), top-level keys = field names,
  the risk config under `[risk]`. Unknown keys are errors, so a typo never passes silently.
- Flags: the keyword arguments of `Settings.load`; `None` means "flag not given".
- Secrets: `sasl_password` comes from env `STREAM_RISK_SASL_PASSWORD` or from the file named
  by `sasl_password_file`, never from a flag (visible in `ps`) nor from the config file.
  Likewise the sidecar's bearer token: env `STREAM_RISK_HTTP_TOKEN` or `http_token_file`
  (`http_token_value()`; docs/design.md D22).

Kafka client arguments: `kafka_client_kwargs()` (bootstrap servers, client id and security)
splats into `AIOKafkaConsumer`, `AIOKafkaProducer` and `AIOKafkaAdminClient`;
`kafka_security_kwargs()` is the security part alone.
"""

from __future__ import annotations

import json
import os
import ssl
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from stream_risk.config import RiskConfig
from stream_risk.engine.estimates import MarketDefaults, VolEstimator

ENV_PREFIX: Final = "STREAM_RISK_"
CONFIG_FILE_ENV: Final = ENV_PREFIX + "CONFIG_FILE"
#: Fields that must never come from a command-line flag or the config file.
SECRET_FIELDS: Final = frozenset({"sasl_password", "http_token"})
#: Where each secret may come from instead (said when one is given where it may not be).
_SECRET_SOURCES: Final = {
    "sasl_password": f"{ENV_PREFIX}SASL_PASSWORD or sasl_password_file",
    "http_token": f"{ENV_PREFIX}HTTP_TOKEN or http_token_file",
}
#: The sidecar's bearer token: at least this many characters, visible ASCII (D22).
HTTP_TOKEN_MIN_LENGTH: Final = 16


def _secret_sources(fields: set[str] | frozenset[str]) -> str:
    return " / ".join(_SECRET_SOURCES[f] for f in sorted(fields))


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
#: Every codec Kafka defines (the engine reads all of them, and writes the one chosen).
COMPRESSION_CODECS: Final = ("none", "gzip", "snappy", "lz4", "zstd")
#: The engine's own output (docs/operations.md "Compression"): actions are repetitive JSON,
#: ~7x smaller with zstd, which aiokafka also writes faster than lz4 (its lz4 is level 9).
DEFAULT_COMPRESSION: Final = "zstd"


class ConfigError(ValueError):
    """A configuration problem worded for the operator (what is wrong, what to do)."""


_config_file: ContextVar[Path | None] = ContextVar("stream_risk_config_file", default=None)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML or JSON file, as a dict (raises ConfigError)."""
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"config file {path}: use a .toml or .json file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"config file {path}: cannot read it ({exc.strerror or exc}); check the path "
            f"given to --config or {CONFIG_FILE_ENV}"
        ) from None
    try:
        data: Any = tomllib.loads(raw.decode()) if suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a table/object")
    leaked = SECRET_FIELDS & data.keys()
    if leaked:
        raise ConfigError(
            f"config file {path}: {', '.join(sorted(leaked))} is not read from the config file; "
            f"set {_secret_sources(leaked)} instead"
        )
    return data


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The optional config file: `Settings.load(config_file=...)`, else env CONFIG_FILE."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole file

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get()
        if path is None:
            env = os.environ.get(CONFIG_FILE_ENV)
            if not env:
                return {}
            path = Path(env)
        return read_config_file(path)


@contextmanager
def _using_config_file(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


class Settings(BaseSettings):
    """Everything a `stream-risk` process is configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # HTTP sidecar
    http_host: str = Field("127.0.0.1", description="Sidecar listen address.")
    http_port: int = Field(8080, ge=0, le=65535, description="Sidecar port (0 = any free).")
    # Optional bearer-token auth on the sidecar (docs/design.md D22): off unless a token is set.
    http_token: SecretStr | None = Field(
        None,
        description="Sidecar bearer token: from env STREAM_RISK_HTTP_TOKEN only (empty = "
        "unset); or use http_token_file.",
    )
    http_token_file: Path | None = Field(None, description="File holding the sidecar token.")
    http_metrics_auth: bool = Field(
        False,
        description="With a token set, /metrics needs it too (default: open for Prometheus).",
    )

    # Kafka
    bootstrap_servers: str = Field("localhost:9092", min_length=1, description="HOST:PORT[,...]")
    group_id: str = Field("stream-risk", min_length=1, description="Positions consumer group.")
    client_id: str = Field("stream-risk", min_length=1, description="Kafka client id.")
    topic_positions: str = Field("positions", min_length=1)
    topic_market_ticks: str = Field("market-ticks", min_length=1)
    topic_actions: str = Field("risk-actions", min_length=1)
    topic_dlq: str = Field("risk-dlq", min_length=1)
    topic_config: str = Field("risk-config", min_length=1, description="Live limits (D9).")
    topic_alerts: str = Field("risk-alerts", min_length=1, description="Alerts (D9).")
    topic_book_partials: str = Field(
        "risk-book-partials",
        min_length=1,
        description="Internal: each positions partition's contribution per asset (D17).",
    )
    topic_book: str = Field(
        "risk-book", min_length=1, description="Net position and advice per asset (D17)."
    )
    create_topics: bool = Field(False, description="Create missing topics at start.")
    compression: Compression = Field(
        DEFAULT_COMPRESSION,
        description="Compression of the batches the engine produces (every codec is read).",
    )
    commit_interval_ms: int = Field(
        100,
        ge=1,
        le=60_000,
        description="Checkpoint every this many ms: await the acks of what was produced, "
        "then commit the positions offsets (docs/design.md D15).",
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        le=300_000,
        description="Consumer group session: a member silent this long loses its "
        "partitions (heartbeats every tenth of it).",
    )
    processing_guarantee: Literal["exactly-once", "at-least-once", "auto"] = Field(
        "auto",
        description="exactly-once: each checkpoint's records and positions offsets commit "
        "in Kafka transactions (one per positions partition); at-least-once: acks, then "
        "the commit; auto: exactly-once where the broker supports transactions "
        "(docs/design.md D19).",
    )

    # Engine
    emit: Literal["changed", "all"] = Field(
        "changed", description="Publish on a material change (changed) or every assessment."
    )
    max_tick_age_s: float = Field(
        60.0, gt=0, allow_inf_nan=False, description="A tick older than this is stale."
    )
    tick_lookback_s: float = Field(
        300.0, ge=0, allow_inf_nan=False, description="Ticks re-read at start (look-back)."
    )
    # What the engine uses where the feed gives nothing (docs/design.md D12); replay's
    # flags of the same names override these for a backtest.
    estimate_vol: bool = Field(
        True, description="Estimate volatility_1d from prices while the feed gives none."
    )
    vol_window: float = Field(
        60.0, ge=1, allow_inf_nan=False, description="EWMA span of the vol estimate, in returns."
    )
    vol_min_obs: int = Field(
        20, ge=1, le=10_000, description="Returns needed before the vol estimate is used."
    )
    default_spread_bps: float | None = Field(
        2.0,
        ge=0,
        le=10_000,
        allow_inf_nan=False,
        description="spot_spread_bps until the feed gives one (null: wait for the feed's).",
    )
    default_funding: float = Field(
        0.0, ge=-100, le=100, allow_inf_nan=False, description="perp_funding_rate default."
    )
    default_depth_usd: float = Field(
        1_000_000.0, gt=0, le=1e18, allow_inf_nan=False, description="bid/ask depth default."
    )
    alert_webhook: str | None = Field(
        None, description="POST every alert (JSON) to this URL, off the engine's path."
    )
    alert_dlq_per_minute: float = Field(
        10.0, ge=0, allow_inf_nan=False, description="DLQ records a minute that alert."
    )
    risk: RiskConfig = Field(
        default_factory=RiskConfig, description="Engine-wide risk config (the defaults)."
    )

    log_level: LogLevel = "INFO"

    # Kafka security
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(
        None, description="From env STREAM_RISK_SASL_PASSWORD only; or use sasl_password_file."
    )
    sasl_password_file: Path | None = Field(None, description="File holding the SASL password.")
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @field_validator("log_level", "security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("compression", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_password_source(self) -> Settings:
        if self.sasl_password is not None and self.sasl_password_file is not None:
            raise ValueError("set either STREAM_RISK_SASL_PASSWORD or sasl_password_file, not both")
        if self.http_token is not None and self.http_token.get_secret_value() == "":
            self.http_token = None  # an empty env var (e.g. compose's `${VAR:-}`): no token
        if self.http_token is not None and self.http_token_file is not None:
            raise ValueError("set either STREAM_RISK_HTTP_TOKEN or http_token_file, not both")
        return self

    def market_defaults(self) -> MarketDefaults:
        return MarketDefaults(
            self.default_spread_bps,
            self.default_funding,
            self.default_depth_usd,
            self.default_depth_usd,
        )

    def vol_estimator(self) -> VolEstimator | None:
        return VolEstimator(self.vol_window, self.vol_min_obs) if self.estimate_vol else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags (init kwargs) > env > config file > field defaults.
        return init_settings, env_settings, _ConfigFileSource(settings_cls)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **flags: Any) -> Settings:
        """Settings from flags (keyword args; None = not given) > env > file > defaults.

        Raises ConfigError (file problems, a secret passed as a flag) or pydantic's
        ValidationError (a value out of range, naming the field).
        """
        given = {k: v for k, v in flags.items() if v is not None}
        leaked = SECRET_FIELDS & given.keys()
        if leaked:
            raise ConfigError(
                f"{', '.join(sorted(leaked))} cannot be given as a flag (it would show in the "
                f"process list): set {_secret_sources(leaked)}"
            )
        path = Path(config_file) if config_file is not None else None
        with _using_config_file(path):
            return cls(**given)

    # ------------------------------------------------------------------ Kafka arguments
    def sasl_password_value(self) -> str | None:
        """The SASL password: env, else the password file (trailing newline dropped)."""
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is None:
            return None
        try:
            return self.sasl_password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"sasl_password_file {self.sasl_password_file}: cannot read it "
                f"({exc.strerror or exc})"
            ) from None

    def http_token_value(self) -> str | None:
        """The sidecar's bearer token (None: auth off): env, else the token file, whose
        surrounding whitespace is dropped. Raises ConfigError, never showing the token, for
        a file that cannot be read or is empty, and for a token that is too short or holds
        characters a header cannot carry."""
        if self.http_token is not None:
            token, source = self.http_token.get_secret_value(), f"{ENV_PREFIX}HTTP_TOKEN"
        elif self.http_token_file is not None:
            path = self.http_token_file
            source = f"http_token_file {path}"
            try:
                token = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(
                    f"{source}: cannot read it ({why or exc}); check the path given to "
                    f"--http-token-file or {ENV_PREFIX}HTTP_TOKEN_FILE"
                ) from None
            if not token:
                raise ConfigError(
                    f"{source} is empty: write the token in it, e.g. "
                    f"`openssl rand -hex 32 > {path}`"
                )
        else:
            return None
        if not all("!" <= c <= "~" for c in token):
            raise ConfigError(
                f"the sidecar token ({source}) holds a space or a character outside visible "
                "ASCII, which an Authorization header cannot carry: use e.g. "
                "`openssl rand -hex 32`"
            )
        if len(token) < HTTP_TOKEN_MIN_LENGTH:
            raise ConfigError(
                f"the sidecar token ({source}) has {len(token)} characters: use at least "
                f"{HTTP_TOKEN_MIN_LENGTH} (e.g. `openssl rand -hex 32`)"
            )
        return token

    def kafka_security_kwargs(self) -> dict[str, Any]:
        """aiokafka's security arguments (raises ConfigError when incomplete)."""
        protocol = self.security_protocol
        kw: dict[str, Any] = {"security_protocol": protocol}
        if protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                p = getattr(self, name)
                if p is not None and not p.is_file():
                    raise ConfigError(f"{name} {p}: no such file")
            if self.ssl_keyfile is not None and self.ssl_certfile is None:
                raise ConfigError("ssl_keyfile is set without ssl_certfile: set both")
            try:
                # No ssl_cafile: the system's default CAs.
                ctx = create_ssl_context(
                    cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
                )
            except ssl.SSLError as exc:
                raise ConfigError(
                    f"cannot load the TLS files (ssl_cafile/ssl_certfile/ssl_keyfile): {exc}"
                ) from None
            ctx.check_hostname = self.ssl_check_hostname
            kw["ssl_context"] = ctx
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            password = self.sasl_password_value()
            missing = [
                name
                for name, value in (
                    ("sasl_mechanism", self.sasl_mechanism),
                    ("sasl_username", self.sasl_username),
                    (
                        "sasl_password (env STREAM_RISK_SASL_PASSWORD or sasl_password_file)",
                        password,
                    ),
                )
                if not value
            ]
            if missing:
                raise ConfigError(f"security_protocol {protocol} needs {', '.join(missing)}")
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = password
        return kw

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """bootstrap_servers, client_id and the security arguments, for any aiokafka client."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            **self.kafka_security_kwargs(),
        }
