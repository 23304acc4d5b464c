"""The risk model's configuration: every constant of the model, defaulting to the reference.

`RiskConfig` is immutable and validated once; the assessor only reads its attributes.
Per-request, per-position or per-scope overrides are partial dicts merged on top with
`RiskConfig.merged(...)`, which validates the result as a whole.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo

#: The fields `assessor.assess` unpacks from `RiskConfig.constants`, in that order. The
#: assessor's unpacking uses these very names (tests/test_assessor.py compares them), so a
#: reorder cannot silently swap two weights.
ASSESSOR_CONSTANTS: Final = (
    "max_loss_pct",
    "max_hold_minutes",
    "max_hedge_cost_bps",
    "loss_weight",
    "age_weight",
    "vol_extreme_points",
    "vol_high_points",
    "vol_low_points",
    "liquidity_weight",
    "high_vol_threshold",
    "extreme_vol_threshold",
    "vol_reference",
    "zero_vol_adjustment",
    "funding_threshold",
    "days_per_year",
    "large_move",
    "liquidate_score",
    "hedge_full_score",
    "hedge_partial_score",
    "reduce_score",
    "liquidate_hedge_pct",
    "hedge_full_pct",
    "hedge_partial_pct",
    "reduce_pct",
    "fast_re_eval_score",
    "medium_re_eval_score",
    "fast_re_eval_minutes",
    "medium_re_eval_minutes",
    "slow_re_eval_minutes",
)


class RiskConfig(BaseModel):
    """Limits of the desk and the constants of the scoring model (DESIGN §1)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )

    # The four limits of the reference API.
    max_loss_pct: float = Field(0.05, gt=0, le=1, description="Max acceptable loss, 0.05 = 5 %.")
    hedge_trigger_loss_pct: float = Field(
        0.02, gt=0, le=1, description="Accepted for compatibility; no effect in this model."
    )
    max_hold_minutes: float = Field(480, gt=0, description="Age at which the age score is full.")
    max_hedge_cost_bps: float = Field(
        50, gt=0, description="A full hedge costing more than this (bps) means HOLD."
    )

    # Score weights: the maximum points of each component.
    loss_weight: float = Field(30, ge=0, le=100, description="Max points from potential loss.")
    age_weight: float = Field(20, ge=0, le=100, description="Max points from position age.")
    vol_extreme_points: float = Field(25, ge=0, le=100, description="Points at extreme vol.")
    vol_high_points: float = Field(15, ge=0, le=100, description="Points at high vol.")
    vol_low_points: float = Field(
        10, ge=0, le=100, description="Points at the high-vol threshold, scaled linearly below it."
    )
    liquidity_weight: float = Field(15, ge=0, le=100, description="Max points from size/depth.")

    # Volatility regime.
    high_vol_threshold: float = Field(0.04, gt=0, le=1, description="Daily vol that is high.")
    extreme_vol_threshold: float = Field(0.08, gt=0, le=1, description="Daily vol that is extreme.")
    vol_reference: float = Field(
        0.05, gt=0, le=1, description="Vol at which the loss score is not scaled down."
    )
    zero_vol_adjustment: float = Field(
        0.5, ge=0, le=1, description="Loss-score scale when vol is 0 (unknown)."
    )

    # Hedge instrument choice.
    funding_threshold: float = Field(
        0.02, ge=0, description="|annual funding| above which a perp hedge earns funding."
    )
    days_per_year: float = Field(365, gt=0, description="Days used to turn annual funding daily.")

    # Stress moves.
    small_move: float = Field(0.02, gt=0, lt=1, description="The ±2 % scenario move.")
    large_move: float = Field(0.05, gt=0, lt=1, description="The ±5 % scenario move.")

    # Action bands: minimum score of each action, and its hedge fraction.
    liquidate_score: float = Field(75, ge=0, le=100)
    hedge_full_score: float = Field(60, ge=0, le=100)
    hedge_partial_score: float = Field(45, ge=0, le=100)
    reduce_score: float = Field(35, ge=0, le=100)
    liquidate_hedge_pct: float = Field(1.0, ge=0, le=1)
    hedge_full_pct: float = Field(1.0, ge=0, le=1)
    hedge_partial_pct: float = Field(0.5, ge=0, le=1)
    reduce_pct: float = Field(0.25, ge=0, le=1)

    # Re-evaluation cadence.
    fast_re_eval_score: float = Field(60, ge=0, le=100)
    medium_re_eval_score: float = Field(40, ge=0, le=100)
    fast_re_eval_minutes: int = Field(15, gt=0)
    medium_re_eval_minutes: int = Field(60, gt=0)
    slow_re_eval_minutes: int = Field(240, gt=0)

    # Risk-desk controls (docs/design.md D9): read by the stream engine, not by `/assess`.
    stale_policy: Literal["flag", "hold", "reduce"] = Field(
        "flag",
        description="On stale market data: flag only; hold (advise HOLD, no hedge on old "
        "prices); reduce (advise at least REDUCE).",
    )
    max_net_notional_usd: float | None = Field(
        None,
        gt=0,
        le=1e18,
        description="|net notional| limit: per asset in an `asset:` scope, the book's in `global`.",
    )
    max_gross_notional_usd: float | None = Field(
        None,
        gt=0,
        le=1e18,
        description="Gross notional limit: per asset in an `asset:` scope, the book's in `global`.",
    )
    # Advice at band edges (DESIGN §12, docs/design.md D11): read by the stream engine only.
    hysteresis_points: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Score points below a held band's threshold before the advice moves to a "
        "safer band (escalation stays at the thresholds); 0 = the reference behaviour. "
        "`/assess` (no previous action) is unaffected.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        bands = [
            self.liquidate_score,
            self.hedge_full_score,
            self.hedge_partial_score,
            self.reduce_score,
        ]
        if bands != sorted(bands, reverse=True):
            raise ValueError(
                "action thresholds must satisfy liquidate_score >= hedge_full_score >= "
                "hedge_partial_score >= reduce_score"
            )
        if self.extreme_vol_threshold < self.high_vol_threshold:
            raise ValueError("extreme_vol_threshold must be >= high_vol_threshold")
        if self.fast_re_eval_score < self.medium_re_eval_score:
            raise ValueError("fast_re_eval_score must be >= medium_re_eval_score")
        return self

    @cached_property
    def constants(self) -> tuple[Any, ...]:
        """Every constant the assessor reads, in the order of `ASSESSOR_CONSTANTS` (its
        unpacking names them the same: a test checks it): one attribute read per call."""
        return tuple(getattr(self, name) for name in ASSESSOR_CONSTANTS)

    @cached_property
    def diff_from_defaults(self) -> dict[str, Any]:
        """The fields that differ from the defaults (an action's `inputs.config`; read-only)."""
        base = RiskConfig().model_dump()
        return {k: v for k, v in self.model_dump().items() if base.get(k) != v}

    def merged(self, overrides: Mapping[str, Any] | None) -> RiskConfig:
        """This config with `overrides` applied, validated as a whole (raises ValidationError)."""
        if not overrides:
            return self
        return RiskConfig.model_validate({**self.model_dump(), **overrides})


