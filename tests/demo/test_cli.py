"""The demo's settings: production defaults but for two visible, overridable exceptions."""

from __future__ import annotations

import argparse

import pytest

from stream_risk.demo.cli import DEMO_HYSTERESIS_POINTS, DEMO_MAX_TICK_AGE_S, _settings


def args() -> argparse.Namespace:
    return argparse.Namespace(config=None, log_level=None)


def test_the_demo_damps_band_edge_flapping_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = _settings(args())
    assert s.risk.hysteresis_points == DEMO_HYSTERESIS_POINTS == 2.0
    assert s.max_tick_age_s == DEMO_MAX_TICK_AGE_S
    assert s.risk.max_loss_pct == 0.05  # the rest of the risk config untouched
    monkeypatch.setenv("STREAM_RISK_RISK__HYSTERESIS_POINTS", "0")
    assert _settings(args()).risk.hysteresis_points == 0.0  # the reference's behaviour
