"""The whole book every instance serves (`book.view.BookView`): records of `risk-book`
priced at the instance's own latest price (the record's when it has none), summed into
the book, checked against the limits; tombstones remove an asset."""

from __future__ import annotations

from typing import Any

from pytest import approx

from stream_risk.book.figures import moves_of
from stream_risk.book.net import MarketInputs, NetBook, net_record
from stream_risk.book.partial import Partial
from stream_risk.book.view import BookView
from stream_risk.config import DEFAULT_CONFIG

T0 = 1_700_000_000_000
MOVES = moves_of(0.02, 0.05)

# BTC: +50 @ 60,000 (h 1.0) and −40 @ 62,000 (h 0.5): Q 10, Σ|q| 90, Σqh = 50 − 20 = 30
BTC = Partial(2, 1, 1, 10.0, 90.0, 50.0, 20.0, 5_480_000.0, 520_000.0, 90.0 * T0)
# ETH: +2 @ 2,900, no action yet (h 0)
ETH = Partial(1, 1, 0, 2.0, 2.0, 0.0, 0.0, 5_800.0, 5_800.0, 2.0 * T0)
# SOL: −3 @ 100, no market anywhere
SOL = Partial(1, 0, 1, -3.0, 3.0, 0.0, 0.0, 300.0, -300.0, 3.0 * T0)


def record(asset: str, t: Partial, m: MarketInputs | None, at: int) -> dict[str, Any]:
    return net_record(NetBook.of(asset, t, m, DEFAULT_CONFIG, T0), DEFAULT_CONFIG, [], at)


def view() -> BookView:
    v = BookView()
    v.apply("BTC", record("BTC", BTC, MarketInputs(T0, 61_000.0, 0.05, 2.0), T0 + 3))
    # ETH: vol 0.01 → loss 30 · 0.2 = 6, age 0, vol 0.01/0.04 · 10 = 2.5, liquidity
    # 6,000/1e6 · 15 = 0.09 → 8.59: HOLD, no hedge → saving 0 − 0 = 0
    v.apply("ETH", record("ETH", ETH, MarketInputs(T0, 3_000.0, 0.01, 2.0), T0 + 9))
    v.apply("SOL", record("SOL", SOL, None, T0 + 5))
    return v


PRICES = {"BTC": 62_000.0}  # this instance's own latest ticks: BTC only


