"""The risk model (DESIGN §1): position + market + config -> assessment.

Pure and synchronous, and written for the hot path: plain floats in, one slotted
`Assessment` out, no validation (callers validate at the edge: HTTP, Kafka, replay)
and nothing formatted until someone asks (`reasoning`, `to_dict`). The arithmetic
follows the reference model operation by operation, so results agree to the last bit.
"""

from __future__ import annotations

from typing import Any, Final

from stream_risk.config import DEFAULT_CONFIG, RiskConfig

HOLD: Final = "HOLD"
REDUCE: Final = "REDUCE"
HEDGE_PARTIAL: Final = "HEDGE_PARTIAL"
HEDGE_FULL: Final = "HEDGE_FULL"
LIQUIDATE: Final = "LIQUIDATE"
ACTIONS: Final = (HOLD, REDUCE, HEDGE_PARTIAL, HEDGE_FULL, LIQUIDATE)

SPOT_SELL: Final = "spot_sell"
SPOT_BUY: Final = "spot_buy"
PERP_SHORT: Final = "perp_short"
PERP_LONG: Final = "perp_long"

#: Why an action was taken (a fixed set; DESIGN §10 extends it in the engine).
REASON_FLAT: Final = "FLAT_POSITION"
REASON_TOO_EXPENSIVE: Final = "HEDGE_TOO_EXPENSIVE"


class Hedge:
    """The hedge to place at a fraction h of the position."""

    __slots__ = (
        "funding_cost_1d_usd",
        "instrument",
        "size",
        "spread_cost_usd",
        "total_cost_bps",
        "total_cost_usd",
    )

    def __init__(
        self,
        instrument: str,
        size: float,
        spread_cost_usd: float,
        funding_cost_1d_usd: float,
        total_cost_usd: float,
        total_cost_bps: float,
    ) -> None:
        self.instrument = instrument
        self.size = size
        self.spread_cost_usd = spread_cost_usd
        self.funding_cost_1d_usd = funding_cost_1d_usd
        self.total_cost_usd = total_cost_usd
        self.total_cost_bps = total_cost_bps

    def to_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "size": self.size,
            "spread_cost_usd": self.spread_cost_usd,
            "funding_cost_1d_usd": self.funding_cost_1d_usd,
            "total_cost_usd": self.total_cost_usd,
            "total_cost_bps": self.total_cost_bps,
        }


def hedge_at(
    size: float,
    price: float,
    spread_bps: float,
    funding: float,
    h: float,
    cfg: RiskConfig = DEFAULT_CONFIG,
) -> Hedge:
    """Cost of hedging fraction `h` of a position (DESIGN §1, "Hedge at fraction h")."""
    hedge_size = abs(size) * h
    hedge_notional = hedge_size * price
    spread_cost = hedge_notional * (spread_bps / 10000)
    funding_1d = hedge_notional * (funding / cfg.days_per_year)
    threshold = cfg.funding_threshold
    if size > 0:
        # The hedge is short: it receives positive funding.
        funding_1d = -funding_1d
        instrument = PERP_SHORT if funding > threshold else SPOT_SELL
    else:
        instrument = PERP_LONG if funding < -threshold else SPOT_BUY
    total = spread_cost + max(0.0, funding_1d)
    bps = (total / hedge_notional) * 10000 if hedge_notional > 0 else 0.0
    return Hedge(instrument, hedge_size, spread_cost, funding_1d, total, bps)


