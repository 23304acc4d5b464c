"""The demo's desk controls (issue 16, part 3), without a broker: the limit it sets is
breached now and then by the book the simulator holds; alerts are readable lines; the
terminal view fits 80×24 with the columns that matter first, and shows more when wider."""

from __future__ import annotations

import io
import itertools
import time
from typing import Any

import orjson
import pytest
from rich.console import Console

from stream_risk.demo.book import BookSimulator
from stream_risk.demo.desk import (
    AlertWatcher,
    DeskLimit,
    alert_line,
    choose_limit,
    net_notional,
    round_2sig,
)
from stream_risk.demo.feed import Feeder
from stream_risk.demo.market import MarketSimulator
from stream_risk.demo.options import DemoOptions
from stream_risk.demo.rich_view import RichView
from stream_risk.demo.view import DemoContext
from stream_risk.demo.watcher import ActionWatcher
from stream_risk.settings import Settings

TS = 1_796_000_000_000  # epoch ms
CLOCK = time.strftime("%H:%M:%S", time.localtime(TS / 1000))


# ---------------------------------------------------------------------- alert lines
@pytest.mark.parametrize(
    ("alert", "text"),
    [
        (
            {"key": "limit:asset:BTC:max_net_notional_usd", "kind": "exposure_limit",
             "state": "fired", "ts": TS,
             "details": {"scope": "asset:BTC", "limit": "max_net_notional_usd",
                         "limit_usd": 5_000_000.0, "value_usd": 6_120_000.0}},
            f"{CLOCK} FIRED   net notional limit BTC: $6.12M > $5.00M",
        ),
        (
            {"key": "limit:asset:BTC:max_net_notional_usd", "kind": "exposure_limit",
             "state": "cleared", "ts": TS,
             "details": {"scope": "asset:BTC", "limit": "max_net_notional_usd",
                         "limit_usd": 5_000_000.0}},
            f"{CLOCK} CLEARED net notional limit BTC: back under $5.00M",
        ),
        (
            {"key": "limit:book:max_gross_notional_usd", "kind": "exposure_limit",
             "state": "fired", "ts": TS,
             "details": {"scope": "book", "limit": "max_gross_notional_usd",
                         "limit_usd": 20e6, "value_usd": 21.5e6}},
            f"{CLOCK} FIRED   gross notional limit book: $21.50M > $20.00M",
        ),
        (
            {"key": "stale:asset:ETH", "kind": "stale_market_data", "state": "fired", "ts": TS,
             "details": {"asset": "ETH", "tick_ts": TS - 6000, "max_tick_age_ms": 5000}},
            f"{CLOCK} FIRED   stale market data ETH: no tick for over 5 s",
        ),
        (
            {"key": "liquidate:position:SOL-002", "kind": "liquidate", "state": "fired",
             "ts": TS, "details": {"position_id": "SOL-002", "asset": "SOL",
                                   "risk_score": 81.25}},
            f"{CLOCK} FIRED   LIQUIDATE SOL-002 SOL (score 81.2)",
        ),
        ({"key": "x", "kind": "new_kind", "state": "fired", "ts": TS},
         f"{CLOCK} FIRED   new_kind x"),
        ({"kind": "exposure_limit", "state": "fired", "ts": TS, "details": "garbage"},
         f"{CLOCK} FIRED   limit ?: back under -"),
    ],
)  # fmt: skip
def test_alerts_are_readable_lines(alert: dict[str, Any], text: str) -> None:
    line = alert_line(alert)
    assert line == text
    assert "{" not in line and "'" not in line


def test_round_2sig() -> None:
    assert round_2sig(4_712_345.0) == 4_700_000.0
    assert round_2sig(987.0) == 990.0
    assert round_2sig(0.0) == 0.0


# ---------------------------------------------------------------------- the limit
@pytest.mark.parametrize("seed", [0, 2, 5])
def test_the_limit_is_breached_now_and_then(seed: int) -> None:
    """Chosen on copies (the simulators do not move); then the book as it really goes (a
    different step, as wall time jitters) is over it some of the time, not all, and
    crosses it more than once."""
    market = MarketSimulator(5, seed=seed)
    book = BookSimulator(market.symbols, market.price, target_positions=20, seed=seed + 1)
    market.snapshot_ticks(0)
    book.open_book(0)
    before = (market.price("BTC"), dict(book.counts))
    limit = choose_limit(market, book, 120.0, 0.25)
    assert limit is not None
    assert (market.price("BTC"), dict(book.counts)) == before
    over: list[bool] = []
    now = 0
    for _ in range(400):  # 120 s at 0.3 s
        now += 300
        market.step(now, 0.3)
        book.step(now, 0.3)
        over.append(abs(net_notional(book, market.price).get(limit.asset, 0.0)) > limit.limit_usd)
    share = sum(over) / len(over)
    crossings = sum(a != b for a, b in itertools.pairwise(over))
    assert 0.05 <= share <= 0.6, share
    assert crossings >= 2
    assert limit.limit_usd == round_2sig(limit.limit_usd)