def test_exposure_priced_here_or_at_the_records_price() -> None:
    v = view()
    assert v.version == 3 and v.latest_assessed_at == T0 + 9
    limits = {
        "book": {"max_gross_notional_usd": 5e6},
        "asset:BTC": {"max_net_notional_usd": 615_000.0},
        "asset:ETH": {"max_net_notional_usd": 10_000.0},
        "asset:DOGE": {"max_net_notional_usd": 1.0},  # no record: nothing to check
    }
    e = v.exposure(PRICES.get, limits, MOVES)
    btc, eth, sol = e["assets"]["BTC"], e["assets"]["ETH"], e["assets"]["SOL"]
    # BTC at this instance's 62,000 (not the record's 61,000):
    # net 10 · 62,000 = 620,000; gross 90 · 62,000 = 5,580,000; hedged 30 · 62,000 = 1,860,000
    assert btc["price"] == 62_000.0
    assert btc["net_notional_usd"] == approx(620_000.0)
    assert btc["gross_notional_usd"] == approx(5_580_000.0)
    assert btc["hedged_notional_usd"] == approx(1_860_000.0)
    # −5 %: 620,000 · −0.05 = −31,000; hedged (10 − 30) · 62,000 · −0.05 = +62,000
    assert btc["pnl_down_5pct"] == approx(-31_000.0)
    assert btc["hedged_pnl_down_5pct"] == approx(62_000.0)
    assert btc["pnl_up_2pct"] == approx(12_400.0)
    assert (btc["positions"], btc["long"], btc["short"]) == (2, 1, 1)
    assert btc["net_advice"]["action"] == "HEDGE_PARTIAL"
    assert btc["net_advice"]["hedge_pct"] == 0.5
    assert btc["net_advice"]["suggested_hedge"]["size"] == approx(5.0)
    # saving as the record says (at its price, 61,000): 854 − 61 = 793
    assert btc["saving_usd"] == approx(793.0)
    # ETH at the record's 3,000: net = gross = 6,000; +5 % → 300
    assert eth["price"] == 3_000.0
    assert eth["net_notional_usd"] == approx(6_000.0)
    assert eth["pnl_up_5pct"] == approx(300.0) and eth["hedged_pnl_up_5pct"] == approx(300.0)
    assert eth["net_advice"] == {
        "action": "HOLD",
        "hedge_pct": 0.0,
        "risk_score": approx(8.59),
        "suggested_hedge": None,
    }
    assert eth["saving_usd"] == 0.0
    # SOL has no price: counted, not priced; no advice
    assert sol["price"] is None
    assert (sol["positions"], sol["short"], sol["net_notional_usd"]) == (1, 1, 0.0)
    assert sol["net_advice"] is None and sol["saving_usd"] is None
    # The book: 2 + 1 + 1 positions, 1 + 1 + 0 = 2 long, 1 + 0 + 1 = 2 short;
    # net 620,000 + 6,000 = 626,000; gross 5,580,000 + 6,000 = 5,586,000; hedged 1,860,000
    book = e["book"]
    assert (book["positions"], book["long"], book["short"]) == (4, 2, 2)
    assert book["net_notional_usd"] == approx(626_000.0)
    assert book["gross_notional_usd"] == approx(5_586_000.0)
    assert book["hedged_notional_usd"] == approx(1_860_000.0)
    # −5 %: −31,300; hedged (626,000 − 1,860,000) · −0.05 = 61,700
    assert book["pnl_down_5pct"] == approx(-31_300.0)
    assert book["hedged_pnl_down_5pct"] == approx(61_700.0)
    assert book["saving_usd"] == approx(793.0)
    # Breaches: book gross 5,586,000 > 5e6; BTC net 620,000 > 615,000 (at the record's
    # 61,000 it would be 610,000: no breach); ETH 6,000 ≤ 10,000
    assert e["breaches"] == [
        {
            "scope": "book",
            "limit": "max_gross_notional_usd",
            "limit_usd": 5e6,
            "value_usd": approx(5_586_000.0),
        },
        {
            "scope": "asset:BTC",
            "limit": "max_net_notional_usd",
            "limit_usd": 615_000.0,
            "value_usd": approx(620_000.0),
        },
    ]
    assert e["limits"] == limits


def test_without_own_prices_the_records_prices() -> None:
    e = view().exposure(lambda _: None, {"asset:BTC": {"max_net_notional_usd": 615_000.0}}, MOVES)
    assert e["assets"]["BTC"]["price"] == 61_000.0
    assert e["assets"]["BTC"]["net_notional_usd"] == approx(610_000.0)
    assert e["breaches"] == []


def test_a_short_asset_breaches_by_its_absolute_net() -> None:
    v = BookView()
    v.apply("SOL", record("SOL", SOL, None, T0))
    # −3 · 100 = −300: |−300| > 200
    e = v.exposure({"SOL": 100.0}.get, {"asset:SOL": {"max_net_notional_usd": 200.0}}, MOVES)
    assert e["assets"]["SOL"]["net_notional_usd"] == approx(-300.0)
    assert e["breaches"] == [
        {
            "scope": "asset:SOL",
            "limit": "max_net_notional_usd",
            "limit_usd": 200.0,
            "value_usd": approx(300.0),
        }
    ]


def test_tombstones_remove_an_asset() -> None:
    v = view()
    v.apply("BTC", None)
    v.apply("DOGE", None)  # a tombstone of an unknown asset: nothing to remove
    assert v.version == 5
    assert sorted(v.records) == ["ETH", "SOL"]
    e = v.exposure(PRICES.get, {}, MOVES)
    assert sorted(e["assets"]) == ["ETH", "SOL"]
    assert e["book"]["net_notional_usd"] == approx(6_000.0)
    assert e["book"]["saving_usd"] == 0.0
    assert e["breaches"] == [] and e["limits"] == {}
    # an older record does not move latest_assessed_at back
    v.apply("BTC", record("BTC", BTC, MarketInputs(T0, 61_000.0, 0.05, 2.0), T0 + 1))
    assert v.latest_assessed_at == T0 + 9
    empty = BookView().exposure(PRICES.get, {}, MOVES)
    assert empty["assets"] == {} and empty["book"]["positions"] == 0
