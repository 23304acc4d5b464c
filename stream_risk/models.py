"""Pydantic models of every message at the edges: `/assess` request and response, the
`positions` and `market-ticks` records, the `risk-actions` and `risk-book` records
(DESIGN §1, §2, §13).

These validate input once at the edge; the hot path works on plain floats. JSON Schemas in
`schemas/` are generated from these models (`make schemas`) and a test fails on drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stream_risk.config import RiskConfigPatch

SCHEMA_VERSION = 1

#: Magnitude bounds that keep every product of the model finite and meaningful.
MAX_SIZE = 1e15
MAX_PRICE = 1e12
MAX_USD = 1e18
MAX_MINUTES = 1e9
MAX_TS_MS = 10**14  # year ~5138: a ts beyond it is a unit error (µs or ns), not a date


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


# ---------------------------------------------------------------- /assess request
class PositionIn(_Strict):
    """A position as the reference REST API takes it."""

    asset: str = Field(min_length=1, max_length=64, description="Asset symbol, e.g. BTC.")
    size: float = Field(
        ge=-MAX_SIZE, le=MAX_SIZE, description="Position size in units: + long, - short."
    )
    entry_price: float = Field(gt=0, le=MAX_PRICE, description="Average entry price, USD.")
    age_minutes: float = Field(0, ge=0, le=MAX_MINUTES, description="Minutes held so far.")
    unrealized_pnl: float | None = Field(
        None,
        ge=-MAX_USD,
        le=MAX_USD,
        description="Unrealized P&L, USD; when absent, size × (current_price − entry_price).",
    )


class MarketIn(_Strict):
    """Market conditions of the position's asset."""

    current_price: float = Field(gt=0, le=MAX_PRICE, description="Current price, USD.")
    volatility_1d: float = Field(ge=0, le=1, description="1-day volatility, decimal (0.05=5%).")
    spot_spread_bps: float = Field(ge=0, le=10_000, description="Spot bid-ask spread, bps.")
    perp_funding_rate: float = Field(
        0.0, ge=-100, le=100, description="Annualised perp funding rate, decimal."
    )
    bid_depth_usd: float = Field(1_000_000, gt=0, le=MAX_USD, description="Bid depth at 1%, USD.")
    ask_depth_usd: float = Field(1_000_000, gt=0, le=MAX_USD, description="Ask depth at 1%, USD.")


class AssessRequest(_Strict):
    """Body of `POST /assess`: the reference shape. `config` may set any model constant."""

    position: PositionIn
    market: MarketIn
    config: RiskConfigPatch | None = Field(
        None, description="Overrides of any RiskConfig field, on top of the server's config."
    )


# ---------------------------------------------------------------- /assess response
class HedgeOut(BaseModel):
    instrument: Literal["spot_sell", "spot_buy", "perp_short", "perp_long"]
    size: float
    spread_cost_usd: float
    funding_cost_1d_usd: float
    total_cost_usd: float
    total_cost_bps: float


class PnLScenariosOut(BaseModel):
    move_down_5pct: float
    move_down_2pct: float
    move_up_2pct: float
    move_up_5pct: float
    hedged_down_5pct: float
    hedged_down_2pct: float
    hedged_up_2pct: float
    hedged_up_5pct: float


class RiskBreakdownOut(BaseModel):
    loss_severity: float = Field(description="Points from potential loss (0..loss_weight).")
    position_age: float = Field(description="Points from holding time (0..age_weight).")
    volatility_regime: float = Field(description="Points from volatility (0..vol_extreme_points).")
    size_vs_liquidity: float = Field(description="Points from size vs depth (0..liquidity_weight).")
    total: float = Field(description="The risk score: the four, clamped to 0..100.")


Action = Literal["HOLD", "REDUCE", "HEDGE_PARTIAL", "HEDGE_FULL", "LIQUIDATE"]


class AssessResponse(BaseModel):
    """Response of `POST /assess`: the reference fields, plus `risk_breakdown`, `reason_code`."""

    action: Action
    hedge_pct: float
    risk_score: float
    reasoning: str
    suggested_hedge: HedgeOut | None
    pnl_scenarios: PnLScenariosOut
    position_notional_usd: float
    current_unrealized_pnl: float
    re_evaluate_minutes: int
    version: str
    ts_ms: int
    risk_breakdown: RiskBreakdownOut
    reason_code: str


