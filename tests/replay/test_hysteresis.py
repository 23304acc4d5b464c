"""Hysteresis in replay (docs/design.md D11): the same bytes on both paths (the fast path
hands over to the scalar schedule), and the report's turnover, worked by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream_risk.engine import Engine, EngineConfig
from stream_risk.models import PositionMessage
from stream_risk.replay import fastpath
from stream_risk.replay.positions import PositionRecord
from stream_risk.replay.runner import Timeline

from . import MIN, T0, read_actions, read_report, replay, write_jsonl
from .test_fastpath import Counting, history

approx = pytest.approx


# ---------------------------------------------------------------------- fast == scalar
def both(tl: Timeline, risk: dict[str, Any]) -> tuple[Any, Any]:
    out = []
    base = EngineConfig().risk.merged(risk)
    for fast in (False, True):
        engine = Engine(EngineConfig(risk=base))
        sink = Counting()
        if fast:
            fastpath.run_fast(tl, engine, sink)
        else:
            from stream_risk.replay.runner import run_scalar

            run_scalar(tl, [engine], [sink])
        out.append((sink.buf.getvalue(), engine.stats.as_dict()))
    return out[0], out[1]


def no_bulk_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Any) -> None:
        raise AssertionError("the fast path's bulk step ran with hysteresis in force")

    monkeypatch.setattr(fastpath._FastRun, "run", refuse)


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_scalar_with_hysteresis_in_the_base_config(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_bulk_step(monkeypatch)
    tl = history(seed, calm=seed % 2 == 1)
    (s_bytes, s_stats), (f_bytes, f_stats) = both(tl, {"hysteresis_points": 10})
    assert f_bytes == s_bytes and f_stats == s_stats
    assert s_bytes.count(b"\n") > 20 and b"HYSTERESIS_HOLD" in s_bytes


def test_fast_equals_scalar_with_hysteresis_in_a_position_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tl = history(2)
    positions = []
    for rec in tl.positions:  # every record of p0 sets it in its own config
        msg = rec.message
        if msg is not None and rec.position_id == "p0":
            own = {**(msg.config.model_dump(exclude_none=True) if msg.config else {})}
            body = {
                **msg.model_dump(exclude={"config"}),
                "config": {**own, "hysteresis_points": 10},
            }
            msg = PositionMessage.model_validate(body)
        positions.append(PositionRecord(rec.position_id, rec.asset, rec.ts, msg))
    tl = Timeline(tl.ticks, positions, tl.until)
    no_bulk_step(monkeypatch)
    (s_bytes, s_stats), (f_bytes, f_stats) = both(tl, {})
    assert f_bytes == s_bytes and f_stats == s_stats
    assert b"HYSTERESIS_HOLD" in s_bytes


def test_without_hysteresis_the_fast_path_still_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = fastpath._FastRun.run

    def spy(self: Any) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(fastpath._FastRun, "run", spy)
    fastpath.run_fast(history(1), Engine(), Counting())
    assert calls == [1]


# ---------------------------------------------------------------------- the report
def flapping(tmp_path: Path) -> Path:
    """Long 10 @ 100 opened at the first tick (age 0), price 100 throughout, spread 10 bps,
    depths 1e6 (liquidity 1,000 / 1e6 × 15 = 0.015), funding 0. Vol in [0.04, 0.05]: loss
    600 × vol, vol regime 15; age t / 480 × 20 = t / 24 at minute t.

    t  vol    score                              h 0                h 2
    0  0.049  29.4 + 15 + 0.015 + 0     = 44.415  REDUCE             REDUCE
    1  0.050  30 + 15 + 0.015 + 0.0417  = 45.057  HEDGE_PARTIAL      HEDGE_PARTIAL
    2  0.049  29.4 + 15.015 + 0.0833    = 44.498  REDUCE             held (not published)
    3  0.050  30 + 15.015 + 0.125       = 45.140  HEDGE_PARTIAL      (not published)
    4  0.049  29.4 + 15.015 + 0.1667    = 44.582  REDUCE             held (not published)
    5  0.050  30 + 15.015 + 0.2083      = 45.223  HEDGE_PARTIAL      (not published)
    """
    rows = [
        {
            "asset": "X",
            "ts": T0 + i * MIN,
            "current_price": 100.0,
            "volatility_1d": 0.049 if i % 2 == 0 else 0.05,
            "spot_spread_bps": 10.0,
            "bid_depth_usd": 1e6,
            "ask_depth_usd": 1e6,
        }
        for i in range(6)
    ]
    return write_jsonl(tmp_path / "t.jsonl", rows)


def run(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    args = ("--ticks", flapping(tmp_path), "--position", "X:10@100", "--no-progress")
    assert replay(*args, "--out", out, *extra) == 0
    return out


def test_turnover_with_and_without_hysteresis_worked_by_hand(tmp_path: Path) -> None:
    plain = run(tmp_path, "h0")
    assert [a["action"] for a in read_actions(plain)] == ["REDUCE", "HEDGE_PARTIAL"] * 3
    # The hedge held, 10 × h: 2.5, 5, 2.5, 5, 2.5, 5: six trades of 2.5 X at 100 = 1,500 USD
    # of notional, paying 10 bps: 1.50.
    r = read_report(plain)
    assert r["turnover"] == {
        "hedge_changes": 6,
        "traded_notional_usd": approx(1500.0),
        "cost_usd": approx(1.5),
        "hedge_pct_changes": 6,
    }
    book = r["pnl"]["book"]
    assert book["hedge_changes"] == 6 and book["traded_notional_usd"] == approx(1500.0)
    assert r["pnl"]["positions"]["X"]["hedge_changes"] == 6
    # The price never moves: the hedged P&L is minus the cost.
    assert book["final_pnl_hedged"] == approx(-1.5)

    cfg = tmp_path / "h2.toml"
    cfg.write_text("[risk]\nhysteresis_points = 2\n")
    held = run(tmp_path, "h2", "--config", str(cfg))
    assert [a["action"] for a in read_actions(held)] == ["REDUCE", "HEDGE_PARTIAL"]
    r2 = read_report(held)
    assert r2["turnover"] == {
        "hedge_changes": 2,
        "traded_notional_usd": approx(500.0),
        "cost_usd": approx(0.5),
        "hedge_pct_changes": 2,
    }
    page = (held / "report.html").read_text()
    assert "<h2>Turnover</h2><p>2 hedge changes trading $500.00 of notional for $0.50" in page


def test_the_sweep_shows_turnover_per_policy_on_both_paths(tmp_path: Path) -> None:
    sweep = ("--sweep", "hysteresis_points=0,2")
    rows = read_report(run(tmp_path, "fast", *sweep))["sweep"]
    scalar = read_report(run(tmp_path, "scalar", *sweep, "--path", "scalar"))["sweep"]
    assert rows == scalar
    assert [s["label"] for s in rows] == ["hysteresis_points=0", "hysteresis_points=2"]
    h0, h2 = rows[0]["summary"], rows[1]["summary"]
    assert (h0["hedge_changes"], h2["hedge_changes"]) == (6, 2)
    assert (h0["hedge_cost_usd"], h2["hedge_cost_usd"]) == (approx(1.5), approx(0.5))
    assert (h0["traded_notional_usd"], h2["traded_notional_usd"]) == (
        approx(1500.0),
        approx(500.0),
    )
    assert (h0["hedge_pct_changes"], h2["hedge_pct_changes"]) == (6, 2)


def test_fast_and_scalar_give_the_same_files_with_hysteresis(tmp_path: Path) -> None:
    cfg = tmp_path / "h2.toml"
    cfg.write_text("[risk]\nhysteresis_points = 2\n")
    fast = run(tmp_path, "f", "--config", str(cfg))
    scalar = run(tmp_path, "s", "--config", str(cfg), "--path", "scalar")
    for name in ("actions.jsonl", "report.json", "report.html"):
        assert (fast / name).read_bytes() == (scalar / name).read_bytes(), name
