"""Net hedging in replay (issue 14, docs/design.md D17b): each asset's net position hedged
by the net advice, beside each position hedged on its own, worked by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import CANDLES, MIN, T0, read_report, replay, write_jsonl

approx = pytest.approx

FIGURES = (
    "hedge_cost_usd",
    "spread_cost_usd",
    "funding_cost_usd",
    "hedge_changes",
    "traded_notional_usd",
    "final_pnl",
    "max_drawdown",
)


def ticks(tmp_path: Path) -> Path:
    """X, spread 10 bps, depths 1e6, funding 0 (full hedge 10 bps < 50: hedges are placed).

    t  price vol   score of a +50, a −40 and their net +10 (loss + age + vol + liquidity)
    0  100   0.01  6 + 0 + 2.5 + ≤ 0.075 ≈ 8.5                 HOLD           h 0
    1  110   0.10  30 + 0.042 + 25 + ≤ 0.083 ≈ 55.1            HEDGE_PARTIAL  h 0.5
    2   90   0.10  ≈ 55.1 (moved < 1 point: not published)     HEDGE_PARTIAL  h 0.5
    3   95   0.01  6 + 0.125 + 2.5 + ≤ 0.071 ≈ 8.7              HOLD           h 0
    4  100   0.01  ≈ 8.7                                        HOLD           h 0
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
    return write_jsonl(tmp_path / "t.jsonl", rows)


def run(tmp_path: Path, *positions: str) -> dict[str, Any]:
    out = tmp_path / "out"
    args: list[str | Path] = ["--ticks", ticks(tmp_path), "--out", out]
    for p in positions:
        args += ["--position", p]
    assert replay(*args) == 0
    nh: dict[str, Any] = read_report(out)["net_hedging"]
    return nh


def test_two_sided_book_worked_by_hand(tmp_path: Path) -> None:
    nh = run(tmp_path, "a=X:50@100", "b=X:-40@100")
    each, net = nh["per_position"], nh["net"]
    # Each position on its own: at t1 a sells 25 X and b buys 20 X at 110 (45 × 110 × 10 bps
    # = 4.95); at t3 both unwind at 95 (45 × 95 × 10 bps = 4.275): 4 changes, 9.225.
    assert each["hedge_cost_usd"] == approx(9.225)
    assert each["spread_cost_usd"] == approx(9.225)
    assert each["funding_cost_usd"] == 0.0
    assert each["hedge_changes"] == 4
    assert each["traded_notional_usd"] == approx(45 * 110 + 45 * 95)
    # Net: +10 X at h 0.5: sell 5 X at 110 (0.55), buy them back at 95 (0.475): 2 changes.
    assert net["hedge_cost_usd"] == approx(1.025)
    assert net["spread_cost_usd"] == approx(1.025)
    assert net["hedge_changes"] == 2
    assert net["traded_notional_usd"] == approx(5 * 110 + 5 * 95)
    assert nh["saving_usd"] == approx(8.2)
    assert nh["saving_pct"] == approx(8.2 / 9.225 * 100)
    assert nh["funding_counted"] is True  # charged on perp hedges; none here (spot)
    # The same exposure after the hedge (10 × 0.5 = 5 X), so the P&L differs by the costs:
    # book 10 X: +100 at t1, −20 × 5 = −100 at t2, +5 × 5 = +25 at t3, +5 × 10 = +50 at t4.
    #   each: 100 − 4.95 = 95.05, −4.95, −4.95 + 25 − 4.275 = 15.775, 65.775
    #   net:  100 − 0.55 = 99.45, −0.55, −0.55 + 25 − 0.475 = 23.975, 73.975
    assert each["final_pnl"] == approx(65.775)
    assert net["final_pnl"] == approx(73.975)
    assert each["max_drawdown"] == approx(100.0)  # 95.05 -> −4.95
    assert net["max_drawdown"] == approx(100.0)  # 99.45 -> −0.55
    leg = nh["net_by_asset"]["X"]
    assert leg["hedge_cost_usd"] == approx(1.025)
    assert leg["hedge_pnl_usd"] == approx(-5 * -20 + -5 * 5)  # the 5 X sold, over t2 and t3
    assert leg["held_at_end"] == 0.0
    assert leg["assessments"] == 5


