"""`stream_risk.rules`: the model's rules that are data live once, and every copy that
cannot import them (a Literal type, the assessor's inline hot path) is checked against it."""

from __future__ import annotations

import ast
import inspect
import typing

import pytest

from stream_risk import assessor
from stream_risk.config import ASSESSOR_CONSTANTS, DEFAULT_CONFIG, RiskConfig
from stream_risk.models import Action
from stream_risk.rules import ACTIONS, BANDS, RANK, band_index, hedge_fractions, thresholds


def test_the_bands_are_the_contracts() -> None:
    # DESIGN §1: ≥ 75 LIQUIDATE (1.0); ≥ 60 HEDGE_FULL (1.0); ≥ 45 HEDGE_PARTIAL (0.5);
    # ≥ 35 REDUCE (0.25); else HOLD (0).
    assert ACTIONS == ("HOLD", "REDUCE", "HEDGE_PARTIAL", "HEDGE_FULL", "LIQUIDATE")
    assert thresholds(DEFAULT_CONFIG) == ((4, 75, 1.0), (3, 60, 1.0), (2, 45, 0.5), (1, 35, 0.25))
    assert hedge_fractions(DEFAULT_CONFIG) == (0.0, 0.25, 0.5, 1.0, 1.0)
    assert [b.reason_code for b in BANDS] == [
        "SCORE_LOW",
        "SCORE_LOW_MODERATE",
        "SCORE_MODERATE",
        "SCORE_HIGH",
        "SCORE_CRITICAL",
    ]
    assert RANK["LIQUIDATE"] == 4 and RANK["HOLD"] == 0


@pytest.mark.parametrize(
    ("score", "band"), [(0, 0), (34.99, 0), (35, 1), (44.9, 1), (45, 2), (60, 3), (75, 4)]
)
def test_band_index_follows_the_thresholds(score: float, band: int) -> None:
    assert band_index(score, DEFAULT_CONFIG) == band


def test_band_index_reads_the_config() -> None:
    cfg = RiskConfig(reduce_score=10, hedge_partial_score=20, hedge_full_score=30)
    assert [band_index(s, cfg) for s in (9, 10, 25, 31, 80)] == [0, 1, 2, 3, 4]


def test_the_action_type_of_the_messages_is_the_rules_order() -> None:
    assert typing.get_args(Action) == ACTIONS


def test_the_assessor_unpacks_its_constants_by_their_names() -> None:
    """`assess` unpacks `cfg.constants` positionally on its hot path; its target names must
    be ASSESSOR_CONSTANTS in order, or a reorder would silently swap two constants."""
    tree = ast.parse(inspect.getsource(assessor.assess))
    unpack = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "constants"
    )
    target = unpack.targets[0]
    assert isinstance(target, ast.Tuple)
    names = tuple(elt.id for elt in target.elts if isinstance(elt, ast.Name))
    assert names == ASSESSOR_CONSTANTS
    assert DEFAULT_CONFIG.constants == tuple(getattr(DEFAULT_CONFIG, n) for n in names)
