"""The owner stage (`book.aggregate.BookAggregator`): contributions summed per asset,
tombstones, the emission rule, limit and stale alerts fired and cleared once (also across
a change of owner through the state records), revocation and the book's own limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pytest import approx

from stream_risk.book.aggregate import BOOK_STATE_KEY, BookAggregator, BookOutput, state_key
from stream_risk.book.net import MarketInputs
from stream_risk.book.partial import Partial
from stream_risk.config import DEFAULT_CONFIG, RiskConfig

T0 = 1_700_000_000_000
MIN = 60_000

# Two positions partitions' contributions to BTC (DESIGN §13's example split in two):
#   partition 0: +50 @ 60,000, hedged at 1.0, opened 120 min before T0
#   partition 1: −40 @ 62,000, hedged at 0.5, opened 30 min before T0
P0 = Partial(1, 1, 0, 50.0, 50.0, 50.0, 0.0, 3_000_000.0, 3_000_000.0, 50.0 * (T0 - 120 * MIN))
P1 = Partial(1, 0, 1, -40.0, 40.0, 0.0, 20.0, 2_480_000.0, -2_480_000.0, 40.0 * (T0 - 30 * MIN))


@dataclass
class FakeInputs:
    """The engine's side of `BookInputs`: markets, configs and asset limits by hand."""

    markets: dict[str, MarketInputs] = field(default_factory=dict)
    limits: dict[str, dict[str, float]] = field(default_factory=dict)

    def book_market(self, asset: str) -> MarketInputs | None:
        return self.markets.get(asset)

    def asset_config(self, asset: str) -> RiskConfig:
        return DEFAULT_CONFIG

    def asset_limits(self, asset: str) -> Mapping[str, float]:
        return self.limits.get(asset, {})


def btc(price: float = 61_000.0, ts: int = T0) -> MarketInputs:
    return MarketInputs(ts, price, 0.05, 2.0, 0.0, 1_000_000.0, 2_000_000.0)


def fed(agg: BookAggregator | None = None) -> BookAggregator:
    agg = agg or BookAggregator()
    agg.apply(3, "BTC", 0, P0)
    agg.apply(3, "BTC", 1, P1)
    return agg


def kinds(out: BookOutput) -> list[tuple[str, str, str]]:
    return [(a["key"], a["kind"], a["state"]) for a in out.alerts]


def test_two_partitions_sum_and_a_tombstone_removes_one() -> None:
    agg = fed()
    inputs = FakeInputs({"BTC": btc()})
    out = agg.evaluate(inputs, T0, T0 + 5)
    assert [a for a, _ in out.records] == ["BTC"]
    rec = out.records[0][1]
    assert rec is not None
    # 50 − 40 = 10 net; 50 + 40 = 90 gross; entry (3,000,000 + 2,480,000)/90
    assert (rec["positions"], rec["long"], rec["short"]) == (2, 1, 1)
    assert (rec["net_size"], rec["gross_size"]) == (10.0, 90.0)
    assert rec["entry_price"] == approx(5_480_000 / 90)
    # age (50·120 + 40·30)/90 = 80 minutes at T0
    assert rec["age_minutes"] == approx(80.0)
    assert rec["assessed_at"] == T0 + 5
    assert out.alerts == [] and out.states == []
    # partition 1's positions all closed: a tombstone for its key
    agg.apply(3, "BTC", 1, None)
    out = agg.evaluate(inputs, T0, T0 + 6)
    rec = out.records[0][1]
    assert rec is not None
    assert (rec["positions"], rec["net_size"], rec["gross_size"]) == (1, 50.0, 50.0)
    assert rec["entry_price"] == approx(60_000.0)
    assert agg.totals("BTC") == P0
    # an empty contribution counts as a tombstone too
    agg.apply(3, "BTC", 1, P1)
    agg.apply(3, "BTC", 1, Partial())
    assert agg.totals("BTC") == P0


def test_an_emptied_asset_publishes_a_tombstone_once() -> None:
    agg = fed()
    inputs = FakeInputs({"BTC": btc()})
    agg.evaluate(inputs, T0, T0)
    agg.apply(3, "BTC", 0, None)
    agg.apply(3, "BTC", 1, None)
    out = agg.evaluate(inputs, T0, T0)
    assert out.records == [("BTC", None)]
    assert "BTC" not in agg.parts and "BTC" not in agg.published
    # nothing more about it afterwards
    agg.all_dirty()
    assert agg.evaluate(inputs, T0, T0).records == []


