"""The report on a tiny history worked by hand, and the policy sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_risk.replay.pnl import max_drawdown

from . import MIN, T0, read_actions, read_report, replay, write_jsonl

approx = pytest.approx


def tiny(tmp_path: Path) -> Path:
    """Long 10 @ 100 (opened at the first tick), spread 10 bps, depths 1e6, funding 0.

    t  price vol   score (loss + age + vol + liquidity)         action         h    published
    0  100   0.01  6 + 0 + 2.5 + 0.015 = 8.515                 HOLD           0    yes (first)
    1  110   0.10  30 + 0.0417 + 25 + 0.0165 = 55.058           HEDGE_PARTIAL  0.5  yes
    2   90   0.10  30 + 0.0833 + 25 + 0.0135 = 55.097           HEDGE_PARTIAL  0.5  no (<1 pt)
    3   95   0.01  6 + 0.125 + 2.5 + 0.01425 = 8.639            HOLD           0    yes
    4  100   0.01  6 + 0.1667 + 2.5 + 0.015 = 8.682             HOLD           0    no
    (t in minutes; full hedge cost 10 bps < 50: hedges are placed.)
    """
    vols = [0.01, 0.10, 0.10, 0.01, 0.01]
    prices = [100.0, 110.0, 90.0, 95.0, 100.0]
    rows = [
        {
            "asset": "X",
            "ts": T0 + i * MIN,
            "current_price": p,
            "volatility_1d": v,
            "spot_spread_bps": 10.0,
            "bid_depth_usd": 1e6,
            "ask_depth_usd": 1e6,
        }
        for i, (p, v) in enumerate(zip(prices, vols, strict=True))
    ]
    ticks = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out"
    assert replay("--ticks", ticks, "--position", "X:10@100", "--out", out) == 0
    return out


def test_actions_of_the_tiny_history(tmp_path: Path) -> None:
    out = tiny(tmp_path)
    acts = read_actions(out)
    assert [(a["event_ts"] - T0) // MIN for a in acts] == [0, 1, 3]
    assert [a["action"] for a in acts] == ["HOLD", "HEDGE_PARTIAL", "HOLD"]
    assert [a["risk_score"] for a in acts] == approx([8.515, 55.0581667, 8.63925], abs=1e-6)


def test_pnl_path_hedge_cost_and_drawdowns_worked_by_hand(tmp_path: Path) -> None:
    r = read_report(tiny(tmp_path))
    # Unhedged: 10 × (+10, −20, +5, +5) -> 100, −100, −50, 0.
    # Following the advice (h after each published action, the move into a tick under the
    # hedge held before it):
    #   t1: +100 (h 0), then hedge 5 X at 110, cost 5 × 110 × 10 bps = 0.55  -> 99.45
    #   t2: 10 × 0.5 × −20 = −100                                              -> −0.55
    #   t3: 10 × 0.5 × +5 = +25, then unwind 5 X at 95, cost 0.475            -> 23.975
    #   t4: 10 × 1 × +5 = +50                                                  -> 73.975
    p = r["pnl"]["positions"]["X"]
    assert p["final_pnl_unhedged"] == approx(0.0)
    assert p["final_pnl_hedged"] == approx(73.975)
    assert p["hedge_cost_usd"] == approx(1.025)
    # Drawdowns: unhedged 100 -> −100 = 200; hedged 100 (before the cost) -> −0.55 = 100.55.
    assert p["max_drawdown_unhedged"] == approx(200.0)
    assert p["max_drawdown_hedged"] == approx(100.55)
    assert p["drawdown_saved"] == approx(99.45)
    worst = p["worst_move_survived"]
    assert worst["price_from"] == 110.0 and worst["price_to"] == 90.0
    assert worst["move_pct"] == approx(-18.181818, abs=1e-5)
    assert worst["pnl_unhedged"] == approx(-200.0)
    assert worst["pnl_hedged"] == approx(-100.55)
    assert r["pnl"]["book"]["final_pnl_hedged"] == approx(73.975)
    assert r["pnl"]["book"]["max_drawdown_unhedged"] == approx(200.0)
    hc = r["hedge_cost"]
    assert hc["total_usd"] == approx(1.025) and hc["trades"] == 2
    assert hc["per_day_usd"] == {"2023-11-14": approx(1.025)}


def test_counts_and_time_in_band(tmp_path: Path) -> None:
    r = read_report(tiny(tmp_path))
    acts = r["actions"]
    assert acts["published"] == 3 and acts["tombstones"] == 0
    assert acts["by_action"] == {
        "HOLD": 2,
        "REDUCE": 0,
        "HEDGE_PARTIAL": 1,
        "HEDGE_FULL": 0,
        "LIQUIDATE": 0,
    }
    assert acts["by_trigger"] == {"position": 1, "tick": 2, "timer": 0, "config": 0}
    # low from 0 to 1 and from 3 to 4 (the end), moderate from 1 to 3: 2 minutes each.
    bands = r["time_in_band_hours"]
    assert bands["low"] == approx(2 / 60) and bands["moderate"] == approx(2 / 60)
    assert bands["high"] == bands["critical"] == bands["low-moderate"] == 0
    assert r["time_in_action_hours"]["HEDGE_PARTIAL"] == approx(2 / 60)
    assert r["engine"]["assessments"] == 5 and r["engine"]["published"] == 3


def test_a_close_unwinds_the_hedge_and_stops_the_path(tmp_path: Path) -> None:
    rows = [
        {
            "asset": "X",
            "ts": T0 + i * MIN,
            "current_price": p,
            "volatility_1d": 0.10,
            "spot_spread_bps": 10.0,
        }
        for i, p in enumerate([100.0, 104.0, 90.0, 50.0])
    ]
    ticks = write_jsonl(tmp_path / "t.jsonl", rows)
    pos = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"position_id": "a", "asset": "X", "size": 10, "entry_price": 100, "ts": T0},
            {"position_id": "a", "closed": True, "ts": T0 + 2 * MIN},
        ],
    )
    out = tmp_path / "out"
    assert replay("--ticks", ticks, "--positions", pos, "--out", out) == 0
    acts = read_actions(out)
    assert acts[-1] == {
        "position_id": "a",
        "tombstone": True,
        "event_ts": T0 + 2 * MIN,
        "ts_ms": T0 + 2 * MIN,
    }
    r = read_report(out)
    # HEDGE_PARTIAL from the start (score 55): hedge 5 X at 100 (0.5), +4 × 5 = 20, −14 × 5
    # = −70, then closed at 90: unwind 5 X at 90 (0.45). The fall to 50 is not counted.
    p = r["pnl"]["positions"]["a"]
    assert p["final_pnl_unhedged"] == approx(40 - 140)
    assert p["final_pnl_hedged"] == approx(20 - 70 - 0.5 - 0.45)
    assert r["actions"]["tombstones"] == 1


def test_max_drawdown_counts_the_start_as_a_peak() -> None:
    assert max_drawdown(np.array([-5.0, 3.0, 1.0])) == (5.0, -1, 0)
    assert max_drawdown(np.array([1.0, 2.0])) == (0.0, -1, -1)


def sweep_report(tmp_path: Path, *extra: str) -> dict[str, Any]:
    ticks = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {
                "asset": "X",
                "ts": T0 + i * MIN,
                "current_price": 100.0 + (7 * i) % 11 - 5,
                "volatility_1d": 0.02 + 0.01 * ((3 * i) % 7),
                "spot_spread_bps": 1.0 + (i % 4) * 10,
            }
            for i in range(400)
        ],
    )
    out = tmp_path / f"out{len(extra)}"
    assert (
        replay(
            "--ticks",
            ticks,
            "--position",
            "X:10@100",
            "--position",
            "s=X:-40@101",
            "--sweep",
            "max_loss_pct=0.03,0.05,0.08",
            "--sweep",
            "max_hedge_cost_bps=20,50",
            "--out",
            out,
            *extra,
        )
        == 0
    )
    return read_report(out)


def test_the_sweep_gives_one_row_per_combination(tmp_path: Path) -> None:
    r = sweep_report(tmp_path)
    rows = r["sweep"]
    assert [s["label"] for s in rows] == [
        "max_loss_pct=0.03, max_hedge_cost_bps=20",
        "max_loss_pct=0.03, max_hedge_cost_bps=50",
        "max_loss_pct=0.05, max_hedge_cost_bps=20",
        "max_loss_pct=0.05, max_hedge_cost_bps=50",
        "max_loss_pct=0.08, max_hedge_cost_bps=20",
        "max_loss_pct=0.08, max_hedge_cost_bps=50",
    ]
    assert rows[3]["overrides"] == {"max_loss_pct": 0.05, "max_hedge_cost_bps": 50}
    # The defaults are 0.05 / 50: that row is the main run.
    base = rows[3]["summary"]
    assert base["actions_published"] == r["actions"]["published"]
    assert base["hedge_cost_usd"] == approx(r["hedge_cost"]["total_usd"])
    assert base["max_drawdown_hedged"] == approx(r["pnl"]["book"]["max_drawdown_hedged"])
    # Every policy sees the same market: the unhedged drawdown is the same for all.
    assert len({s["summary"]["max_drawdown_unhedged"] for s in rows}) == 1
    # The policies differ: a tighter loss limit hedges more.
    assert rows[0]["summary"]["by_action"] != rows[5]["summary"]["by_action"]
    for s in rows:
        sm = s["summary"]
        assert sm["drawdown_saved"] == approx(
            sm["max_drawdown_unhedged"] - sm["max_drawdown_hedged"]
        )


def test_the_sweep_is_the_same_on_both_paths(tmp_path: Path) -> None:
    fast = sweep_report(tmp_path)
    scalar = sweep_report(tmp_path, "--path", "scalar")  # all policies in lockstep
    assert scalar["sweep"] == fast["sweep"]


def test_a_bad_sweep_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ticks = write_jsonl(tmp_path / "t.jsonl", [{"asset": "X", "ts": T0, "current_price": 1.0}])
    assert replay("--ticks", ticks, "--sweep", "max_loss=0.1", "--out", tmp_path / "o") == 2
    assert "'max_loss' is not a risk config field" in capsys.readouterr().err
    assert replay("--ticks", ticks, "--sweep", "max_loss_pct=2", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "--sweep policy max_loss_pct=2: max_loss_pct: Input should be less than or equal" in err