# ---------------------------------------------------------------------- the terminal view
def action(pid: str, score: float, stale: bool) -> dict[str, Any]:
    return {
        "action": "HEDGE_PARTIAL",
        "risk_score": score,
        "position_notional_usd": 1_234_567.0,
        "suggested_hedge": {"instrument": "perp_short", "size": 1_452_500.0,
                            "total_cost_bps": 4.0},
        "risk_breakdown": {"loss_severity": 20, "position_age": 10, "volatility_regime": 15,
                           "size_vs_liquidity": 5},
        "pnl_scenarios": {"move_down_5pct": -61_000.0, "move_up_5pct": 61_000.0},
        "stale_market_data": stale,
        "trigger": "tick",
    }  # fmt: skip


def context(n_positions: int = 30) -> DemoContext:
    opts = DemoOptions(duration=60, seed=3)
    feeder = Feeder("127.0.0.1:1", Settings(), opts)
    feeder.opening_prices = {
        t["asset"]: t["current_price"] for t in feeder.market.snapshot_ticks(0)
    }
    feeder.book.open_book(0)
    watcher = ActionWatcher("127.0.0.1:1", "risk-actions")
    for i in range(n_positions):
        watcher._apply(f"DOGE-{i:03d}".encode(), orjson.dumps(action(f"p{i}", 50 + i, i % 4 == 0)))
    alerts = AlertWatcher("127.0.0.1:1", "risk-alerts")
    alerts.apply(orjson.dumps({"key": "limit:asset:BTC:max_net_notional_usd",
        "kind": "exposure_limit", "state": "fired", "ts": TS, "details": {"scope": "asset:BTC",
        "limit": "max_net_notional_usd", "limit_usd": 5e6, "value_usd": 6.1e6}}))  # fmt: skip
    alerts.apply(orjson.dumps({"key": "stale:asset:ETH", "kind": "stale_market_data",
        "state": "fired", "ts": TS,
        "details": {"asset": "ETH", "max_tick_age_ms": 5000}}))  # fmt: skip
    ctx = DemoContext(opts, feeder, watcher)
    ctx.alerts = alerts
    ctx.limit = DeskLimit("BTC", 5e6, 4.4e6)
    ctx.exposure = {"assets": {"BTC": {"net_notional_usd": 6.1e6}}}
    ctx.urls = ["http://127.0.0.1:8080"]
    ctx.broker = "127.0.0.1:39975"
    ctx.ready = True
    return ctx


def rendered(width: int, height: int, ctx: DemoContext) -> list[str]:
    console = Console(width=width, height=height, file=io.StringIO(), record=True,
                      color_system=None, legacy_windows=False)  # fmt: skip
    console.print(RichView(ctx, console).render())
    return console.export_text().splitlines()


def test_the_terminal_view_fits_80x24_with_the_columns_that_matter() -> None:
    lines = rendered(80, 24, context())
    assert len(lines) <= 24, "\n".join(lines)
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    header = next(line for line in lines if line.lstrip().startswith("position "))
    assert header.split() == ["position", "action", "score", "hedge", "stale"]
    assert "HEDGE_PARTIAL" in text and "perp_short 1,452,500 (4.0 bps)" in text
    assert "STALE" in text
    assert "BTC net $6.10M / limit $5.00M BREACHED" in text
    assert "2 active alerts" in text
    assert f"{CLOCK} FIRED   net notional limit BTC: $6.10M > $5.00M" in text
    assert "more on the dashboard" in text  # 30 positions do not fit in 24 lines
    assert "{'" not in text


def test_a_wider_taller_terminal_shows_the_rest() -> None:
    lines = rendered(160, 60, context(8))
    assert all(len(line) <= 160 for line in lines)
    assert len(lines) <= 60
    header = next(line for line in lines if line.lstrip().startswith("position "))
    assert header.split()[:4] == ["position", "size", "notional", "action"]
    text = "\n".join(lines)
    assert "loss/age/vol/liq" in text and "P&L -5% / +5%" in text
    assert "market · regime" in text and "new actions" in text
    assert "more on the dashboard" not in text


def test_choosing_the_limit_of_a_big_book_stays_quick() -> None:
    """`--positions 5000`: the look-ahead is cut to a bounded number of book events, so the
    demo's start is not held up (unbounded, a 300 s look-ahead took 30 s here)."""
    market = MarketSimulator(8, seed=3)
    book = BookSimulator(market.symbols, market.price, target_positions=5000, seed=4)
    market.snapshot_ticks(0)
    book.open_book(0)
    t0 = time.perf_counter()
    limit = choose_limit(market, book, 300.0, 0.25)
    assert time.perf_counter() - t0 < 5.0
    assert limit is not None and limit.limit_usd > 0