class Assessment:
    """What the model says about one position now. Hedged P&L uses `hedge_pct`."""

    __slots__ = (
        "action",
        "age_score",
        "asset",
        "band",
        "full_hedge",
        "hedge_pct",
        "liquidity_score",
        "loss_score",
        "max_hedge_cost_bps",
        "move_down_2pct",
        "move_down_5pct",
        "move_up_2pct",
        "move_up_5pct",
        "notional",
        "re_evaluate_minutes",
        "risk_score",
        "suggested_hedge",
        "too_expensive",
        "unrealized_pnl",
        "vol_score",
    )

    action: str
    hedge_pct: float
    risk_score: float
    loss_score: float
    age_score: float
    vol_score: float
    liquidity_score: float
    band: str
    suggested_hedge: Hedge | None
    full_hedge: Hedge | None
    too_expensive: bool
    max_hedge_cost_bps: float
    move_down_5pct: float
    move_down_2pct: float
    move_up_2pct: float
    move_up_5pct: float
    notional: float
    unrealized_pnl: float
    re_evaluate_minutes: int
    asset: str

    @property
    def reason_code(self) -> str:
        """A fixed code for why: FLAT_POSITION, HEDGE_TOO_EXPENSIVE or the score band."""
        if self.full_hedge is None:
            return REASON_FLAT
        if self.too_expensive:
            return REASON_TOO_EXPENSIVE
        return "SCORE_" + self.band.upper().replace("-", "_")

    @property
    def pnl_scenarios(self) -> dict[str, float]:
        unhedged = 1.0 - self.hedge_pct
        return {
            "move_down_5pct": self.move_down_5pct,
            "move_down_2pct": self.move_down_2pct,
            "move_up_2pct": self.move_up_2pct,
            "move_up_5pct": self.move_up_5pct,
            "hedged_down_5pct": self.move_down_5pct * unhedged,
            "hedged_down_2pct": self.move_down_2pct * unhedged,
            "hedged_up_2pct": self.move_up_2pct * unhedged,
            "hedged_up_5pct": self.move_up_5pct * unhedged,
        }

    @property
    def risk_breakdown(self) -> dict[str, float]:
        return {
            "loss_severity": self.loss_score,
            "position_age": self.age_score,
            "volatility_regime": self.vol_score,
            "size_vs_liquidity": self.liquidity_score,
            "total": self.risk_score,
        }

    @property
    def reasoning(self) -> str:
        """One or two sentences a trader reads."""
        head = f"Risk score {self.risk_score:.0f}/100 ({self.band})."
        if self.full_hedge is None:
            return f"{head} Flat position: nothing to hedge. Hold."
        if self.too_expensive:
            bps = self.full_hedge.total_cost_bps
            return (
                f"Hedge cost too high ({bps:.1f}bps > {self.max_hedge_cost_bps:g}bps limit). "
                f"{head} Hold and wait for better conditions."
            )
        h = self.suggested_hedge
        if h is None:
            return f"{head} Position within acceptable risk parameters. Hold."
        how = (
            f"via {h.instrument} ({h.size:g} {self.asset}), "
            f"cost ${h.total_cost_usd:,.2f} ({h.total_cost_bps:.1f}bps)"
        ).replace(" ()", "")
        if self.action == LIQUIDATE:
            return f"{head} Position too risky to hold: liquidate now, {how}."
        if self.action == HEDGE_FULL:
            return f"{head} Recommend full hedge {how}."
        if self.action == HEDGE_PARTIAL:
            return (
                f"{head} Recommend {self.hedge_pct * 100:.0f}% hedge {how}; "
                "reduces downside while keeping upside."
            )
        return (
            f"{head} Consider reducing the position by {self.hedge_pct * 100:.0f}% {how}, "
            "to free up risk budget."
        )

    def to_dict(self) -> dict[str, Any]:
        """The reference `/assess` response fields (less `version`/`ts_ms`) plus extras."""
        h = self.suggested_hedge
        return {
            "action": self.action,
            "hedge_pct": self.hedge_pct,
            "risk_score": self.risk_score,
            "reasoning": self.reasoning,
            "suggested_hedge": None if h is None else h.to_dict(),
            "pnl_scenarios": self.pnl_scenarios,
            "position_notional_usd": self.notional,
            "current_unrealized_pnl": self.unrealized_pnl,
            "re_evaluate_minutes": self.re_evaluate_minutes,
            "risk_breakdown": self.risk_breakdown,
            "reason_code": self.reason_code,
        }


def _band(score: float, cfg: RiskConfig) -> str:
    if score >= cfg.liquidate_score:
        return "critical"
    if score >= cfg.hedge_full_score:
        return "high"
    if score >= cfg.hedge_partial_score:
        return "moderate"
    if score >= cfg.reduce_score:
        return "low-moderate"
    return "low"


