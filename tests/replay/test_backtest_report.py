"""Issue 16 part 4, the backtest report a quant trusts: funding charged on the hedge, the
static 50 % benchmark, turnover, drawdown and time under water, the daily table, volatility
and return/risk, the ranked sweep and its never-binds note, and bad input refused."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream_risk.assessor import hedge_at
from stream_risk.replay.metrics import daily_pnl, days, path_risk, under_water
from stream_risk.replay.pnl import funding_cost

from . import CANDLES, MIN, T0, read_report, replay, write_csv, write_jsonl

approx = pytest.approx
DAY = 86_400_000
HOUR = 3_600_000
#: A funding rate that pays 0.0001 of the notional a minute: 52.56 × 1 / (365 × 1,440).
F = 52.56


def tiny(tmp_path: Path, *extra: str, funding: float = F) -> Path:
    """The tiny history of test_report.py (long 10 X @ 100; HEDGE_PARTIAL 0.5 published at
    t1, HOLD at t3, prices 100, 110, 90, 95, 100 a minute apart, spread 10 bps), with
    funding `funding` on every tick: above the 0.02 threshold, so a long hedges with a
    short perp (it receives the funding). Funding does not change the actions (a short
    hedge's funding is income, and the model counts only a cost)."""
    vols = [0.01, 0.10, 0.10, 0.01, 0.01]
    prices = [100.0, 110.0, 90.0, 95.0, 100.0]
    rows = [
        {
            "asset": "X",
            "ts": T0 + i * MIN,
            "current_price": p,
            "volatility_1d": v,
            "spot_spread_bps": 10.0,
            "perp_funding_rate": funding,
            "bid_depth_usd": 1e6,
            "ask_depth_usd": 1e6,
        }
        for i, (p, v) in enumerate(zip(prices, vols, strict=True))
    ]
    ticks = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out"
    code = replay("--ticks", ticks, "--position", "X:10@100", "--out", out, *extra)
    assert code == 0
    return out


def test_funding_over_a_day_is_the_models_one_day_funding() -> None:
    # A 5 X short hedge (of a long) at 110 with funding 10 %/yr, held one day: it receives
    # 5 × 110 × 0.10 / 365 = 0.150684931... (by hand), the core's 1-day funding.
    got = funding_cost(
        np.array([5.0]), np.array([1.0]), np.array([110.0]), np.array([0.1]), np.array([DAY])
    )
    assert got[0] == approx(-0.15068493150684931)
    assert got[0] == approx(hedge_at(10.0, 110.0, 10.0, 0.1, 0.5).funding_cost_1d_usd)
    # A long hedge (of a short position) pays positive funding; a spot hedge pays none.
    held, spot = np.array([-5.0, 5.0]), np.array([1.0, 0.0])
    got = funding_cost(held, spot, np.full(2, 110.0), np.full(2, 0.1), np.full(2, DAY))
    assert got.tolist() == approx([0.15068493150684931, 0.0])


def test_funding_is_charged_while_the_perp_hedge_is_held_worked_by_hand(tmp_path: Path) -> None:
    r = read_report(tiny(tmp_path))
    adv = r["paths"]["advice"]
    # The 5 X short perp hedge is held over two moves: into t2 (from 110) and into t3 (from
    # 90; the unwind at t3 applies after the move into t3). Each minute pays
    # −5 × price × 52.56 × 60,000 / (365 × 86,400,000) = −5 × price × 0.0001:
    #   −0.055 − 0.045 = −0.1 (received).
    assert adv["funding_cost_usd"] == approx(-0.1)
    # Spread as in test_report.py: 5 × 110 × 10 bps + 5 × 95 × 10 bps = 0.55 + 0.475.
    assert adv["spread_cost_usd"] == approx(1.025)
    assert adv["hedge_cost_usd"] == approx(0.925)
    assert r["hedge_cost"]["funding_usd"] == approx(-0.1)
    assert r["hedge_cost"]["spread_usd"] == approx(1.025)
    # 73.975 without funding (test_report.py) + 0.1 received.
    assert adv["final_pnl_usd"] == approx(74.075)
    assert r["pnl"]["book"]["final_pnl_hedged"] == approx(74.075)
    # Turnover: two hedge changes, 5 X at 110 and 5 X at 95.
    assert adv["hedge_changes"] == 2
    assert adv["traded_notional_usd"] == approx(5 * 110 + 5 * 95)


def test_no_funding_on_a_spot_hedge(tmp_path: Path) -> None:
    # Funding 0.01 is under the 0.02 threshold: the hedge is spot_sell, no funding charged.
    r = read_report(tiny(tmp_path, funding=0.01))
    assert r["paths"]["advice"]["funding_cost_usd"] == 0.0
    assert r["paths"]["static"]["funding_cost_usd"] == 0.0
    assert r["paths"]["advice"]["final_pnl_usd"] == approx(73.975)


def test_the_static_50_pct_path_worked_by_hand(tmp_path: Path) -> None:
    r = read_report(tiny(tmp_path))
    st = r["paths"]["static"]
    assert st["name"] == "static 50 % hedge"
    # Hedge 5 X from the opening at t0 (at 100: spread 0.5), held throughout (never
    # unwound: the data ends with it open). Moves 10 × 0.5 × (+10, −20, +5, +5); funding
    # received −5 × (100 + 110 + 90 + 95) × 0.0001 = −0.1975.
    #   t0 −0.5; t1 49.55; t2 −50.395; t3 −25.35; t4 −0.3025
    assert st["spread_cost_usd"] == approx(0.5)
    assert st["funding_cost_usd"] == approx(-0.1975)
    assert st["hedge_cost_usd"] == approx(0.3025)
    assert st["hedge_changes"] == 1
    assert st["traded_notional_usd"] == approx(500.0)
    assert st["final_pnl_usd"] == approx(-0.3025)
    assert st["max_drawdown_usd"] == approx(49.55 + 50.395)
    # Under water at t0 (−0.5 below the start's 0) for a minute, and from t2 to the end
    # (t4): 2 minutes, the longest; 3 minutes in all.
    assert st["longest_under_water_hours"] == approx(2 / 60)
    assert st["total_under_water_hours"] == approx(3 / 60)


def test_drawdown_when_and_time_under_water_of_the_three_paths(tmp_path: Path) -> None:
    r = read_report(tiny(tmp_path))
    un, adv = r["paths"]["unhedged"], r["paths"]["advice"]
    # Unhedged 0, 100, −100, −50, 0: 200 from the peak at t1 to t2; under water t2 -> t4.
    assert un["max_drawdown_usd"] == approx(200.0)
    assert un["max_drawdown_peak"] == "2023-11-14T22:14:20.000Z"  # T0 + 1 minute
    assert un["max_drawdown_trough"] == "2023-11-14T22:15:20.000Z"
    assert un["longest_under_water_hours"] == approx(2 / 60)
    assert un["longest_under_water_from"] == "2023-11-14T22:15:20.000Z"
    assert un["longest_under_water_to"] == "2023-11-14T22:17:20.000Z"
    assert un["total_under_water_hours"] == approx(2 / 60)
    # Following the advice: t1 99.45, t2 −0.495 (−100 + 0.055 funding), t3 24.075, t4
    # 74.075: 99.945 from t1 to t2; under water from t2 to the end.
    assert adv["max_drawdown_usd"] == approx(99.945)
    assert adv["max_drawdown_peak"] == "2023-11-14T22:14:20.000Z"
    assert adv["total_under_water_hours"] == approx(2 / 60)
    # One UTC day of data: no volatility, no return/risk (both need 2 days).
    assert adv["days"] == 1 and adv["daily_vol_usd"] is None and adv["return_risk"] is None


def test_the_daily_table_of_one_day(tmp_path: Path) -> None:
    r = read_report(tiny(tmp_path))
    assert r["daily"] == [
        {
            "day": "2023-11-14",
            "unhedged_usd": approx(0.0),
            "advice_usd": approx(74.075),
            "static_usd": approx(-0.3025),
            "advice_spread_usd": approx(1.025),
            "advice_funding_usd": approx(-0.1),
            "static_spread_usd": approx(0.5),
            "static_funding_usd": approx(-0.1975),
        }
    ]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Daily P&amp;L (UTC days)" in page
    assert "<td>2023-11-14</td><td>$0.00</td><td>$74.08</td><td>−$0.30</td>" in page
    assert "static 50 % hedge" in page and "return/risk (annualised, Sharpe-like)" in page


def test_daily_pnl_volatility_and_return_risk_over_days_worked_by_hand() -> None:
    d0 = 1_709_510_400_000  # 2024-03-04T00:00:00Z
    ts = np.array([d0 + HOUR, d0 + 23 * HOUR, d0 + DAY + 12 * HOUR, d0 + 3 * DAY + 6 * HOUR])
    values = np.array([100.0, 150.0, 50.0, 80.0])
    mids = days(ts)
    assert mids.tolist() == [d0, d0 + DAY, d0 + 2 * DAY, d0 + 3 * DAY]
    # End-of-day values 150, 50, 50 (no points: unchanged), 80.
    assert daily_pnl(ts, values, mids).tolist() == approx([150.0, -100.0, 0.0, 30.0])
    end = d0 + 3 * DAY + 12 * HOUR
    r = path_risk(ts, values, end, mids)
    vol = statistics.stdev([150.0, -100.0, 0.0, 30.0])  # sample std, n − 1
    assert r["daily_vol_usd"] == approx(vol)
    assert r["return_risk"] == approx(statistics.mean([150.0, -100.0, 0.0, 30.0]) / vol * 365**0.5)
    assert r["final_pnl_usd"] == 80.0
    # 150 -> 50: 100, from d0 23:00 to d1 12:00; under water from d1 12:00 to the end, 48 h.
    assert r["max_drawdown_usd"] == approx(100.0)
    assert r["max_drawdown_peak"] == "2024-03-04T23:00:00.000Z"
    assert r["max_drawdown_trough"] == "2024-03-05T12:00:00.000Z"
    assert r["longest_under_water_hours"] == approx(48.0)
    assert r["total_under_water_hours"] == approx(48.0)


def test_under_water_longest_spell_and_total() -> None:
    # 0 -> −1 (1 h under) -> 2 (peak) -> 1, 1.5 (2 h under) -> 3 (peak) -> 2 (to the end, 0.5 h)
    ts = np.array([0, 1, 2, 3, 4, 5], dtype=np.int64) * HOUR
    v = np.array([-1.0, 2.0, 1.0, 1.5, 3.0, 2.0])
    longest, start, stop, total = under_water(ts, v, int(5.5 * HOUR))
    assert (longest, start, stop) == (2 * HOUR, 2 * HOUR, 4 * HOUR)
    assert total == int(3.5 * HOUR)


def test_the_sweep_is_ranked_and_says_which_field_never_binds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # max_hedge_cost_bps 5 is below the full hedge's 10 bps: never hedged (HOLD), P&L 0,
    # cost 0; at 50 the advice of the tiny history (P&L 74.075, cost 0.925).
    # funding_threshold changes no action on this data: it never binds.
    sweep = ("--sweep", "max_hedge_cost_bps=5,50", "--sweep", "funding_threshold=0.02,0.05")
    r = read_report(tiny(tmp_path, *sweep))
    out = capsys.readouterr().out
    rank = {row["label"]: row["rank"] for row in r["sweep"]}
    assert rank == {
        "max_hedge_cost_bps=5, funding_threshold=0.02": 3,
        "max_hedge_cost_bps=5, funding_threshold=0.05": 4,
        "max_hedge_cost_bps=50, funding_threshold=0.02": 1,
        "max_hedge_cost_bps=50, funding_threshold=0.05": 2,
    }
    best = r["sweep"][2]["summary"]
    assert best["final_pnl_hedged"] == approx(74.075)
    assert r["sweep_ranking"]["rank_by"] == "net_pnl"
    note = (
        "funding_threshold never binds on this data: every value gave the same actions (0.02, 0.05)"
    )
    assert r["sweep_ranking"]["notes"] == [note]
    assert f"note: {note}" in out
    assert "1. max_hedge_cost_bps=50, funding_threshold=0.02" in out
    page = (tmp_path / "out" / "report.html").read_text()
    assert note in page and "<img src='sweep.png'" in page
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in (page, out):
        assert "{'" not in text and "['" not in text


def test_rank_by_hedge_cost_puts_the_cheapest_first(tmp_path: Path) -> None:
    sweep = ("--sweep", "max_hedge_cost_bps=50,5", "--rank-by", "hedge_cost")
    r = read_report(tiny(tmp_path, *sweep))
    assert r["sweep_ranking"]["best_first"] == ["max_hedge_cost_bps=5", "max_hedge_cost_bps=50"]
    assert r["sweep_ranking"]["notes"] == []  # the field binds: its values differ


def test_an_unknown_rank_by_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay("--ticks", CANDLES, "--rank-by", "sharpe") == 2
    assert "invalid choice: 'sharpe'" in capsys.readouterr().err


def test_no_positions_is_refused_saying_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--ticks", CANDLES, "--map", "current_price=close,ts=open_time", "--asset", "ETH")
    assert replay(*args, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "no positions were given, so there is nothing to assess" in err
    assert "--position ETH:10@3397.55" in err  # the first close of the file
    assert not (tmp_path / "o" / "report.json").exists()
    empty = write_jsonl(tmp_path / "p.jsonl", [])
    empty.write_text("\n")
    assert replay(*args, "--positions", empty, "--out", tmp_path / "o") == 2
    assert "holds no position records" in capsys.readouterr().err


def test_seconds_read_as_ms_are_refused_naming_the_column_and_the_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"sym": "X", "time": T0 // 1000 + i * 60, "px": 100.0 + i} for i in range(3)]
    ticks = write_csv(tmp_path / "t.csv", rows)
    args = ("--ticks", ticks, "--map", "ts=time,asset=sym,current_price=px", "--position", "X:1@1")
    assert replay(*args, "--ts-unit", "ms", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "t.csv, line 2, field ts: column 'time' holds 1700000000" in err
    assert "read as 1970-01-20" in err and "outside 2000-01-01 .. " in err
    assert "these look like epoch seconds read as ms: pass --ts-unit s" in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_a_price_column_mapped_as_ts_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--ticks", CANDLES, "--map", "current_price=close,ts=close", "--asset", "ETH")
    assert replay(*args, "--position", "ETH:1@3400", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "line 2, field ts: column 'close' holds 3397.55" in err
    assert "this does not look like a time (a price or a count?): check --map ts=COLUMN" in err


def test_a_time_after_next_year_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ticks = write_jsonl(
        tmp_path / "t.jsonl", [{"asset": "X", "ts": "2099-01-01T00:00:00Z", "current_price": 1}]
    )
    assert replay("--ticks", ticks, "--position", "X:1@1", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "column 'ts' holds 2099-01-01T00:00:00, read as 2099-01-01T00:00:00.000Z:" in err
    assert "a date too far ahead: check the data (or --map ts=COLUMN)" in err


def run_process(*argv: str | Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "stream_risk.replay", *map(str, argv), "--no-progress"]
    return subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=60)


def test_ticks_from_stdin_as_a_process(tmp_path: Path) -> None:
    out = tmp_path / "o"
    res = run_process(
        "--ticks",
        "-",
        "--map",
        "current_price=close,ts=open_time",
        "--asset",
        "ETH",
        "--position",
        "ETH:10@3400",
        "--out",
        out,
        stdin=CANDLES.read_bytes(),
    )
    assert res.returncode == 0, res.stderr.decode()
    r = read_report(out)
    assert r["inputs"]["ticks_file"] == "<stdin>"
    assert r["inputs"]["tick_records"] == 2880  # every candle of the file
    # A bad line on stdin is named as <stdin>, line N; exit 2.
    bad = b'{"asset": "X", "ts": 1700000000000, "current_price": 1}\n{"asset": "X", "ts": 1\n'
    res = run_process("--ticks", "-", "--position", "X:1@1", "--out", out, stdin=bad)
    assert res.returncode == 2
    assert "<stdin>, line 2: not valid JSON" in res.stderr.decode()


def test_the_chart_has_a_date_axis_and_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figure as drawn: the time axis shows dates (UTC), the P&L axes say USD."""
    from matplotlib.figure import Figure

    from stream_risk.replay import render

    seen: dict[str, list[str]] = {}

    def spy(fig: Figure, *a: object, **k: object) -> None:
        fig.canvas.draw()
        seen["ylabels"] = [ax.get_ylabel() for ax in fig.axes]
        seen["xlabel"] = [fig.axes[-1].get_xlabel()]
        seen["xticks"] = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
        seen["offset"] = [fig.axes[-1].xaxis.get_offset_text().get_text()]
        seen["yticks"] = [t.get_text() for t in fig.axes[0].get_yticklabels()]

    monkeypatch.setattr(Figure, "savefig", spy)
    tiny(tmp_path)
    assert seen["ylabels"] == [
        "book P&L (USD)",
        "P&L per position (USD)",
        "hedged (%)",
        "hedge traded,\nnotional (USD)",
    ]
    assert seen["xlabel"] == ["time (UTC)"]
    # Minutes on 2023-11-14 (UTC): clock times, the date in the offset; no "days since".
    assert "22:14" in seen["xticks"] and "2023-Nov-14" in seen["offset"][0]
    assert any(t.startswith(("$", "−$")) for t in seen["yticks"])
    assert render.usd(-1234.5) == "−$1,234.50" and render.usd(None) == "–"
    assert render.usd(-1e-9) == "$0.00"
