"""Offline replay honours risk-config records (docs/design.md D9): at their event time,
on both paths (the fast path hands a run with config records to the scalar schedule)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream_risk.replay.errors import SourceError
from stream_risk.replay.risk_config import load_risk_config
from stream_risk.replay.runner import Timeline

from . import MIN, T0, write_jsonl
from . import replay as replay_cli
from .test_runner import replay, worked_example

approx = pytest.approx


def with_configs(tmp_path: Path, rows: list[dict[str, object]]) -> Timeline:
    tl = worked_example(tmp_path, [], until=T0 + 30 * MIN)
    cfg = load_risk_config(write_jsonl(tmp_path / "c.jsonl", rows))
    return Timeline(tl.ticks, tl.positions, tl.until, cfg)


@pytest.mark.parametrize("fast", [False, True])
def test_config_records_apply_at_their_time(tmp_path: Path, fast: bool) -> None:
    tl = with_configs(
        tmp_path,
        [
            {"scope": "asset:BTC", "ts": T0 + 10 * MIN, "value": {"max_loss_pct": 0.10}},
            {"scope": "asset:BTC", "ts": T0 + 20 * MIN, "value": None},
        ],
    )
    out = replay(tl, fast)
    assert [(v["trigger"], (v["event_ts"] - T0) // MIN) for v in out] == [
        ("position", 0),
        ("config", 10),
        ("config", 20),
    ]
    # At +10 min, age 70: loss 0.05/0.10 × 30 = 15, age 70/480 × 20, vol 15, liq 1.32.
    assert out[1]["risk_score"] == approx(15 + 70 / 480 * 20 + 15 + 1.32)
    assert out[1]["action"] == "HOLD" and out[1]["config_version"] == {"asset:BTC": 0}
    assert out[1]["inputs"]["config"] == {"max_loss_pct": 0.10}
    # Removed at +20: back to the defaults, age 80.
    assert out[2]["risk_score"] == approx(30 + 80 / 480 * 20 + 15 + 1.32)
    assert out[2]["action"] == "HEDGE_PARTIAL" and out[2]["config_version"] == {}


def test_a_bad_config_record_names_its_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"scope": "global", "ts": T0, "value": {"max_loss_pct": 0.1}},
            {"scope": "global", "ts": T0, "value": {"max_loss_pct": 7}},
        ],
    )
    with pytest.raises(SourceError, match=r"c.jsonl, line 2: field value.max_loss_pct"):
        load_risk_config(path)
    with pytest.raises(SourceError, match="no scope"):
        load_risk_config(write_jsonl(tmp_path / "d.jsonl", [{"scope": "desk", "ts": T0}]))


def test_the_command_takes_risk_config(tmp_path: Path) -> None:
    tl = worked_example(tmp_path, [], until=0)
    del tl
    cfg = write_jsonl(
        tmp_path / "c.jsonl",
        [{"scope": "position:p1", "ts": T0 + 5 * MIN, "value": {"max_hold_minutes": 60}}],
    )
    out = tmp_path / "o"
    code = replay_cli(
        "--ticks",
        tmp_path / "t.jsonl",
        "--positions",
        tmp_path / "p.jsonl",
        "--risk-config",
        cfg,
        "--until",
        str(T0 + 6 * MIN),
        "--out",
        out,
        "--no-progress",
    )
    assert code == 0
    rows = [orjson.loads(x) for x in (out / "actions.jsonl").read_bytes().splitlines()]
    assert rows[-1]["trigger"] == "config"
    assert rows[-1]["config_version"] == {"position:p1": 0}
    # Age 65 of 60: the full 20 points.
    assert rows[-1]["risk_breakdown"]["position_age"] == 20