def test_emission_rule() -> None:
    agg = fed()
    inputs = FakeInputs({"BTC": btc()})
    first = agg.evaluate(inputs, T0, T0)
    assert len(first.records) == 1
    # the same contributions again (a new owner of a positions partition republishes)
    agg.apply(3, "BTC", 0, P0)
    assert agg.evaluate(inputs, T0, T0).records == []
    # a tick moves the price 61,000 → 61,500: only the liquidity score moves,
    # by 10 · 500 / 1e6 · 15 = 0.075 points < 1 → no record
    inputs.markets["BTC"] = btc(61_500.0)
    agg.market_moved(["BTC", "ETH"])  # ETH is not owned here: ignored
    assert agg.dirty == {"BTC"}
    assert agg.evaluate(inputs, T0, T0).records == []
    # to 68,000: liquidity 10 · 68,000/1e6 · 15 = 10.2 vs 9.15 at the last record → 1.05
    # points ≥ 1 (score 57.48 → 58.53, still HEDGE_PARTIAL) → a record
    inputs.markets["BTC"] = btc(68_000.0)
    agg.market_moved(["BTC"])
    out = agg.evaluate(inputs, T0, T0)
    assert len(out.records) == 1
    rec = out.records[0][1]
    assert rec is not None
    assert rec["advice"]["action"] == "HEDGE_PARTIAL"
    assert rec["advice"]["risk_score"] == approx(30 + 10 / 3 + 15 + 10.2)
    # a size change is a new record whatever the score
    agg.apply(3, "BTC", 0, P0._replace(positions=2))
    assert len(agg.evaluate(inputs, T0, T0).records) == 1
    # nothing dirty: nothing evaluated
    assert agg.evaluate(inputs, T0, T0).records == []


def test_the_advice_changing_is_a_new_record() -> None:
    agg = fed()
    inputs = FakeInputs({"BTC": btc()})
    agg.evaluate(inputs, T0, T0)
    # vol 0.05 → 0.08: vol score 15 → 25: 67.48 → HEDGE_FULL
    inputs.markets["BTC"] = replace(btc(), volatility_1d=0.08)
    agg.market_moved(["BTC"])
    out = agg.evaluate(inputs, T0, T0)
    rec = out.records[0][1]
    assert rec is not None and rec["advice"]["action"] == "HEDGE_FULL"


def test_limit_alert_fires_once_and_clears_once() -> None:
    agg = fed()
    # net notional 10 · 61,000 = 610,000 > 500,000
    inputs = FakeInputs({"BTC": btc()}, {"BTC": {"max_net_notional_usd": 500_000.0}})
    key = "limit:asset:BTC:max_net_notional_usd"
    out = agg.evaluate(inputs, T0, T0)
    assert kinds(out) == [(key, "exposure_limit", "fired")]
    assert out.alerts[0]["details"] == {
        "scope": "asset:BTC",
        "limit": "max_net_notional_usd",
        "limit_usd": 500_000.0,
        "value_usd": approx(610_000.0),
    }
    rec = out.records[0][1]
    assert rec is not None and rec["breaches"] == [out.alerts[0]["details"]]
    assert [k for k, _ in out.states] == [state_key("BTC")]
    for i in range(20):
        agg.all_dirty()
        again = agg.evaluate(inputs, T0 + i, T0 + i)
        assert again.alerts == [] and again.states == []
    # price 45,000: net 450,000 ≤ 500,000 → cleared, once
    inputs.markets["BTC"] = btc(45_000.0, T0 + 30)
    agg.market_moved(["BTC"])
    out = agg.evaluate(inputs, T0 + 30, T0 + 30)
    assert kinds(out) == [(key, "exposure_limit", "cleared")]
    assert out.states == [(state_key("BTC"), b'{"active":{}}')]
    # the breach ended: a new record without it
    rec = out.records[0][1]
    assert rec is not None and rec["breaches"] == []
    for i in range(20):
        agg.all_dirty()
        assert agg.evaluate(inputs, T0 + 31 + i, T0).alerts == []
    assert agg.tracker.fired == 1 and agg.tracker.cleared == 1


