"""The BASELINE for the assessor benchmark: the reference model in the reference's style.

Written from the formula text of DESIGN §1 (not from any code) the way the reference
FastAPI seed project is built: dataclass domain objects with enums, one function per step
(each creating its result objects, reasoning as f-strings, eagerly), and pydantic request
and response models converted at the edges: request model → dataclasses → recommendation
→ response model. It exists only to be measured against; nothing imports it at runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

# ------------------------------------------------------------------ domain objects


class Action(StrEnum):
    HOLD = "HOLD"
    REDUCE = "REDUCE"
    HEDGE_PARTIAL = "HEDGE_PARTIAL"
    HEDGE_FULL = "HEDGE_FULL"
    LIQUIDATE = "LIQUIDATE"


class HedgeInstrument(StrEnum):
    SPOT_SELL = "spot_sell"
    SPOT_BUY = "spot_buy"
    PERP_SHORT = "perp_short"
    PERP_LONG = "perp_long"


@dataclass
class InventoryPosition:
    asset: str
    size: float
    entry_price: float
    age_minutes: float = 0.0
    unrealized_pnl: float | None = None

    @property
    def is_long(self) -> bool:
        return self.size > 0

    @property
    def is_flat(self) -> bool:
        return self.size == 0


@dataclass
class MarketConditions:
    current_price: float
    volatility_1d: float
    spot_spread_bps: float
    perp_funding_rate: float = 0.0
    bid_depth_usd: float = 1_000_000.0
    ask_depth_usd: float = 1_000_000.0


@dataclass
class RiskConfig:
    max_loss_pct: float = 0.05
    hedge_trigger_loss_pct: float = 0.02
    max_hold_minutes: float = 480.0
    max_hedge_cost_bps: float = 50.0
    high_vol_threshold: float = 0.04
    extreme_vol_threshold: float = 0.08


@dataclass
class PnLScenarios:
    move_down_5pct: float
    move_down_2pct: float
    move_up_2pct: float
    move_up_5pct: float
    hedged_down_5pct: float
    hedged_down_2pct: float
    hedged_up_2pct: float
    hedged_up_5pct: float


@dataclass
class HedgeCost:
    instrument: HedgeInstrument
    size: float
    spread_cost_usd: float
    funding_cost_1d_usd: float
    total_cost_usd: float
    total_cost_bps: float


@dataclass
class HedgeRecommendation:
    action: Action
    hedge_pct: float
    suggested_hedge: HedgeCost | None
    pnl_scenarios: PnLScenarios
    risk_score: float
    reasoning: str
    re_evaluate_minutes: int
    position_notional_usd: float
    current_unrealized_pnl: float


# ------------------------------------------------------------------ the model


def calculate_pnl_scenarios(
    position: InventoryPosition, market: MarketConditions, hedge_pct: float = 0.0
) -> PnLScenarios:
    def pnl_at(move: float) -> float:
        return position.size * (market.current_price * move)

    down5, down2, up2, up5 = pnl_at(-0.05), pnl_at(-0.02), pnl_at(0.02), pnl_at(0.05)
    remaining = 1.0 - hedge_pct
    return PnLScenarios(
        move_down_5pct=down5,
        move_down_2pct=down2,
        move_up_2pct=up2,
        move_up_5pct=up5,
        hedged_down_5pct=down5 * remaining,
        hedged_down_2pct=down2 * remaining,
        hedged_up_2pct=up2 * remaining,
        hedged_up_5pct=up5 * remaining,
    )


def estimate_hedge_cost(
    position: InventoryPosition, market: MarketConditions, hedge_pct: float
) -> HedgeCost:
    hedge_size = abs(position.size) * hedge_pct
    hedge_notional = hedge_size * market.current_price
    spread_cost = hedge_notional * (market.spot_spread_bps / 10000)
    funding_1d = hedge_notional * (market.perp_funding_rate / 365)
    if position.is_long:
        funding_1d = -funding_1d  # a short hedge receives positive funding
        if market.perp_funding_rate > 0.02:
            instrument = HedgeInstrument.PERP_SHORT
        else:
            instrument = HedgeInstrument.SPOT_SELL
    elif market.perp_funding_rate < -0.02:
        instrument = HedgeInstrument.PERP_LONG
    else:
        instrument = HedgeInstrument.SPOT_BUY
    total = spread_cost + max(0.0, funding_1d)
    bps = total / hedge_notional * 10000 if hedge_notional > 0 else 0.0
    return HedgeCost(
        instrument=instrument,
        size=hedge_size,
        spread_cost_usd=spread_cost,
        funding_cost_1d_usd=funding_1d,
        total_cost_usd=total,
        total_cost_bps=bps,
    )


def calculate_risk_score(
    position: InventoryPosition,
    market: MarketConditions,
    pnl: PnLScenarios,
    config: RiskConfig,
) -> float:
    notional = abs(position.size * market.current_price)
    vol = market.volatility_1d

    worst = abs(min(pnl.move_down_5pct, pnl.move_up_5pct))
    loss_pct = worst / notional if notional > 0 else 0.0
    vol_adj = min(1.0, vol / 0.05) if vol > 0 else 0.5
    loss = min(30.0, loss_pct / config.max_loss_pct * 30 * vol_adj)

    age = min(20.0, position.age_minutes / config.max_hold_minutes * 20)

    if vol >= config.extreme_vol_threshold:
        vol_score = 25.0
    elif vol >= config.high_vol_threshold:
        vol_score = 15.0
    else:
        vol_score = vol / config.high_vol_threshold * 10

    depth = market.bid_depth_usd if position.is_long else market.ask_depth_usd
    liquidity = min(15.0, notional / depth * 15) if depth > 0 else 15.0

    return min(100.0, max(0.0, loss + age + vol_score + liquidity))


def determine_action(
    score: float, full_hedge: HedgeCost, config: RiskConfig
) -> tuple[Action, float, str]:
    if full_hedge.total_cost_bps > config.max_hedge_cost_bps:
        return (
            Action.HOLD,
            0.0,
            f"Hedge cost too high ({full_hedge.total_cost_bps:.1f}bps > "
            f"{config.max_hedge_cost_bps:g}bps limit). Hold and wait for better conditions.",
        )
    if score >= 75:
        return (
            Action.LIQUIDATE,
            1.0,
            f"Risk score {score:.0f}/100 (critical). Position too risky to hold: liquidate.",
        )
    if score >= 60:
        return (
            Action.HEDGE_FULL,
            1.0,
            f"Risk score {score:.0f}/100 (high). Recommend full hedge via "
            f"{full_hedge.instrument.value}.",
        )
    if score >= 45:
        return (
            Action.HEDGE_PARTIAL,
            0.5,
            f"Risk score {score:.0f}/100 (moderate). Recommend 50% hedge via "
            f"{full_hedge.instrument.value}; reduces downside while keeping upside.",
        )
    if score >= 35:
        return (
            Action.REDUCE,
            0.25,
            f"Risk score {score:.0f}/100 (low-moderate). Consider reducing by 25% via "
            f"{full_hedge.instrument.value} to free up risk budget.",
        )
    return (
        Action.HOLD,
        0.0,
        f"Risk score {score:.0f}/100 (low). Position within acceptable risk parameters.",
    )


def assess_inventory_risk(
    position: InventoryPosition, market: MarketConditions, config: RiskConfig | None = None
) -> HedgeRecommendation:
    if config is None:
        config = RiskConfig()
    unrealized = (
        position.unrealized_pnl
        if position.unrealized_pnl is not None
        else position.size * (market.current_price - position.entry_price)
    )
    notional = abs(position.size * market.current_price)
    if position.is_flat:
        return HedgeRecommendation(
            action=Action.HOLD,
            hedge_pct=0.0,
            suggested_hedge=None,
            pnl_scenarios=PnLScenarios(0, 0, 0, 0, 0, 0, 0, 0),
            risk_score=0.0,
            reasoning="Risk score 0/100 (low). Flat position: nothing to hedge.",
            re_evaluate_minutes=240,
            position_notional_usd=notional,
            current_unrealized_pnl=unrealized,
        )

    pnl = calculate_pnl_scenarios(position, market)
    full_hedge = estimate_hedge_cost(position, market, 1.0)
    score = calculate_risk_score(position, market, pnl, config)
    action, hedge_pct, reasoning = determine_action(score, full_hedge, config)

    suggested = None
    if hedge_pct > 0:
        suggested = estimate_hedge_cost(position, market, hedge_pct)
        pnl = calculate_pnl_scenarios(position, market, hedge_pct)
        cost, bps = suggested.total_cost_usd, suggested.total_cost_bps
        reasoning += f" Cost ${cost:,.2f} ({bps:.1f}bps)."

    if score >= 60:
        re_eval = 15
    elif score >= 40:
        re_eval = 60
    else:
        re_eval = 240

    return HedgeRecommendation(
        action=action,
        hedge_pct=hedge_pct,
        suggested_hedge=suggested,
        pnl_scenarios=pnl,
        risk_score=score,
        reasoning=reasoning,
        re_evaluate_minutes=re_eval,
        position_notional_usd=notional,
        current_unrealized_pnl=unrealized,
    )


# ------------------------------------------------------------------ the edges (pydantic)


class PositionRequest(BaseModel):
    asset: str = Field(..., description="Asset symbol")
    size: float = Field(..., description="+ long / - short")
    entry_price: float = Field(..., gt=0)
    age_minutes: float = Field(0, ge=0)
    unrealized_pnl: float | None = None


class MarketRequest(BaseModel):
    current_price: float = Field(..., gt=0)
    volatility_1d: float = Field(..., ge=0, le=1)
    spot_spread_bps: float = Field(..., ge=0)
    perp_funding_rate: float = 0.0
    bid_depth_usd: float = Field(1_000_000, gt=0)
    ask_depth_usd: float = Field(1_000_000, gt=0)


class ConfigRequest(BaseModel):
    max_loss_pct: float = Field(0.05, gt=0, le=1)
    hedge_trigger_loss_pct: float = Field(0.02, gt=0, le=1)
    max_hold_minutes: float = Field(480, gt=0)
    max_hedge_cost_bps: float = Field(50, gt=0)


class AssessRequestModel(BaseModel):
    position: PositionRequest
    market: MarketRequest
    config: ConfigRequest | None = None


class HedgeResponse(BaseModel):
    instrument: str
    size: float
    spread_cost_usd: float
    funding_cost_1d_usd: float
    total_cost_usd: float
    total_cost_bps: float


class PnLResponse(BaseModel):
    move_down_5pct: float
    move_down_2pct: float
    move_up_2pct: float
    move_up_5pct: float
    hedged_down_5pct: float
    hedged_down_2pct: float
    hedged_up_2pct: float
    hedged_up_5pct: float


class AssessResponseModel(BaseModel):
    action: str
    hedge_pct: float
    risk_score: float
    reasoning: str
    suggested_hedge: HedgeResponse | None
    pnl_scenarios: PnLResponse
    position_notional_usd: float
    current_unrealized_pnl: float
    re_evaluate_minutes: int
    version: str
    ts_ms: int


def handle_assess(body: dict[str, Any]) -> dict[str, Any]:
    """The reference endpoint's path: request model → dataclasses → model → response model."""
    req = AssessRequestModel.model_validate(body)
    position = InventoryPosition(
        asset=req.position.asset,
        size=req.position.size,
        entry_price=req.position.entry_price,
        age_minutes=req.position.age_minutes,
        unrealized_pnl=req.position.unrealized_pnl,
    )
    market = MarketConditions(
        current_price=req.market.current_price,
        volatility_1d=req.market.volatility_1d,
        spot_spread_bps=req.market.spot_spread_bps,
        perp_funding_rate=req.market.perp_funding_rate,
        bid_depth_usd=req.market.bid_depth_usd,
        ask_depth_usd=req.market.ask_depth_usd,
    )
    config = None
    if req.config is not None:
        config = RiskConfig(
            max_loss_pct=req.config.max_loss_pct,
            hedge_trigger_loss_pct=req.config.hedge_trigger_loss_pct,
            max_hold_minutes=req.config.max_hold_minutes,
            max_hedge_cost_bps=req.config.max_hedge_cost_bps,
        )
    rec = assess_inventory_risk(position, market, config)
    hedge = rec.suggested_hedge
    resp = AssessResponseModel(
        action=rec.action.value,
        hedge_pct=rec.hedge_pct,
        risk_score=rec.risk_score,
        reasoning=rec.reasoning,
        suggested_hedge=None
        if hedge is None
        else HedgeResponse(
            instrument=hedge.instrument.value,
            size=hedge.size,
            spread_cost_usd=hedge.spread_cost_usd,
            funding_cost_1d_usd=hedge.funding_cost_1d_usd,
            total_cost_usd=hedge.total_cost_usd,
            total_cost_bps=hedge.total_cost_bps,
        ),
        pnl_scenarios=PnLResponse(
            move_down_5pct=rec.pnl_scenarios.move_down_5pct,
            move_down_2pct=rec.pnl_scenarios.move_down_2pct,
            move_up_2pct=rec.pnl_scenarios.move_up_2pct,
            move_up_5pct=rec.pnl_scenarios.move_up_5pct,
            hedged_down_5pct=rec.pnl_scenarios.hedged_down_5pct,
            hedged_down_2pct=rec.pnl_scenarios.hedged_down_2pct,
            hedged_up_2pct=rec.pnl_scenarios.hedged_up_2pct,
            hedged_up_5pct=rec.pnl_scenarios.hedged_up_5pct,
        ),
        position_notional_usd=rec.position_notional_usd,
        current_unrealized_pnl=rec.current_unrealized_pnl,
        re_evaluate_minutes=rec.re_evaluate_minutes,
        version="0.1.0",
        ts_ms=int(time.time() * 1000),
    )
    return resp.model_dump()