def test_a_close_resizes_the_net_hedge(tmp_path: Path) -> None:
    pos = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"position_id": "a", "asset": "X", "size": 50, "entry_price": 100, "ts": T0},
            {"position_id": "b", "asset": "X", "size": -40, "entry_price": 100, "ts": T0},
            {"position_id": "b", "closed": True, "ts": T0 + 2 * MIN},
        ],
    )
    out = tmp_path / "out"
    assert replay("--ticks", ticks(tmp_path), "--positions", pos, "--out", out) == 0
    nh = read_report(out)["net_hedging"]
    # Each: t1 sell 25 + buy 20 at 110 (4.95); t2 b closes, its 20 unwound at 90 (1.8);
    # t3 a unwinds 25 at 95 (2.375): 9.125 over 4 changes.
    assert nh["per_position"]["hedge_cost_usd"] == approx(4.95 + 1.8 + 2.375)
    assert nh["per_position"]["hedge_changes"] == 4
    # Net: t1 sell 5 at 110 (0.55); t2 the net is +50 at h 0.5: sell 20 more at 90 (1.8);
    # t3 buy 25 back at 95 (2.375): 4.725 over 3 changes.
    assert nh["net"]["hedge_cost_usd"] == approx(0.55 + 1.8 + 2.375)
    assert nh["net"]["hedge_changes"] == 3
    assert nh["saving_usd"] == approx(4.4)
    # After t2 both hold 25 X against a +50 book: the same P&L but for the costs.
    assert nh["net"]["final_pnl"] - nh["per_position"]["final_pnl"] == approx(4.4)


def assert_same(nh: dict[str, Any]) -> None:
    each, net = nh["per_position"], nh["net"]
    for k in FIGURES:
        assert net[k] == approx(each[k], rel=1e-12, abs=1e-9), k
    assert nh["saving_usd"] == approx(0.0, abs=1e-9)


def test_one_position_is_hedged_the_same_either_way(tmp_path: Path) -> None:
    nh = run(tmp_path, "X:10@100")
    assert_same(nh)
    assert nh["net"]["hedge_cost_usd"] == approx(1.025)  # test_report's tiny history
    assert nh["saving_pct"] == approx(0.0, abs=1e-9)


def test_one_position_on_the_candles_is_hedged_the_same_either_way(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("--ticks", CANDLES, "--map", "current_price=close,ts=open_time", "--asset", "ETH")
    assert replay(*args, "--position", "ETH:100@3400", "--out", out) == 0
    nh = read_report(out)["net_hedging"]
    assert nh["per_position"]["hedge_changes"] > 0
    assert_same(nh)


def test_the_cli_on_the_candles_writes_the_net_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        replay(
            "--ticks",
            CANDLES,
            "--map",
            "current_price=close,ts=open_time",
            "--asset",
            "ETH",
            "--position",
            "long=ETH:100@3400",
            "--position",
            "short=ETH:-60@3500",
            "--out",
            out,
            "--no-progress",
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "each position hedged on its own" in stdout and "net hedging" in stdout
    nh = read_report(out)["net_hedging"]
    each, net = nh["per_position"], nh["net"]
    assert set(FIGURES) <= set(each) and set(FIGURES) <= set(net)
    assert 0 < net["hedge_cost_usd"] < each["hedge_cost_usd"]
    assert nh["saving_usd"] == approx(each["hedge_cost_usd"] - net["hedge_cost_usd"])
    assert net["traded_notional_usd"] < each["traded_notional_usd"]
    page = (out / "report.html").read_text()
    assert "Net hedging vs each position hedged on its own" in page
    assert (out / "chart.png").stat().st_size > 0
    # The scalar path gives the same report.
    out2 = tmp_path / "out2"
    argv = (
        "--ticks",
        CANDLES,
        "--map",
        "current_price=close,ts=open_time",
        "--asset",
        "ETH",
        "--position",
        "long=ETH:100@3400",
        "--position",
        "short=ETH:-60@3500",
        "--path",
        "scalar",
        "--out",
        out2,
        "--no-progress",
    )
    assert replay(*argv) == 0
    assert read_report(out2)["net_hedging"] == read_report(out)["net_hedging"]


def test_each_sweep_row_has_the_net_figures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ("--ticks", ticks(tmp_path), "--position", "a=X:50@100", "--position", "b=X:-40@100")
    assert replay(*argv, "--sweep", "max_hedge_cost_bps=5,50", "--out", out) == 0
    rows = {r["label"]: r["summary"] for r in read_report(out)["sweep"]}
    assert len(rows) == 2
    cheap, normal = (rows[k] for k in sorted(rows))
    # max_hedge_cost_bps 5 < the 10 bps spread: HOLD throughout, nothing hedged either way.
    assert cheap["hedge_cost_usd"] == cheap["net_hedge_cost_usd"] == 0.0
    assert normal["hedge_cost_usd"] == approx(9.225)
    assert normal["net_hedge_cost_usd"] == approx(1.025)
    assert normal["net_saving_usd"] == approx(8.2)
    assert normal["net_final_pnl"] == approx(73.975)
