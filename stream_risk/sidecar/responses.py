"""Pydantic models of the sidecar's answers that have none in `stream_risk.models`: the
error bodies, `/healthz`, `/readyz`, `/positions`, `/config`, `/exposure` and `/book`.

They describe; the handlers do not build their answers through them (they write dicts with
orjson, for speed). They exist for `GET /openapi.json` (`stream_risk.sidecar.openapi`,
docs/design.md D21), and a test validates the real answers of a running sidecar against
the schemas made from them.

Every model here allows fields it does not name (`additionalProperties` is true): a field
added to an answer later does not break a client that validates against the document.
Only what every variant of an answer carries is required (e.g. `/exposure` summed from rows
by `serve` has `priced_by` but no `price`; the engine's has `price` but no `priced_by`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stream_risk.config import RiskConfig
from stream_risk.models import Action, BookRecord, HedgeOut, RiskAction

Mode = Literal["engine", "stateless"]


class _Open(BaseModel):
    """An answer's shape: the fields named here, and any other."""

    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------- errors
class FieldError(_Open):
    """One bad field or query parameter, and what to do about it."""

    field: str = Field(description="Dotted path of the field (`body`: the body as a whole).")
    message: str = Field(description="What is wrong and what to send instead.")
    type: str = Field(description="Kind of error, e.g. `missing`, `less_than_equal`, `range`.")


class InvalidRequest(_Open):
    """422 (and 413): every bad field named at once."""

    error: str = Field(examples=["invalid request"])
    detail: list[FieldError]


class TooLarge(InvalidRequest):
    """413: the body is over the sidecar's limit (`--max-body-bytes`)."""

    limit_bytes: int


class ErrorOut(_Open):
    """A 404, 405, 409 or 500: what went wrong and what to do, in `detail`."""

    error: str
    detail: str


class NotFound(ErrorOut):
    """404 of an unknown path: the endpoints there are."""

    endpoints: list[str]


# ---------------------------------------------------------------------- probes
class Health(_Open):
    status: Literal["ok"]


class Readiness(_Open):
    """200 when ready, 503 when not, with the reasons an operator reads."""

    ready: bool
    mode: Mode = Field(description="`engine` (stream-risk run) or `stateless` (serve).")
    reasons: list[str] = Field(description="Why it is not ready; empty when ready.")


# ---------------------------------------------------------------------- positions
class PositionRow(_Open):
    """A position of the table with its latest action (null until its market is known)."""

    position_id: str
    asset: str
    size: float | None = Field(None, description="Units: + long, − short.")
    entry_price: float | None = None
    position_ts: int | None = Field(None, description="ts (epoch ms) of its latest update.")
    tick_ts: int | None = Field(None, description="ts of the tick its action used.")
    waiting_for: list[str] | None = Field(
        None, description="Market inputs it waits for before a first action ([]: none)."
    )
    waiting: dict[str, Any] | None = Field(None, description="Why it waits, per input.")
    estimated_inputs: list[str] | None = None
    next_evaluation_ts: int | None = None
    latest_action: RiskAction | None = Field(
        None, description="Its latest `risk-actions` record (null: no action yet)."
    )


class NetAdvice(_Open):
    """The whole book's net position of an asset, assessed (book stage on)."""

    action: Action
    hedge_pct: float
    risk_score: float
    suggested_hedge: HedgeOut | None


class AssetExposure(_Open):
    """Net exposure of one asset: notional and the P&L of the four moves, unhedged and
    hedged as advised."""

    positions: int
    long: int | None = Field(None, description="Long positions.")
    short: int | None = Field(None, description="Short positions.")
    price: float | None = Field(None, description="Price used (null: no tick yet).")
    net_notional_usd: float = Field(description="+ long, − short.")
    gross_notional_usd: float
    long_notional_usd: float | None = None
    short_notional_usd: float | None = None
    hedged_notional_usd: float | None = None
    pnl_down_5pct: float
    pnl_down_2pct: float
    pnl_up_2pct: float
    pnl_up_5pct: float
    hedged_pnl_down_5pct: float | None = None
    hedged_pnl_down_2pct: float | None = None
    hedged_pnl_up_2pct: float | None = None
    hedged_pnl_up_5pct: float | None = None
    priced_by: str | None = Field(None, description="`tick`, `last_action` or `none`.")
    net_advice: NetAdvice | None = Field(None, description="Book stage on: the net advice.")
    saving_usd: float | None = Field(
        None, description="Book stage on: hedging each position alone − the net advice's cost."
    )


class PositionsFilter(_Open):
    asset: str | None
    action: Action | None
    min_score: float | None
    max_score: float | None


class PositionsPage(_Open):
    """`GET /positions`: a page of the table in position-id order."""

    positions: list[PositionRow]
    mode: Mode
    count: int = Field(description="Rows in this page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: end.")
    partial: bool = Field(
        description="The scan budget ended the page early: fewer rows than `limit`, go on "
        "with `next_cursor`."
    )
    scanned: int
    limit: int
    filter: PositionsFilter
    total: int = Field(description="Positions in the table (of `asset` when filtered).")
    exposure: dict[str, AssetExposure] = Field(
        description="Per asset of the page's rows (or of the filter's asset)."
    )


# ---------------------------------------------------------------------- config
class ScopeConfig(_Open):
    overrides: dict[str, Any]
    offset: int = Field(description="Offset of its risk-config record.")
    effective: RiskConfig


class ConfigView(_Open):
    """`GET /config`: the config in force per scope and its history of changes (D9)."""

    mode: Mode
    defaults: RiskConfig
    precedence: list[str] | None = None
    scopes: dict[str, ScopeConfig] = Field(description="`global`, `asset:<A>`, `position:<ID>`.")
    history: list[dict[str, Any]] = Field(
        description="risk-config records as read: scope, value, offset, ts, status "
        "(`applied` or `rejected`, with its `error`)."
    )


# ---------------------------------------------------------------------- exposure, book
class BookTotals(_Open):
    positions: int
    net_notional_usd: float
    gross_notional_usd: float
    pnl_down_5pct: float
    pnl_down_2pct: float
    pnl_up_2pct: float
    pnl_up_5pct: float


class ExposureView(_Open):
    """`GET /exposure`: per asset and for the book, the limits and their breaches."""

    mode: Mode
    scope: Literal["book", "instance"] = Field(
        description="`book`: the whole book (book stage on); `instance`: this instance's "
        "positions only."
    )
    assets: dict[str, AssetExposure]
    book: BookTotals
    limits: dict[str, Any]
    breaches: list[dict[str, Any]]


class BookView(_Open):
    """`GET /book`: every asset's latest `risk-book` record."""

    scope: Literal["book"]
    assets: dict[str, BookRecord]


__all__ = [
    "AssetExposure",
    "BookView",
    "ConfigView",
    "ErrorOut",
    "ExposureView",
    "FieldError",
    "Health",
    "InvalidRequest",
    "NotFound",
    "PositionRow",
    "PositionsPage",
    "Readiness",
    "TooLarge",
]
