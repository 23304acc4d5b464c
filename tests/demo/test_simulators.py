"""The demo's simulated market and book: deterministic for a seed, every record valid for the
engine (the pydantic models of `positions` / `market-ticks`), and the behaviours the demo
promises (regimes, wider spreads in stress, funding that changes sign, jumps, feed gaps,
positions opened, resized and closed)."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from dataclasses import dataclass

import pytest

from stream_risk.demo.book import BookSimulator
from stream_risk.demo.market import ASSETS, REGIMES, MarketSimulator
from stream_risk.models import MarketTick, PositionMessage

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STEP_MS = 250


def run_market(sim: MarketSimulator, steps: int) -> list[dict[str, object]]:
    out = sim.snapshot_ticks(T0)
    for i in range(1, steps + 1):
        out.extend(sim.step(T0 + i * STEP_MS, STEP_MS / 1000))
    return out


def test_market_is_deterministic_for_a_seed() -> None:
    a = run_market(MarketSimulator(5, seed=42, outages_per_min=1.0), 2_000)
    b = run_market(MarketSimulator(5, seed=42, outages_per_min=1.0), 2_000)
    c = run_market(MarketSimulator(5, seed=43, outages_per_min=1.0), 2_000)
    assert a == b
    assert a != c


def test_every_tick_is_a_valid_market_tick_and_prices_stay_positive() -> None:
    sim = MarketSimulator(len(ASSETS), seed=7, regime="stress", outages_per_min=0.5)
    ticks = run_market(sim, 10_000)  # 10k steps x 75 simulated s = 8.7 simulated days
    assert ticks
    for t in ticks:
        tick = MarketTick.model_validate(t)  # ranges of DESIGN §1, as the engine checks them
        assert tick.current_price > 0
    assert all(a.price > 0 for a in sim.assets.values())


def test_first_tick_of_each_asset_is_complete_and_later_ones_may_omit_funding_and_depth() -> None:
    sim = MarketSimulator(4, seed=1)
    ticks = run_market(sim, 400)
    first: dict[str, dict[str, object]] = {}
    for t in ticks:
        first.setdefault(str(t["asset"]), t)
    assert set(first) == set(sim.symbols)
    full = {"perp_funding_rate", "bid_depth_usd", "ask_depth_usd", "volatility_1d"}
    for t in first.values():
        assert full <= t.keys()
    later = ticks[len(first) :]
    assert any("perp_funding_rate" not in t for t in later)
    assert any("bid_depth_usd" not in t for t in later)
    assert all({"current_price", "volatility_1d", "spot_spread_bps"} <= t.keys() for t in later)


def test_realistic_levels_at_the_start() -> None:
    sim = MarketSimulator(len(ASSETS), seed=3)
    for spec, tick in zip(ASSETS, sim.snapshot_ticks(T0), strict=True):
        assert tick["asset"] == spec.symbol
        assert tick["current_price"] == pytest.approx(spec.price, rel=0.05)
        assert 0.005 < tick["volatility_1d"] < 0.1
        assert 0 < tick["spot_spread_bps"] < 20


@dataclass
class LongRun:
    sim: MarketSimulator
    seen: Counter[str]
    vol: dict[str, list[float]]
    spread: dict[str, list[float]]
    depth: dict[str, list[float]]
    funding_signs: Counter[tuple[str, bool]]
    funding_flips: int


@pytest.fixture(scope="module")
def long_run() -> LongRun:
    """20k steps (17 simulated days) of 5 assets, with BTC's levels by regime."""
    sim = MarketSimulator(5, seed=11)

    def by_regime() -> dict[str, list[float]]:
        return {r: [] for r in REGIMES}

    run = LongRun(sim, Counter(), by_regime(), by_regime(), by_regime(), Counter(), 0)
    last: dict[str, bool] = {}
    for i in range(1, 20_000):
        sim.step(T0 + i * STEP_MS, STEP_MS / 1000)
        btc = sim.assets["BTC"]
        run.seen[sim.regime] += 1
        run.vol[sim.regime].append(btc.vol)
        run.spread[sim.regime].append(btc.spread_bps)
        run.depth[sim.regime].append(btc.bid_depth_usd)
        for sym, a in sim.assets.items():
            positive = a.funding > 0
            run.funding_signs[(sym, positive)] += 1
            if sym in last and last[sym] != positive:
                run.funding_flips += 1
            last[sym] = positive
    return run


def test_regimes_are_all_visited_and_stress_means_higher_vol_wider_spreads_thinner_books(
    long_run: LongRun,
) -> None:
    r = long_run
    assert set(r.seen) == set(REGIMES)
    assert r.sim.regime_changes >= 5
    assert statistics.mean(r.vol["stress"]) > 1.5 * statistics.mean(r.vol["calm"])
    assert statistics.mean(r.spread["stress"]) > 2 * statistics.mean(r.spread["calm"])
    assert statistics.mean(r.depth["stress"]) < 0.5 * statistics.mean(r.depth["calm"])
    assert r.sim.jumps > 0


