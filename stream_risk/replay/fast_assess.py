"""The fast path's kernel: `assessor.assess` over arrays of ticks.

Between its own updates, a position's tick assessments depend only on its (fixed) fields
and its asset's market at each tick, so `assess_arrays` computes them for a whole run of
ticks at once in numpy: the assessor's arithmetic operation by operation, in the same
order, so the floats are the same to the last bit. Actions and instruments come out as
small integer codes (`rules.RANK`, `INSTRUMENTS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from stream_risk.assessor import PERP_LONG, PERP_SHORT, SPOT_BUY, SPOT_SELL
from stream_risk.config import RiskConfig
from stream_risk.rules import hedge_fractions, thresholds

INSTRUMENTS: tuple[str | None, ...] = (None, SPOT_SELL, SPOT_BUY, PERP_SHORT, PERP_LONG)
#: The code of each instrument (its index in INSTRUMENTS).
INSTR_CODE = {name: i for i, name in enumerate(INSTRUMENTS)}


@dataclass(slots=True)
class Arrays:
    """Vectorised assessments of one position over a run of ticks."""

    score: NDArray[np.float64]
    action: NDArray[np.int8]
    instrument: NDArray[np.int8]
    re_eval: NDArray[np.int64]
    bps: NDArray[np.float64]
    hedge_pct: NDArray[np.float64]


def assess_arrays(
    size: float,
    age_minutes: NDArray[np.float64],
    price: NDArray[np.float64],
    vol: NDArray[np.float64],
    spread: NDArray[np.float64],
    funding: NDArray[np.float64],
    bid: NDArray[np.float64],
    ask: NDArray[np.float64],
    cfg: RiskConfig,
) -> Arrays:
    """`assessor.assess` over arrays of market inputs (same operations in the same order)."""
    # The constants by name (the assessor unpacks `cfg.constants` on its hot path).
    max_loss_pct = cfg.max_loss_pct
    max_hold_minutes = cfg.max_hold_minutes
    max_hedge_cost_bps = cfg.max_hedge_cost_bps
    loss_w = cfg.loss_weight
    age_w = cfg.age_weight
    vol_extreme_points = cfg.vol_extreme_points
    vol_high_points = cfg.vol_high_points
    vol_low_points = cfg.vol_low_points
    liq_w = cfg.liquidity_weight
    high_vol = cfg.high_vol_threshold
    extreme_vol = cfg.extreme_vol_threshold
    vol_reference = cfg.vol_reference
    zero_vol_adjustment = cfg.zero_vol_adjustment
    funding_threshold = cfg.funding_threshold
    days_per_year = cfg.days_per_year
    large_move = cfg.large_move
    fast_score = cfg.fast_re_eval_score
    medium_score = cfg.medium_re_eval_score
    fast_minutes = cfg.fast_re_eval_minutes
    medium_minutes = cfg.medium_re_eval_minutes
    slow_minutes = cfg.slow_re_eval_minutes
    n = len(price)
    if size == 0:
        zeros = np.zeros(n)
        return Arrays(
            zeros,
            np.zeros(n, dtype=np.int8),
            np.zeros(n, dtype=np.int8),
            np.full(n, slow_minutes, dtype=np.int64),
            zeros,
            zeros,
        )
    with np.errstate(all="ignore"):
        down = size * (price * -large_move)
        up = size * (price * large_move)
        worst = np.abs(np.where(down < up, down, up))
        notional = np.abs(size * price)
        loss_pct = np.where(notional > 0, worst / notional, 0.0)
        vol_adj = np.where(
            vol > 0, np.minimum(1.0, 1.0 / (vol_reference / vol)), zero_vol_adjustment
        )
        loss = np.minimum(loss_w, (loss_pct / max_loss_pct) * loss_w * vol_adj)
        age = np.minimum(age_w, (age_minutes / max_hold_minutes) * age_w)
        vol_score = np.where(
            vol >= extreme_vol,
            vol_extreme_points,
            np.where(vol >= high_vol, vol_high_points, vol / high_vol * vol_low_points),
        )
        long = size > 0
        depth = bid if long else ask
        liquidity = np.where(depth > 0, np.minimum(liq_w, (notional / depth) * liq_w), liq_w)
        score = loss + age + vol_score + liquidity
        score = np.where(score > 100.0, 100.0, np.where(score < 0.0, 0.0, score))

        hedge_notional = abs(size) * price
        funding_1d = hedge_notional * (funding / days_per_year)
        if long:
            funding_1d = -funding_1d
            instrument = np.where(
                funding > funding_threshold, INSTR_CODE[PERP_SHORT], INSTR_CODE[SPOT_SELL]
            )
        else:
            instrument = np.where(
                funding < -funding_threshold, INSTR_CODE[PERP_LONG], INSTR_CODE[SPOT_BUY]
            )
        total = hedge_notional * (spread / 10000) + np.where(funding_1d > 0.0, funding_1d, 0.0)
        bps = np.where(hedge_notional > 0, (total / hedge_notional) * 10000, 0.0)

    bands = thresholds(cfg)  # stream_risk.rules: riskiest first
    action = np.select([score >= t for _, t, _ in bands], [i for i, _, _ in bands], 0).astype(
        np.int8
    )
    pct = np.array(hedge_fractions(cfg))
    too_expensive = bps > max_hedge_cost_bps
    action = np.where(too_expensive, 0, action).astype(np.int8)
    hedge_pct = np.where(too_expensive, 0.0, pct[action])
    instrument = np.where(hedge_pct > 0, instrument, 0).astype(np.int8)
    re_eval = np.where(
        score >= fast_score,
        fast_minutes,
        np.where(score >= medium_score, medium_minutes, slow_minutes),
    ).astype(np.int64)
    return Arrays(score, action, instrument, re_eval, bps, hedge_pct)
