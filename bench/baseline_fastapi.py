"""The BASELINE of the HTTP benchmark: `POST /assess` as a FastAPI app under uvicorn.

The reference REST API's stack and style: a FastAPI route taking the pydantic request model
as its body, the model computed on dataclasses (`bench.baseline_reference`, the same
numbers as ours: benchmark 1 checks it), and a pydantic `response_model`. An `async` route
(a sync one would hop through the thread pool: slower). Served by::

    python -m uvicorn bench.baseline_fastapi:app --port P --workers 1 --no-access-log

Not part of the product; nothing imports it at runtime.
"""

from __future__ import annotations

import time

from fastapi import FastAPI

from bench import baseline_reference as ref

app = FastAPI(title="reference-style /assess (benchmark baseline)")


@app.post("/assess", response_model=ref.AssessResponseModel)
async def assess(req: ref.AssessRequestModel) -> ref.AssessResponseModel:
    p, m, c = req.position, req.market, req.config
    rec = ref.assess_inventory_risk(
        ref.InventoryPosition(
            asset=p.asset,
            size=p.size,
            entry_price=p.entry_price,
            age_minutes=p.age_minutes,
            unrealized_pnl=p.unrealized_pnl,
        ),
        ref.MarketConditions(
            current_price=m.current_price,
            volatility_1d=m.volatility_1d,
            spot_spread_bps=m.spot_spread_bps,
            perp_funding_rate=m.perp_funding_rate,
            bid_depth_usd=m.bid_depth_usd,
            ask_depth_usd=m.ask_depth_usd,
        ),
        None
        if c is None
        else ref.RiskConfig(
            max_loss_pct=c.max_loss_pct,
            hedge_trigger_loss_pct=c.hedge_trigger_loss_pct,
            max_hold_minutes=c.max_hold_minutes,
            max_hedge_cost_bps=c.max_hedge_cost_bps,
        ),
    )
    h = rec.suggested_hedge
    s = rec.pnl_scenarios
    return ref.AssessResponseModel(
        action=rec.action.value,
        hedge_pct=rec.hedge_pct,
        risk_score=rec.risk_score,
        reasoning=rec.reasoning,
        suggested_hedge=None
        if h is None
        else ref.HedgeResponse(
            instrument=h.instrument.value,
            size=h.size,
            spread_cost_usd=h.spread_cost_usd,
            funding_cost_1d_usd=h.funding_cost_1d_usd,
            total_cost_usd=h.total_cost_usd,
            total_cost_bps=h.total_cost_bps,
        ),
        pnl_scenarios=ref.PnLResponse(
            move_down_5pct=s.move_down_5pct,
            move_down_2pct=s.move_down_2pct,
            move_up_2pct=s.move_up_2pct,
            move_up_5pct=s.move_up_5pct,
            hedged_down_5pct=s.hedged_down_5pct,
            hedged_down_2pct=s.hedged_down_2pct,
            hedged_up_2pct=s.hedged_up_2pct,
            hedged_up_5pct=s.hedged_up_5pct,
        ),
        position_notional_usd=rec.position_notional_usd,
        current_unrealized_pnl=rec.current_unrealized_pnl,
        re_evaluate_minutes=rec.re_evaluate_minutes,
        version="0.1.0",
        ts_ms=time.time_ns() // 1_000_000,
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