# ---------------------------------------------------------------- topic records
class PositionMessage(_Strict):
    """A record of the `positions` topic (key = position_id; a null value closes it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)

    position_id: str | None = Field(
        None, min_length=1, max_length=256, description="Defaults to the asset."
    )
    asset: str = Field(min_length=1, max_length=64)
    size: float = Field(ge=-MAX_SIZE, le=MAX_SIZE)
    entry_price: float = Field(gt=0, le=MAX_PRICE)
    ts: int | None = Field(
        None, ge=0, le=MAX_TS_MS, description="Epoch ms of the update; else the record's time."
    )
    opened_at: int | None = Field(None, ge=0, le=MAX_TS_MS, description="Epoch ms it opened.")
    age_minutes: float | None = Field(
        None, ge=0, le=MAX_MINUTES, description="Age as of `ts` (used when opened_at is absent)."
    )
    unrealized_pnl: float | None = Field(None, ge=-MAX_USD, le=MAX_USD)
    config: RiskConfigPatch | None = Field(
        None, description="Per-position overrides of any RiskConfig field."
    )


class MarketTick(_Strict):
    """A record of `market-ticks` (key = asset). A missing field keeps its last value."""

    asset: str = Field(min_length=1, max_length=64)
    ts: int = Field(ge=0, le=MAX_TS_MS, description="Event time, epoch ms.")
    current_price: float = Field(gt=0, le=MAX_PRICE)
    volatility_1d: float | None = Field(None, ge=0, le=1)
    spot_spread_bps: float | None = Field(None, ge=0, le=10_000)
    perp_funding_rate: float | None = Field(None, ge=-100, le=100)
    bid_depth_usd: float | None = Field(None, gt=0, le=MAX_USD)
    ask_depth_usd: float | None = Field(None, gt=0, le=MAX_USD)


Trigger = Literal["position", "tick", "timer", "config"]

#: Why an action was taken (docs/operations.md, "Reason codes").
ReasonCode = Literal[
    "SCORE_LOW",
    "SCORE_LOW_MODERATE",
    "SCORE_MODERATE",
    "SCORE_HIGH",
    "SCORE_CRITICAL",
    "HEDGE_TOO_EXPENSIVE",
    "FLAT_POSITION",
    "STALE_MARKET_DATA",
    "HYSTERESIS_HOLD",
]


class DecisionInputs(BaseModel):
    """What the assessment used: `POST /assess` with these gives the same numbers."""

    position: PositionIn
    market: MarketIn
    config: dict[str, Any] = Field(
        description="The effective config's fields that differ "
        "from the defaults (the `config` of an /assess request)."
    )


class RecordRef(BaseModel):
    topic: str
    partition: int
    offset: int


class ActionLineage(BaseModel):
    position: RecordRef = Field(description="The positions record the action used.")
    tick: RecordRef = Field(description="The latest market-ticks record of the market used.")


class RiskAction(AssessResponse):
    """A record of `risk-actions` (key = position_id; null after a close)."""

    schema_version: int = SCHEMA_VERSION
    position_id: str
    asset: str
    trigger: Trigger
    event_ts: int = Field(description="Event time (ms) the assessment is as of.")
    tick_ts: int = Field(description="ts of the market tick used.")
    position_ts: int = Field(description="ts of the position update used.")
    assessed_at: int = Field(description="Wall clock (ms) when assessed.")
    stale_market_data: bool
    estimated_inputs: list[
        Literal[
            "volatility_1d",
            "spot_spread_bps",
            "perp_funding_rate",
            "bid_depth_usd",
            "ask_depth_usd",
        ]
    ] = Field(
        default_factory=list,
        description="Market inputs the feed did not give: volatility_1d estimated from "
        "the prices, the others at their configured defaults ([]: all from the feed).",
    )
    next_evaluation_ts: int = Field(description="Event time (ms) of the next timer re-assessment.")
    config_version: dict[str, int] = Field(
        default_factory=dict,
        description="risk-config scopes applied -> offset of their record ({}: defaults).",
    )
    inputs: DecisionInputs | None = Field(None, description="What the assessment used.")
    lineage: ActionLineage | None = Field(None, description="The input records used.")


class RiskAlert(BaseModel):
    """A record of `risk-alerts` (key = what it is about, e.g. `limit:asset:BTC:net`)."""

    key: str
    kind: Literal["exposure_limit", "liquidate", "stale_market_data", "dlq_rate"]
    state: Literal["fired", "cleared"]
    details: dict[str, Any]
    ts: int = Field(description="Wall clock (ms) when the condition started or cleared.")


# ---------------------------------------------------------------- risk-book (DESIGN §13)
class BookAdvice(BaseModel):
    """The model's assessment of an asset's net position (`Assessment.to_dict()`: the
    `/assess` response fields less `version` and `ts_ms`)."""

    action: Action
    hedge_pct: float
    risk_score: float
    reasoning: str
    suggested_hedge: HedgeOut | None = Field(
        description="The hedge of the net position at hedge_pct (null when 0 or flat)."
    )
    pnl_scenarios: PnLScenariosOut
    position_notional_usd: float
    current_unrealized_pnl: float
    re_evaluate_minutes: int
    risk_breakdown: RiskBreakdownOut
    reason_code: ReasonCode


class PerPositionHedges(BaseModel):
    """Every position hedged on its own at its latest action's fraction, on the market now."""

    sell_size: float = Field(description="Σ over longs of size × h: what the longs' hedges sell.")
    buy_size: float = Field(description="Σ over shorts of |size| × h: what the shorts' buy.")
    traded_size: float = Field(description="sell_size + buy_size.")
    traded_notional_usd: float
    spread_cost_usd: float
    funding_cost_1d_usd: float = Field(description="Net 1-day funding (< 0: received).")
    total_cost_usd: float = Field(
        description="Spread + each side's 1-day funding when it pays (DESIGN §1)."
    )


