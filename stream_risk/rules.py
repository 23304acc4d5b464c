"""The model's rules that are data, in one place (DESIGN §1): the score bands, what each
band advises, and the re-evaluation tiers.

Every reader takes them from here: the assessor (scalar), replay's vectorised fast path,
hysteresis, the report's time-in-band, the demo's terminal view and the dashboard (served
to the page in its snapshot). The thresholds and fractions themselves are `RiskConfig`
fields (a desk can change them); which field belongs to which band is the rule, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from stream_risk.config import RiskConfig


@dataclass(frozen=True, slots=True)
class Band:
    """One score band: from its threshold (a `RiskConfig` field) up to the next band's."""

    name: str
    action: str
    #: The RiskConfig field of its lower threshold (None: the lowest band, from 0).
    threshold_field: str | None
    #: The RiskConfig field of the hedge fraction it advises (None: no hedge).
    fraction_field: str | None

    @property
    def reason_code(self) -> str:
        return "SCORE_" + self.name.upper().replace("-", "_")


#: Safest first: a band's index is its rank (a higher index is riskier).
BANDS: Final = (
    Band("low", "HOLD", None, None),
    Band("low-moderate", "REDUCE", "reduce_score", "reduce_pct"),
    Band("moderate", "HEDGE_PARTIAL", "hedge_partial_score", "hedge_partial_pct"),
    Band("high", "HEDGE_FULL", "hedge_full_score", "hedge_full_pct"),
    Band("critical", "LIQUIDATE", "liquidate_score", "liquidate_hedge_pct"),
)
#: The actions, safest first (the order every view sorts and counts them in).
ACTIONS: Final = tuple(b.action for b in BANDS)
BAND_NAMES: Final = tuple(b.name for b in BANDS)
#: An action's rank (its band's index).
RANK: Final = {b.action: i for i, b in enumerate(BANDS)}


def thresholds(cfg: RiskConfig) -> tuple[tuple[int, float, float], ...]:
    """(band index, lower threshold, hedge fraction) of each band above the lowest,
    riskiest first: the order a score is tested in."""
    return tuple(
        (i, float(getattr(cfg, b.threshold_field)), float(getattr(cfg, b.fraction_field)))
        for i, b in reversed(tuple(enumerate(BANDS)))
        if b.threshold_field is not None and b.fraction_field is not None
    )


def band_index(score: float, cfg: RiskConfig) -> int:
    """The index in BANDS of `score` under `cfg`'s thresholds."""
    for i, threshold, _ in thresholds(cfg):
        if score >= threshold:
            return i
    return 0


def hedge_fractions(cfg: RiskConfig) -> tuple[float, ...]:
    """The hedge fraction of each band, by index (0 for the lowest)."""
    return tuple(0.0 if b.fraction_field is None else getattr(cfg, b.fraction_field) for b in BANDS)


def for_views() -> list[dict[str, object]]:
    """The bands as JSON for the dashboard (names, actions and their order)."""
    return [{"band": b.name, "action": b.action, "reason_code": b.reason_code} for b in BANDS]


__all__ = [
    "ACTIONS",
    "BANDS",
    "BAND_NAMES",
    "RANK",
    "Band",
    "band_index",
    "for_views",
    "hedge_fractions",
    "thresholds",
]