def test_funding_drifts_and_changes_sign(long_run: LongRun) -> None:
    r = long_run
    assert r.funding_flips > 0
    assert any(r.funding_signs[(s, True)] and r.funding_signs[(s, False)] for s in r.sim.symbols)


def test_feed_outages_silence_an_asset_for_a_while() -> None:
    sim = MarketSimulator(3, seed=9, outages_per_min=2.0, outage_s=(5.0, 5.0))
    ts_by_asset: dict[str, list[int]] = {s: [] for s in sim.symbols}
    for t in run_market(sim, 4 * 120):  # two wall minutes
        ts_by_asset[str(t["asset"])].append(int(t["ts"]))  # type: ignore[call-overload]
    assert sim.outages > 0
    longest_gap = max(max(b - a for a, b in itertools.pairwise(ts)) for ts in ts_by_asset.values())
    assert longest_gap >= 4_500  # the 5 s outage (minus one step of rounding)


def test_market_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="assets"):
        MarketSimulator(0)
    with pytest.raises(ValueError, match="assets"):
        MarketSimulator(len(ASSETS) + 1)
    with pytest.raises(ValueError, match="time_scale"):
        MarketSimulator(2, time_scale=0)
    with pytest.raises(ValueError, match="dt_s"):
        MarketSimulator(2, seed=1).step(T0, -1.0)


# ---------------------------------------------------------------------- the book
def run_book(seed: int, steps: int = 2_400, target: int = 20) -> tuple[BookSimulator, list]:  # type: ignore[type-arg]
    market = MarketSimulator(5, seed=seed)
    book = BookSimulator(market.symbols, market.price, target_positions=target, seed=seed)
    market.snapshot_ticks(T0)
    events = list(book.open_book(T0))
    for i in range(1, steps + 1):
        now = T0 + i * STEP_MS
        market.step(now, STEP_MS / 1000)
        events.extend(book.step(now, STEP_MS / 1000))
    return book, events


def test_book_is_deterministic_for_a_seed() -> None:
    _, a = run_book(21)
    _, b = run_book(21)
    _, c = run_book(22)
    assert [(e.kind, e.key, e.value) for e in a] == [(e.kind, e.key, e.value) for e in b]
    assert [(e.kind, e.key, e.value) for e in a] != [(e.kind, e.key, e.value) for e in c]


def test_opening_book_has_every_asset_and_aged_inventory() -> None:
    market = MarketSimulator(5, seed=2)
    book = BookSimulator(market.symbols, market.price, target_positions=12, seed=2)
    opening = book.open_book(T0)
    assert len(opening) == 12 == len(book.positions)
    assert {e.asset for e in opening} == set(market.symbols)
    ages_min = [(T0 - e.value["opened_at"]) / 60_000 for e in opening if e.value]
    assert min(ages_min) >= 2 and max(ages_min) <= 480
    assert max(ages_min) > 60  # some inventory is hours old: the age component shows
    assert len({e.key for e in opening}) == 12


def test_book_opens_resizes_and_closes_and_every_record_is_valid() -> None:
    book, events = run_book(8, steps=4 * 600, target=20)  # ten wall minutes
    kinds = Counter(e.kind for e in events)
    assert kinds["open"] > 20 and kinds["resize"] > 50 and kinds["close"] > 5
    open_ids: set[str] = set()
    for e in events:
        if e.value is None:
            assert e.kind == "close"
            assert e.key in open_ids  # only an open position is closed (tombstone)
            open_ids.discard(e.key)
            continue
        msg = PositionMessage.model_validate(e.value)
        assert msg.position_id == e.key
        assert msg.size != 0 and msg.entry_price > 0
        assert msg.opened_at is not None and msg.opened_at <= (msg.ts or 0)
        open_ids.add(e.key)
    assert open_ids == set(book.positions)
    assert 10 <= len(book.positions) <= 30  # hovers around the target


def test_book_flips_and_vwap() -> None:
    """Adding moves the entry to the VWAP; trading through zero restarts the position."""
    prices = {"BTC": 100.0}
    book = BookSimulator(["BTC"], prices.__getitem__, target_positions=1, seed=0)
    book.open_book(T0)
    pid, pos = next(iter(book.positions.items()))
    flipped = added = False
    for i in range(1, 5_000):
        before_size, before_entry = pos.size, pos.entry_price
        prices["BTC"] = 100.0 + (i % 7)
        ev = book._fill(pid, T0 + i) if pid in book.positions else None
        if ev is None or ev.kind != "resize":
            break
        if (pos.size > 0) != (before_size > 0):
            flipped = True
            assert pos.opened_at == T0 + i
        elif abs(pos.size) > abs(before_size):
            added = True
            lo, hi = sorted((before_entry, prices["BTC"]))
            assert lo * 0.99 <= pos.entry_price <= hi * 1.01
        if flipped and added:
            break
    assert flipped and added