class BookBreach(BaseModel):
    """A notional limit of the asset its net position breaks."""

    scope: str = Field(description="asset:<ASSET>.")
    limit: Literal["max_net_notional_usd", "max_gross_notional_usd"]
    limit_usd: float
    value_usd: float


class BookRecord(BaseModel):
    """A record of `risk-book` (key = asset; null when its last position closed): the net
    position of the asset across the whole book, assessed with the model, and what
    netting saves (docs/design.md D17)."""

    schema_version: int = SCHEMA_VERSION
    asset: str
    event_ts: int = Field(description="Event time (ms) the figures are as of.")
    assessed_at: int = Field(description="Wall clock (ms) when assessed.")
    tick_ts: int | None = Field(description="ts of the market tick used (null: no market yet).")
    price: float | None = Field(description="The asset's price used (null: no market yet).")
    positions: int
    long: int
    short: int
    net_size: float = Field(description="Σ size.")
    gross_size: float = Field(description="Σ |size|.")
    hedged_size: float = Field(description="Σ size × h of each position's latest action.")
    entry_price: float = Field(description="Σ |size| × entry / Σ |size| (0 when flat).")
    age_minutes: float = Field(description="Size-weighted age of the positions.")
    net_notional_usd: float | None
    gross_notional_usd: float | None
    unrealized_pnl: float | None = Field(description="Σ size × (price − entry).")
    advice: BookAdvice | None = Field(description="The net position assessed (null: no market).")
    per_position_hedges: PerPositionHedges | None
    netted_hedge: HedgeOut | None = Field(
        description="The per-position hedges netted into one trade (null when they cancel)."
    )
    saving_usd: float | None = Field(
        description="per_position_hedges' total cost − the net advice's hedge cost."
    )
    netting_saving_usd: float | None = Field(
        description="per_position_hedges' total cost − netted_hedge's cost."
    )
    breaches: list[BookBreach]


class BookContribution(BaseModel):
    """A record of the internal topic `risk-book-partials` (key `<positions partition>:
    <asset>`; null when that partition holds no position of the asset): sums over the
    positions of one asset in one positions partition (`book.partial.Partial`, D17). h is
    the hedge fraction of the position's latest action; o the epoch ms its age counts from."""

    model_config = ConfigDict(extra="forbid")

    positions: int = Field(ge=1)
    longs: int = Field(ge=0)
    shorts: int = Field(ge=0)
    net_size: float = Field(description="Σ size.")
    gross_size: float = Field(ge=0, description="Σ |size|.")
    long_hedged: float = Field(description="Σ over longs of size × h.")
    short_hedged: float = Field(description="Σ over shorts of |size| × h.")
    entry_weight: float = Field(description="Σ |size| × entry_price.")
    entry_signed: float = Field(description="Σ size × entry_price.")
    origin_weight: float = Field(description="Σ |size| × o.")


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "assess-request": AssessRequest,
    "assess-response": AssessResponse,
    "position": PositionMessage,
    "market-tick": MarketTick,
    "risk-action": RiskAction,
    "risk-config": RiskConfigPatch,
    "risk-alert": RiskAlert,
    "risk-book": BookRecord,
    "risk-book-partial": BookContribution,
}