def test_gross_limit_and_an_emptied_asset_clears_its_alert() -> None:
    agg = fed()
    # gross 90 · 61,000 = 5,490,000 > 5,000,000 (net 610,000 is within its limit)
    limits = {"max_gross_notional_usd": 5e6, "max_net_notional_usd": 1e6}
    inputs = FakeInputs({"BTC": btc()}, {"BTC": limits})
    out = agg.evaluate(inputs, T0, T0)
    assert kinds(out) == [("limit:asset:BTC:max_gross_notional_usd", "exposure_limit", "fired")]
    agg.apply(3, "BTC", 0, None)
    agg.apply(3, "BTC", 1, None)
    out = agg.evaluate(inputs, T0, T0)
    assert kinds(out) == [("limit:asset:BTC:max_gross_notional_usd", "exposure_limit", "cleared")]
    assert out.records == [("BTC", None)]


def test_stale_market_alert() -> None:
    agg = BookAggregator(max_tick_age_ms=60_000)
    fed(agg)
    inputs = FakeInputs({"BTC": btc(ts=T0)})
    assert agg.evaluate(inputs, T0 + 60_000, T0).alerts == []  # exactly the max age: fresh
    agg.all_dirty()
    out = agg.evaluate(inputs, T0 + 60_001, T0)
    assert kinds(out) == [("stale:asset:BTC", "stale_market_data", "fired")]
    assert out.alerts[0]["details"] == {
        "asset": "BTC",
        "tick_ts": T0,
        "max_tick_age_ms": 60_000,
    }
    agg.all_dirty()
    assert agg.evaluate(inputs, T0 + 90_000, T0).alerts == []
    inputs.markets["BTC"] = btc(ts=T0 + 90_000)
    agg.market_moved(["BTC"])
    out = agg.evaluate(inputs, T0 + 90_000, T0)
    assert kinds(out) == [("stale:asset:BTC", "stale_market_data", "cleared")]


def test_a_new_owner_restores_the_alert_state() -> None:
    inputs = FakeInputs({"BTC": btc()}, {"BTC": {"max_net_notional_usd": 500_000.0}})
    first = fed()
    out = first.evaluate(inputs, T0, T0)
    assert len(out.alerts) == 1
    ((skey, sval),) = out.states
    # The partition moves: the next owner rebuilds it from the internal topic: the
    # contributions and the state record, in the order they were written.
    second = BookAggregator()
    fed(second)
    second.restore_state(3, skey, sval)
    assert second.dirty == {"BTC"}
    out = second.evaluate(inputs, T0 + 1, T0 + 1)
    assert out.alerts == []  # still true: not fired again
    assert len(out.records) == 1  # the new owner publishes its first record
    for i in range(5):
        second.all_dirty()
        assert second.evaluate(inputs, T0 + 2 + i, T0).alerts == []
    inputs.markets["BTC"] = btc(45_000.0)
    second.market_moved(["BTC"])
    out = second.evaluate(inputs, T0 + 10, T0 + 10)
    assert kinds(out) == [("limit:asset:BTC:max_net_notional_usd", "exposure_limit", "cleared")]
    second.all_dirty()
    assert second.evaluate(inputs, T0 + 11, T0).alerts == []


def test_a_restored_state_that_ended_while_unowned_clears_once() -> None:
    inputs = FakeInputs({"BTC": btc()}, {"BTC": {"max_net_notional_usd": 500_000.0}})
    first = fed()
    ((skey, sval),) = first.evaluate(inputs, T0, T0).states
    inputs.markets["BTC"] = btc(45_000.0)
    second = BookAggregator()
    second.restore_state(3, skey, sval)  # the state record first, then the contributions
    fed(second)
    out = second.evaluate(inputs, T0 + 1, T0 + 1)
    assert kinds(out) == [("limit:asset:BTC:max_net_notional_usd", "exposure_limit", "cleared")]
    assert out.states == [(skey, b'{"active":{}}')]
    # a later state record (the cleared one) wins over an earlier one on a rebuild
    third = BookAggregator()
    third.restore_state(3, skey, sval)
    third.restore_state(3, skey, b'{"active":{}}')
    fed(third)
    assert third.tracker.active == {}
    inputs.markets["BTC"] = btc()
    out = third.evaluate(inputs, T0 + 2, T0 + 2)
    assert kinds(out) == [("limit:asset:BTC:max_net_notional_usd", "exposure_limit", "fired")]
    # a tombstone of the state key forgets it too
    fourth = BookAggregator()
    fourth.restore_state(3, skey, sval)
    fourth.restore_state(3, skey, None)
    assert fourth.tracker.active == {}


