"""The risk model (DESIGN §1): position + market + config -> assessment.

Pure and synchronous, and written for the hot path: plain floats in, one slotted
`Assessment` out, no validation (callers validate at the edge: HTTP, Kafka, replay)
and nothing formatted until someone asks (`reasoning`, `to_dict`). The arithmetic
follows the reference model operation by operation, so results agree to the last bit.
"""

from __future__ import annotations

from typing import Any, Final

from stream_risk.config import DEFAULT_CONFIG, RiskConfig
from stream_risk.rules import ACTIONS as ACTIONS
from stream_risk.rules import BAND_NAMES, BANDS

#: The actions and band names of `stream_risk.rules.BANDS`, safest first.
HOLD: Final = ACTIONS[0]
REDUCE: Final = ACTIONS[1]
HEDGE_PARTIAL: Final = ACTIONS[2]
HEDGE_FULL: Final = ACTIONS[3]
LIQUIDATE: Final = ACTIONS[4]
_LOW, _LOW_MODERATE, _MODERATE, _HIGH, _CRITICAL = BAND_NAMES

SPOT_SELL: Final = "spot_sell"
SPOT_BUY: Final = "spot_buy"
PERP_SHORT: Final = "perp_short"
PERP_LONG: Final = "perp_long"

#: Why an action was taken (a fixed set; DESIGN §10 extends it in the engine).
REASON_FLAT: Final = "FLAT_POSITION"
REASON_TOO_EXPENSIVE: Final = "HEDGE_TOO_EXPENSIVE"
#: The reason code of each score band (`Band.reason_code`).
_SCORE_CODES: Final = {b.name: b.reason_code for b in BANDS}


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
    """What the model says about one position now. Hedged P&L uses `hedge_pct`.

    The hot path stores only what it computed; the hedge, the P&L scenarios and the
    reasoning are derived on first use, with the same arithmetic as the reference.
    """

    __slots__ = (
        "action",
        "age_score",
        "asset",
        "band",
        "cfg",
        "full_hedge_bps",
        "funding",
        "hedge_pct",
        "instrument",
        "liquidity_score",
        "loss_score",
        "notional",
        "price",
        "re_evaluate_minutes",
        "risk_score",
        "size",
        "spread_bps",
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
    #: The instrument of the suggested hedge (None when h = 0).
    instrument: str | None
    #: Cost in bps of a full hedge, the HOLD-if-too-expensive test (0 when flat).
    full_hedge_bps: float
    too_expensive: bool
    notional: float
    unrealized_pnl: float
    re_evaluate_minutes: int
    asset: str
    size: float
    price: float
    spread_bps: float
    funding: float
    cfg: RiskConfig

    @property
    def max_hedge_cost_bps(self) -> float:
        return self.cfg.max_hedge_cost_bps

    @property
    def full_hedge(self) -> Hedge | None:
        """The hedge of the whole position (None when flat)."""
        if self.size == 0:
            return None
        return hedge_at(self.size, self.price, self.spread_bps, self.funding, 1.0, self.cfg)

    @property
    def suggested_hedge(self) -> Hedge | None:
        """The hedge to place at `hedge_pct` (None when it is 0)."""
        h = self.hedge_pct
        if h <= 0:
            return None
        return hedge_at(self.size, self.price, self.spread_bps, self.funding, h, self.cfg)

    @property
    def move_down_5pct(self) -> float:
        return self.size * (self.price * -self.cfg.large_move)

    @property
    def move_down_2pct(self) -> float:
        return self.size * (self.price * -self.cfg.small_move)

    @property
    def move_up_2pct(self) -> float:
        return self.size * (self.price * self.cfg.small_move)

    @property
    def move_up_5pct(self) -> float:
        return self.size * (self.price * self.cfg.large_move)

    @property
    def reason_code(self) -> str:
        """A fixed code for why: FLAT_POSITION, HEDGE_TOO_EXPENSIVE or the score band."""
        if self.size == 0:
            return REASON_FLAT
        if self.too_expensive:
            return REASON_TOO_EXPENSIVE
        code = _SCORE_CODES.get(self.band)
        return code if code is not None else "SCORE_" + self.band.upper().replace("-", "_")

    @property
    def pnl_scenarios(self) -> dict[str, float]:
        unhedged = 1.0 - self.hedge_pct
        d5, d2 = self.move_down_5pct, self.move_down_2pct
        u2, u5 = self.move_up_2pct, self.move_up_5pct
        return {
            "move_down_5pct": d5,
            "move_down_2pct": d2,
            "move_up_2pct": u2,
            "move_up_5pct": u5,
            "hedged_down_5pct": d5 * unhedged,
            "hedged_down_2pct": d2 * unhedged,
            "hedged_up_2pct": u2 * unhedged,
            "hedged_up_5pct": u5 * unhedged,
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
        return self._reasoning(self.suggested_hedge)

    def _reasoning(self, h: Hedge | None) -> str:
        """`reasoning`, given `suggested_hedge` (computed once by `to_dict`)."""
        head = f"Risk score {self.risk_score:.0f}/100 ({self.band})."
        if self.size == 0:
            return f"{head} Flat position: nothing to hedge. Hold."
        if self.too_expensive:
            bps = self.full_hedge_bps
            return (
                f"Hedge cost too high ({bps:.1f}bps > {self.max_hedge_cost_bps:g}bps limit). "
                f"{head} Hold and wait for better conditions."
            )
        if h is None:
            return f"{head} Position within acceptable risk parameters. Hold."
        how = (
            f"via {h.instrument} ({h.size:g} {self.asset}), "
            f"cost ${h.total_cost_usd:,.2f} ({h.total_cost_bps:.1f}bps)"
        ).replace(" )", ")")  # no asset name: "(0.25)", not "(0.25 )"
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
        """The reference `/assess` response fields (less `version`/`ts_ms`) plus extras.

        The properties' arithmetic inline, the suggested hedge computed once: this is on
        the publish path of every action.
        """
        h = self.suggested_hedge
        size, price, cfg = self.size, self.price, self.cfg
        large, small = cfg.large_move, cfg.small_move
        d5 = size * (price * -large)
        d2 = size * (price * -small)
        u2 = size * (price * small)
        u5 = size * (price * large)
        unhedged = 1.0 - self.hedge_pct
        score = self.risk_score
        return {
            "action": self.action,
            "hedge_pct": self.hedge_pct,
            "risk_score": score,
            "reasoning": self._reasoning(h),
            "suggested_hedge": None
            if h is None
            else {
                "instrument": h.instrument,
                "size": h.size,
                "spread_cost_usd": h.spread_cost_usd,
                "funding_cost_1d_usd": h.funding_cost_1d_usd,
                "total_cost_usd": h.total_cost_usd,
                "total_cost_bps": h.total_cost_bps,
            },
            "pnl_scenarios": {
                "move_down_5pct": d5,
                "move_down_2pct": d2,
                "move_up_2pct": u2,
                "move_up_5pct": u5,
                "hedged_down_5pct": d5 * unhedged,
                "hedged_down_2pct": d2 * unhedged,
                "hedged_up_2pct": u2 * unhedged,
                "hedged_up_5pct": u5 * unhedged,
            },
            "position_notional_usd": self.notional,
            "current_unrealized_pnl": self.unrealized_pnl,
            "re_evaluate_minutes": self.re_evaluate_minutes,
            "risk_breakdown": {
                "loss_severity": self.loss_score,
                "position_age": self.age_score,
                "volatility_regime": self.vol_score,
                "size_vs_liquidity": self.liquidity_score,
                "total": score,
            },
            "reason_code": self.reason_code,
        }


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
    (
        max_loss_pct,
        max_hold_minutes,
        max_hedge_cost_bps,
        loss_weight,
        age_weight,
        vol_extreme_points,
        vol_high_points,
        vol_low_points,
        liquidity_weight,
        high_vol_threshold,
        extreme_vol_threshold,
        vol_reference,
        zero_vol_adjustment,
        funding_threshold,
        days_per_year,
        large_move,
        liquidate_score,
        hedge_full_score,
        hedge_partial_score,
        reduce_score,
        liquidate_hedge_pct,
        hedge_full_pct,
        hedge_partial_pct,
        reduce_pct,
        fast_re_eval_score,
        medium_re_eval_score,
        fast_re_eval_minutes,
        medium_re_eval_minutes,
        slow_re_eval_minutes,
    ) = cfg.constants
    a = Assessment()
    a.asset = asset
    a.cfg = cfg
    a.size = size
    a.price = price
    a.spread_bps = spot_spread_bps
    a.funding = perp_funding_rate
    a.unrealized_pnl = size * (price - entry_price) if unrealized_pnl is None else unrealized_pnl
    notional = abs(size * price)
    a.notional = notional

    if size == 0:
        # Flat: nothing at risk, nothing to hedge (DESIGN §1).
        a.action = HOLD
        a.hedge_pct = 0.0
        a.risk_score = a.loss_score = a.age_score = a.vol_score = a.liquidity_score = 0.0
        a.band = _LOW
        a.instrument = None
        a.full_hedge_bps = 0.0
        a.too_expensive = False
        a.re_evaluate_minutes = slow_re_eval_minutes
        return a

    # 1. Loss severity: the worse of the ±large moves, size × (price × m), scaled by how
    #    likely that move is at this volatility.
    down = size * (price * -large_move)
    up = size * (price * large_move)
    worst = abs(down if down < up else up)
    loss_pct = worst / notional if notional > 0 else 0.0
    vol = volatility_1d
    vol_adj = min(1.0, 1.0 / (vol_reference / vol)) if vol > 0 else zero_vol_adjustment
    loss = min(loss_weight, (loss_pct / max_loss_pct) * loss_weight * vol_adj)
    # 2. Age.
    age = min(age_weight, (age_minutes / max_hold_minutes) * age_weight)
    # 3. Volatility regime.
    if vol >= extreme_vol_threshold:
        vol_score = vol_extreme_points
    elif vol >= high_vol_threshold:
        vol_score = vol_high_points
    else:
        vol_score = vol / high_vol_threshold * vol_low_points
    # 4. Size against the depth the exit would hit.
    long = size > 0
    depth = bid_depth_usd if long else ask_depth_usd
    liquidity = (
        min(liquidity_weight, (notional / depth) * liquidity_weight)
        if depth > 0
        else liquidity_weight
    )

    score = loss + age + vol_score + liquidity
    score = 100.0 if score > 100.0 else (0.0 if score < 0.0 else score)
    a.loss_score = loss
    a.age_score = age
    a.vol_score = vol_score
    a.liquidity_score = liquidity
    a.risk_score = score

    # The cost of a full hedge decides whether any hedge is placed (as `hedge_at`, h = 1).
    hedge_notional = abs(size) * price
    funding_1d = hedge_notional * (perp_funding_rate / days_per_year)
    if long:
        funding_1d = -funding_1d
        instrument = PERP_SHORT if perp_funding_rate > funding_threshold else SPOT_SELL
    else:
        instrument = PERP_LONG if perp_funding_rate < -funding_threshold else SPOT_BUY
    total = hedge_notional * (spot_spread_bps / 10000) + max(0.0, funding_1d)
    bps = (total / hedge_notional) * 10000 if hedge_notional > 0 else 0.0
    a.full_hedge_bps = bps

    # The bands of `stream_risk.rules.BANDS`, riskiest first (inline: the hot path).
    if score >= liquidate_score:
        a.band, action, h = _CRITICAL, LIQUIDATE, liquidate_hedge_pct
    elif score >= hedge_full_score:
        a.band, action, h = _HIGH, HEDGE_FULL, hedge_full_pct
    elif score >= hedge_partial_score:
        a.band, action, h = _MODERATE, HEDGE_PARTIAL, hedge_partial_pct
    elif score >= reduce_score:
        a.band, action, h = _LOW_MODERATE, REDUCE, reduce_pct
    else:
        a.band, action, h = _LOW, HOLD, 0.0
    if bps > max_hedge_cost_bps:
        a.too_expensive = True
        action, h = HOLD, 0.0
    else:
        a.too_expensive = False
    a.action = action
    a.hedge_pct = h
    a.instrument = instrument if h > 0 else None

    if score >= fast_re_eval_score:
        a.re_evaluate_minutes = fast_re_eval_minutes
    elif score >= medium_re_eval_score:
        a.re_evaluate_minutes = medium_re_eval_minutes
    else:
        a.re_evaluate_minutes = slow_re_eval_minutes
    return a