def assess(
    size: float,
    entry_price: float,
    age_minutes: float,
    unrealized_pnl: float | None,
    price: float,
    volatility_1d: float,
    spot_spread_bps: float,
    perp_funding_rate: float = 0.0,
    bid_depth_usd: float = 1_000_000.0,
    ask_depth_usd: float = 1_000_000.0,
    cfg: RiskConfig = DEFAULT_CONFIG,
    asset: str = "",
) -> Assessment:
    """Assess one position against its market. Inputs are assumed valid (DESIGN §1 ranges)."""
    a = Assessment()
    a.asset = asset
    a.max_hedge_cost_bps = cfg.max_hedge_cost_bps
    a.unrealized_pnl = size * (price - entry_price) if unrealized_pnl is None else unrealized_pnl
    notional = abs(size * price)
    a.notional = notional

    if size == 0:
        # Flat: nothing at risk, nothing to hedge (DESIGN §1).
        a.action = HOLD
        a.hedge_pct = 0.0
        a.risk_score = a.loss_score = a.age_score = a.vol_score = a.liquidity_score = 0.0
        a.band = "low"
        a.suggested_hedge = a.full_hedge = None
        a.too_expensive = False
        a.move_down_5pct = a.move_down_2pct = a.move_up_2pct = a.move_up_5pct = 0.0
        a.re_evaluate_minutes = cfg.slow_re_eval_minutes
        return a

    # P&L scenarios, unhedged: size × (price × m).
    large = cfg.large_move
    small = cfg.small_move
    down5 = size * (price * -large)
    up5 = size * (price * large)
    a.move_down_5pct = down5
    a.move_down_2pct = size * (price * -small)
    a.move_up_2pct = size * (price * small)
    a.move_up_5pct = up5

    # 1. Loss severity, scaled by how likely the large move is at this volatility.
    worst = abs(min(down5, up5))
    loss_pct = worst / notional if notional > 0 else 0.0
    vol = volatility_1d
    vol_adj = min(1.0, 1.0 / (cfg.vol_reference / vol)) if vol > 0 else cfg.zero_vol_adjustment
    w = cfg.loss_weight
    loss = min(w, (loss_pct / cfg.max_loss_pct) * w * vol_adj)
    # 2. Age.
    w = cfg.age_weight
    age = min(w, (age_minutes / cfg.max_hold_minutes) * w)
    # 3. Volatility regime.
    if vol >= cfg.extreme_vol_threshold:
        vol_score = float(cfg.vol_extreme_points)
    elif vol >= cfg.high_vol_threshold:
        vol_score = float(cfg.vol_high_points)
    else:
        vol_score = vol / cfg.high_vol_threshold * cfg.vol_low_points
    # 4. Size against the depth the exit would hit.
    depth = bid_depth_usd if size > 0 else ask_depth_usd
    w = cfg.liquidity_weight
    liquidity = min(w, (notional / depth) * w) if depth > 0 else float(w)

    score = min(100.0, max(0.0, loss + age + vol_score + liquidity))
    a.loss_score = loss
    a.age_score = age
    a.vol_score = vol_score
    a.liquidity_score = liquidity
    a.risk_score = score
    a.band = _band(score, cfg)

    full = hedge_at(size, price, spot_spread_bps, perp_funding_rate, 1.0, cfg)
    a.full_hedge = full
    if full.total_cost_bps > cfg.max_hedge_cost_bps:
        a.too_expensive = True
        a.action = HOLD
        h = 0.0
    else:
        a.too_expensive = False
        if score >= cfg.liquidate_score:
            a.action, h = LIQUIDATE, cfg.liquidate_hedge_pct
        elif score >= cfg.hedge_full_score:
            a.action, h = HEDGE_FULL, cfg.hedge_full_pct
        elif score >= cfg.hedge_partial_score:
            a.action, h = HEDGE_PARTIAL, cfg.hedge_partial_pct
        elif score >= cfg.reduce_score:
            a.action, h = REDUCE, cfg.reduce_pct
        else:
            a.action, h = HOLD, 0.0
    a.hedge_pct = h
    if h > 0:
        a.suggested_hedge = (
            full if h == 1.0 else hedge_at(size, price, spot_spread_bps, perp_funding_rate, h, cfg)
        )
    else:
        a.suggested_hedge = None

    if score >= cfg.fast_re_eval_score:
        a.re_evaluate_minutes = cfg.fast_re_eval_minutes
    elif score >= cfg.medium_re_eval_score:
        a.re_evaluate_minutes = cfg.medium_re_eval_minutes
    else:
        a.re_evaluate_minutes = cfg.slow_re_eval_minutes
    return a