def test_drop_partition_forgets_its_assets() -> None:
    inputs = FakeInputs(
        {"BTC": btc(), "ETH": MarketInputs(T0, 3_000.0, 0.05, 2.0)},
        {"BTC": {"max_net_notional_usd": 500_000.0}},
    )
    agg = fed()
    agg.apply(4, "ETH", 0, Partial(1, 1, 0, 1.0, 1.0, 0.0, 0.0, 3_000.0, 3_000.0, float(T0)))
    out = agg.evaluate(inputs, T0, T0)
    assert sorted(a for a, _ in out.records) == ["BTC", "ETH"]
    assert len(out.alerts) == 1
    agg.drop_partition(3)
    assert "BTC" not in agg.parts and "BTC" not in agg.published
    assert agg.tracker.active == {}  # its alert is the next owner's to clear
    assert 3 not in agg.assets_of and agg.assets_of[4] == {"ETH"}
    agg.market_moved(["BTC", "ETH"])
    assert agg.dirty == {"ETH"}
    out = agg.evaluate(inputs, T0, T0)
    assert out.records == [] and out.alerts == []  # nothing about BTC, not even a clear
    # a revocation while dirty: the asset is not evaluated
    agg.apply(4, "ETH", 1, Partial(1, 1, 0, 1.0, 1.0, 0.0, 0.0, 3_000.0, 3_000.0, float(T0)))
    agg.drop_partition(4)
    assert agg.dirty == set() and agg.parts == {}
    assert agg.evaluate(inputs, T0, T0).records == []


def test_evaluate_book_limits_owner_only() -> None:
    agg = BookAggregator()
    assert not agg.book_owner
    agg.owns_book([1, 2])
    assert not agg.book_owner
    agg.owns_book([0, 2])
    assert agg.book_owner
    limits = {"max_gross_notional_usd": 1e6}
    key = "limit:book:max_gross_notional_usd"
    out = agg.evaluate_book({"net_notional_usd": 1e5, "gross_notional_usd": 2e6}, limits, T0)
    assert kinds(out) == [(key, "exposure_limit", "fired")]
    assert out.alerts[0]["details"] == {
        "scope": "book",
        "limit": "max_gross_notional_usd",
        "limit_usd": 1e6,
        "value_usd": 2e6,
    }
    assert [k for k, _ in out.states] == [BOOK_STATE_KEY]
    state = out.states[0][1]
    for _ in range(5):
        again = agg.evaluate_book({"net_notional_usd": 0, "gross_notional_usd": 3e6}, limits, T0)
        assert again.alerts == [] and again.states == []
    # another owner of partition 0 restores it: still true, not fired again; then clears
    other = BookAggregator()
    other.owns_book([0])
    other.restore_state(0, BOOK_STATE_KEY, state)
    assert other.dirty == set()  # "*" is not an asset
    book = {"net_notional_usd": 0.0, "gross_notional_usd": 3e6}
    assert other.evaluate_book(book, limits, T0).alerts == []
    out = other.evaluate_book({"net_notional_usd": 0.0, "gross_notional_usd": 5e5}, limits, T0)
    assert kinds(out) == [(key, "exposure_limit", "cleared")]
    assert out.states == [(BOOK_STATE_KEY, b'{"active":{}}')]
    # losing partition 0 forgets the book's alert state and ownership
    agg.drop_partition(0)
    assert not agg.book_owner and agg.tracker.active == {}


def test_no_market_yet_publishes_sizes_without_alerts() -> None:
    agg = fed()
    inputs = FakeInputs({}, {"BTC": {"max_net_notional_usd": 1.0}})
    out = agg.evaluate(inputs, T0, T0)
    rec = out.records[0][1]
    assert rec is not None and rec["price"] is None and rec["advice"] is None
    assert out.alerts == []
    # no change while it waits: no new record
    agg.all_dirty()
    assert agg.evaluate(inputs, T0 + MIN, T0).records == []