DEFAULT_CONFIG = RiskConfig()


def _optional(info: FieldInfo) -> tuple[Any, FieldInfo]:
    patched = copy.copy(info)
    patched.default = None
    return (info.annotation | None, patched)  # type: ignore[operator]


#: A partial RiskConfig: every field optional, same ranges. Overrides from a request, a
#: position message or a `risk-config` record validate against it field by field; the
#: cross-field rules are checked when merged onto a full config.
RiskConfigPatch: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "RiskConfigPatch",
    __config__=ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True),
    **{name: _optional(info) for name, info in RiskConfig.model_fields.items()},
)


def patch_dict(patch: BaseModel | None) -> dict[str, Any]:
    """The fields a patch actually sets."""
    return {} if patch is None else patch.model_dump(exclude_none=True)


#: Scopes of `risk-config` keys, from the weakest (DESIGN §10, docs/design.md D9).
SCOPE_GLOBAL: Final = "global"
SCOPE_ASSET: Final = "asset:"
SCOPE_POSITION: Final = "position:"
#: The key forms, for messages that tell a person what to send.
SCOPE_FORMS: Final = "global, asset:<ASSET> or position:<POSITION_ID>"


def is_scope(key: str) -> bool:
    """Whether `key` names a risk-config scope: `global`, `asset:<A>` or `position:<ID>`."""
    if key == SCOPE_GLOBAL:
        return True
    kind, sep, name = key.partition(":")
    return bool(sep and name) and kind + sep in (SCOPE_ASSET, SCOPE_POSITION)
