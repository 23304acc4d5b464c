"""RiskConfig: reference defaults, ranges, cross-field rules, merging; RiskConfigPatch."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from stream_risk.config import DEFAULT_CONFIG, RiskConfig, RiskConfigPatch, patch_dict

#: The reference model's constants (DESIGN §1 and the reference code's thresholds).
REFERENCE = {
    "max_loss_pct": 0.05,
    "hedge_trigger_loss_pct": 0.02,
    "max_hold_minutes": 480,
    "max_hedge_cost_bps": 50,
    "loss_weight": 30,
    "age_weight": 20,
    "vol_extreme_points": 25,
    "vol_high_points": 15,
    "vol_low_points": 10,
    "liquidity_weight": 15,
    "high_vol_threshold": 0.04,
    "extreme_vol_threshold": 0.08,
    "vol_reference": 0.05,
    "zero_vol_adjustment": 0.5,
    "funding_threshold": 0.02,
    "days_per_year": 365,
    "small_move": 0.02,
    "large_move": 0.05,
    "liquidate_score": 75,
    "hedge_full_score": 60,
    "hedge_partial_score": 45,
    "reduce_score": 35,
    "liquidate_hedge_pct": 1.0,
    "hedge_full_pct": 1.0,
    "hedge_partial_pct": 0.5,
    "reduce_pct": 0.25,
    "fast_re_eval_score": 60,
    "medium_re_eval_score": 40,
    "fast_re_eval_minutes": 15,
    "medium_re_eval_minutes": 60,
    "slow_re_eval_minutes": 240,
}
#: Risk-desk controls (docs/design.md D9, D11): not constants of the model; off by default.
DESK = {
    "stale_policy": "flag",
    "max_net_notional_usd": None,
    "max_gross_notional_usd": None,
    "hysteresis_points": 0.0,
}


def field_of(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.errors()]


# ------------------------------------------------------------------ defaults
def test_defaults_equal_reference_constants() -> None:
    assert RiskConfig().model_dump() == {**REFERENCE, **DESK}
    assert RiskConfig() == DEFAULT_CONFIG


def test_every_field_has_a_reference_value() -> None:
    assert set(RiskConfig.model_fields) == set(REFERENCE) | set(DESK)


def test_defaults_are_typed() -> None:
    cfg = RiskConfig()
    assert isinstance(cfg.max_hold_minutes, float)
    assert isinstance(cfg.slow_re_eval_minutes, int)


def test_frozen() -> None:
    with pytest.raises(ValidationError):
        DEFAULT_CONFIG.max_loss_pct = 0.1  # type: ignore[misc]


# ------------------------------------------------------------------ ranges
@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("max_loss_pct", 0),
        ("max_loss_pct", -0.01),
        ("max_loss_pct", 1.01),
        ("hedge_trigger_loss_pct", 0),
        ("hedge_trigger_loss_pct", 2),
        ("max_hold_minutes", 0),
        ("max_hold_minutes", -5),
        ("max_hedge_cost_bps", 0),
        ("max_hedge_cost_bps", -1),
        ("loss_weight", -1),
        ("loss_weight", 101),
        ("age_weight", -0.5),
        ("liquidity_weight", 100.5),
        ("high_vol_threshold", 0),
        ("vol_reference", 0),
        ("zero_vol_adjustment", 1.5),
        ("funding_threshold", -0.01),
        ("days_per_year", 0),
        ("small_move", 0),
        ("large_move", 1),
        ("liquidate_score", 101),
        ("reduce_score", -1),
        ("hedge_partial_pct", 1.5),
        ("reduce_pct", -0.1),
        ("fast_re_eval_minutes", 0),
        ("slow_re_eval_minutes", -1),
        ("max_loss_pct", math.nan),
        ("max_hedge_cost_bps", math.inf),
        ("max_hold_minutes", -math.inf),
        ("max_loss_pct", "abc"),
        ("max_loss_pct", [0.1]),
        ("max_loss_pct", None),
        ("fast_re_eval_minutes", 1.5),
    ],
)
def test_ranges_reject(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError) as ei:
        RiskConfig(**{field: bad})
    assert field_of(ei.value) == [field]


@pytest.mark.parametrize(
    ("field", "good"),
    [
        ("max_loss_pct", 1),
        ("max_loss_pct", 1e-6),
        ("hedge_trigger_loss_pct", 1),
        ("loss_weight", 0),
        ("loss_weight", 100),
        ("zero_vol_adjustment", 0),
        ("funding_threshold", 0),
        ("hedge_partial_pct", 0),
        ("max_hedge_cost_bps", 10_000),
    ],
)
def test_ranges_accept_bounds(field: str, good: float) -> None:
    assert getattr(RiskConfig(**{field: good}), field) == good


def test_unknown_field_rejected() -> None:
    with pytest.raises(ValidationError) as ei:
        RiskConfig(max_los_pct=0.1)  # type: ignore[call-arg]
    assert field_of(ei.value) == ["max_los_pct"]


# ------------------------------------------------------------------ cross-field rules
@pytest.mark.parametrize(
    "bad",
    [
        {"liquidate_score": 55},  # below hedge_full 60
        {"hedge_full_score": 40},  # below hedge_partial 45
        {"reduce_score": 50},  # above hedge_partial 45
        {"liquidate_score": 10, "hedge_full_score": 20, "hedge_partial_score": 30},
    ],
)
def test_threshold_ordering_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match="liquidate_score >= hedge_full_score"):
        RiskConfig(**bad)


def test_threshold_ordering_allows_equal_and_reordered() -> None:
    cfg = RiskConfig(liquidate_score=60, hedge_full_score=60, hedge_partial_score=35)
    assert cfg.liquidate_score == cfg.hedge_full_score == 60
    cfg = RiskConfig(
        liquidate_score=90, hedge_full_score=80, hedge_partial_score=70, reduce_score=5
    )
    assert cfg.reduce_score == 5


def test_vol_thresholds_ordered() -> None:
    with pytest.raises(ValidationError, match="extreme_vol_threshold"):
        RiskConfig(high_vol_threshold=0.1)  # above the 0.08 extreme
    assert RiskConfig(high_vol_threshold=0.08).high_vol_threshold == 0.08


def test_re_eval_scores_ordered() -> None:
    with pytest.raises(ValidationError, match="fast_re_eval_score"):
        RiskConfig(medium_re_eval_score=70)
    assert RiskConfig(medium_re_eval_score=60).medium_re_eval_score == 60


# ------------------------------------------------------------------ merged
def test_merged_empty_is_identity() -> None:
    assert DEFAULT_CONFIG.merged(None) is DEFAULT_CONFIG
    assert DEFAULT_CONFIG.merged({}) is DEFAULT_CONFIG


def test_merged_applies_overrides_and_keeps_the_rest() -> None:
    base = RiskConfig(max_hold_minutes=120)
    cfg = base.merged({"max_loss_pct": 0.1, "liquidate_score": 90})
    assert cfg.max_loss_pct == 0.1
    assert cfg.liquidate_score == 90
    assert cfg.max_hold_minutes == 120  # from the base, not the reference default
    assert base.max_loss_pct == 0.05  # the base is untouched


def test_merged_validates_ranges() -> None:
    with pytest.raises(ValidationError) as ei:
        DEFAULT_CONFIG.merged({"max_loss_pct": 2})
    assert field_of(ei.value) == ["max_loss_pct"]


def test_merged_validates_cross_field_rules_as_a_whole() -> None:
    with pytest.raises(ValidationError):
        DEFAULT_CONFIG.merged({"reduce_score": 50})
    # A move that is invalid alone is fine together.
    cfg = DEFAULT_CONFIG.merged({"reduce_score": 50, "hedge_partial_score": 55})
    assert (cfg.hedge_partial_score, cfg.reduce_score) == (55, 50)


def test_merged_rejects_unknown() -> None:
    with pytest.raises(ValidationError):
        DEFAULT_CONFIG.merged({"nope": 1})


# ------------------------------------------------------------------ RiskConfigPatch
def test_patch_every_field_optional() -> None:
    p = RiskConfigPatch()
    assert set(type(p).model_fields) == set(RiskConfig.model_fields)
    assert all(v is None for v in p.model_dump().values())
    assert patch_dict(p) == {}
    assert patch_dict(None) == {}


def test_patch_keeps_ranges() -> None:
    with pytest.raises(ValidationError) as ei:
        RiskConfigPatch.model_validate({"max_loss_pct": 0})
    assert field_of(ei.value) == ["max_loss_pct"]
    for bad in (math.nan, math.inf, "x"):
        with pytest.raises(ValidationError):
            RiskConfigPatch.model_validate({"max_hedge_cost_bps": bad})


def test_patch_rejects_unknown() -> None:
    with pytest.raises(ValidationError) as ei:
        RiskConfigPatch.model_validate({"max_los_pct": 0.1})
    assert field_of(ei.value) == ["max_los_pct"]


def test_patch_dict_and_merge() -> None:
    p = RiskConfigPatch.model_validate({"max_loss_pct": 0.1, "reduce_score": 30})
    assert patch_dict(p) == {"max_loss_pct": 0.1, "reduce_score": 30}
    cfg = DEFAULT_CONFIG.merged(patch_dict(p))
    assert (cfg.max_loss_pct, cfg.reduce_score, cfg.max_hold_minutes) == (0.1, 30, 480)


def test_patch_cross_field_checked_on_merge_only() -> None:
    p = RiskConfigPatch.model_validate({"reduce_score": 50})  # alone it is fine
    with pytest.raises(ValidationError):
        DEFAULT_CONFIG.merged(patch_dict(p))


def test_patch_frozen() -> None:
    p = RiskConfigPatch.model_validate({"max_loss_pct": 0.1})
    with pytest.raises(ValidationError):
        p.max_loss_pct = 0.2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("global", True),
        ("asset:BTC", True),
        ("position:desk-1:btc", True),  # an id may hold colons
        ("asset:", False),
        ("position:", False),
        ("globals", False),
        ("assets:BTC", False),
        ("BTC", False),
        ("", False),
    ],
)
def test_risk_config_scopes(key: str, ok: bool) -> None:
    from stream_risk.config import is_scope

    assert is_scope(key) is ok
