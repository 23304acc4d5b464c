"""`stream-risk replay` end to end: the shipped candles sample (a real exchange export
shape) twice, identically, with the report's numbers checked against an independent
computation from the CSV and the actions; bad input files as clear errors."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from stream_risk.replay.timestamps import iso_to_ms

from . import CANDLES, MIN, T0, read_actions, read_report, replay, write_csv

approx = pytest.approx
SIZE = 40.0
SPREAD_BPS = 2.0  # the replay default: the candles carry no spread


def run_candles(out: Path, *extra: str) -> int:
    return replay(
        "--ticks",
        CANDLES,
        "--map",
        "current_price=close,ts=open_time",
        "--asset",
        "ETH",
        "--position",
        f"ETH:{SIZE:g}@3400",
        "--out",
        out,
        "--no-progress",
        *extra,
    )


@pytest.fixture(scope="module")
def candles_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("candles") / "out"
    assert run_candles(out) == 0
    return out


def closes() -> tuple[list[int], list[float]]:
    with CANDLES.open() as f:
        rows = list(csv.DictReader(f))
    return [iso_to_ms(r["open_time"]) for r in rows], [float(r["close"]) for r in rows]


def test_same_input_same_bytes_twice_and_on_both_paths(candles_out: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    scalar = tmp_path / "scalar"
    assert run_candles(again) == 0
    assert run_candles(scalar, "--path", "scalar") == 0
    for name in ("actions.jsonl", "report.json", "report.html", "chart.png"):
        first = (candles_out / name).read_bytes()
        assert len(first) > 1000, name
        assert (again / name).read_bytes() == first, name
        assert (scalar / name).read_bytes() == first, name


def test_the_report_numbers_against_an_independent_computation(candles_out: Path) -> None:
    ts, close = closes()
    r = read_report(candles_out)
    acts = read_actions(candles_out)
    assert r["inputs"]["tick_records"] == 2880
    assert r["inputs"]["volatility_1d"] == "estimated"
    assert r["inputs"]["ignored_columns"] == "open, high, low, volume"
    assert any("spot_spread_bps never given: default 2" in a for a in r["assumptions"])
    # The vol estimate needs 20 returns: the position waits until the 21st candle.
    assert acts[0]["event_ts"] == ts[20] and acts[0]["trigger"] == "tick"
    assert r["engine"]["waiting"] == 20

    # Unhedged: 40 ETH marked at every close from the first one.
    pnl = [SIZE * (c - close[0]) for c in close]
    assert r["pnl"]["book"]["final_pnl_unhedged"] == approx(pnl[-1], abs=1e-6)
    peak, mdd = 0.0, 0.0
    for v in pnl:
        peak = max(peak, v)
        mdd = max(mdd, peak - v)
    assert r["pnl"]["book"]["max_drawdown_unhedged"] == approx(mdd, abs=1e-6)

    # Following the advice: h from each published action on; the move into a candle at the
    # action's own time is still under the previous h; each change of h pays the spread.
    changes = [(a["event_ts"], a["hedge_pct"]) for a in acts]
    h, j, hedged, cost, peak_h, mdd_h = 0.0, 0, 0.0, 0.0, 0.0, 0.0
    for i in range(1, len(close)):
        hedged += SIZE * (1 - h) * (close[i] - close[i - 1])
        peak_h = max(peak_h, hedged)
        mdd_h = max(mdd_h, peak_h - hedged)
        while j < len(changes) and changes[j][0] <= ts[i]:
            paid = abs(changes[j][1] - h) * SIZE * close[i] * SPREAD_BPS / 10_000
            hedged -= paid
            cost += paid
            h = changes[j][1]
            j += 1
            peak_h = max(peak_h, hedged)
            mdd_h = max(mdd_h, peak_h - hedged)
    assert r["hedge_cost"]["total_usd"] == approx(cost, abs=1e-6)
    assert r["pnl"]["book"]["final_pnl_hedged"] == approx(hedged, abs=1e-6)
    assert r["pnl"]["book"]["max_drawdown_hedged"] == approx(mdd_h, abs=1e-6)
    assert sum(r["hedge_cost"]["per_day_usd"].values()) == approx(cost, abs=1e-6)

    # Counts and time: every action counted once; the bands cover first action -> last close.
    by_action = {a: sum(1 for x in acts if x["action"] == a) for a in r["actions"]["by_action"]}
    assert r["actions"]["by_action"] == by_action
    assert r["actions"]["published"] == len(acts)
    hours = (ts[-1] - ts[20]) / 3_600_000
    assert sum(r["time_in_band_hours"].values()) == approx(hours)
    assert sum(r["time_in_action_hours"].values()) == approx(hours)
    # The second day is the volatile sell-off: the advice ends fully hedged or liquidating.
    assert acts[-1]["action"] in ("HEDGE_FULL", "LIQUIDATE")
    assert r["pnl"]["book"]["max_drawdown_hedged"] < r["pnl"]["book"]["max_drawdown_unhedged"]


def test_the_html_report_and_the_chart(candles_out: Path) -> None:
    page = (candles_out / "report.html").read_text()
    assert "<img src='chart.png'" in page and "Policy sweep" not in page
    assert "Time in each risk band" in page and "Worst move survived" in page
    assert (candles_out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def bad_csv(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "bad.csv",
        [
            {"asset": "BTC", "ts": T0, "current_price": 100.0, "volatility_1d": 0.05},
            {"asset": "BTC", "ts": T0 + MIN, "current_price": "oops", "volatility_1d": 0.05},
            {"asset": "BTC", "ts": T0 + 2 * MIN, "current_price": 101.0, "volatility_1d": 0.05},
        ],
    )


def test_a_bad_file_is_a_clear_error_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bad_csv(tmp_path)
    assert replay("--ticks", path, "--position", "BTC:1@100", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"stream-risk replay: {path}, line 3, field current_price: ")
    assert "expected a number, got 'oops'" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "actions.jsonl").exists()


def test_skip_bad_counts_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    path = bad_csv(tmp_path)
    assert replay("--ticks", path, "--position", "BTC:1@100", "--out", out, "--skip-bad") == 0
    assert "skipped 1 bad tick record(s)" in capsys.readouterr().err
    r = read_report(out)
    assert r["inputs"]["bad_records_skipped"] == 1 and r["inputs"]["tick_records"] == 2
    assert "line 3, field current_price" in r["bad_records"][0]


def test_the_module_entry_point_never_prints_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_risk.replay",
            "--ticks",
            str(bad_csv(tmp_path)),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "line 3, field current_price" in proc.stderr and "Traceback" not in proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "stream_risk.replay", "--ticks", str(tmp_path / "nope.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_settings_file_sets_the_policy(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('emit = "all"\n[risk]\nmax_hedge_cost_bps = 1\n')
    out = tmp_path / "o"
    assert run_candles(out, "--config", str(cfg)) == 0
    r = read_report(out)
    assert r["config"]["emit"] == "all" and r["config"]["risk"]["max_hedge_cost_bps"] == 1
    # 2 bps of spread > 1 bps allowed: never hedged; every assessment published.
    assert r["actions"]["by_action"]["HOLD"] == r["actions"]["published"] == 2880 - 20
    assert r["hedge_cost"]["total_usd"] == 0
