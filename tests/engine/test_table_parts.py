"""Per (asset, positions partition) contributions to the book (`Table.parts`, D17): equal
to sums computed from scratch over the positions after random upserts (resizes, asset
changes, partition moves), closes and ticks that change the hedge fractions; what
`drain_partials` returns; a revoked partition; off when `book_partials` is off."""

from __future__ import annotations

import random

import pytest
from pytest import approx

from stream_risk.book.partial import FIELDS, Partial, total
from stream_risk.engine import Engine, EngineConfig, Event

from . import MIN, T0, close, position, tick

ASSETS = ("BTC", "ETH", "SOL")
BASE = {"BTC": 44_000.0, "ETH": 3_000.0, "SOL": 100.0}


def from_scratch(engine: Engine) -> dict[tuple[str, int], list[float]]:
    """Σ over the table's positions, by (asset, partition), written out term by term from
    the definitions of `book.partial.Partial` (independent of `Table._part`)."""
    out: dict[tuple[str, int], list[float]] = {}
    for pos in engine.table.positions.values():
        q = pos.size
        h = pos.last.hedge_pct if pos.last is not None else 0.0
        o = pos.opened_at if pos.opened_at is not None else pos.ts - pos.age_at_ts * MIN
        s = out.setdefault((pos.asset, pos.partition), [0.0] * len(FIELDS))
        s[0] += 1  # positions
        s[1] += 1 if q > 0 else 0  # longs
        s[2] += 1 if q < 0 else 0  # shorts
        s[3] += q  # Σ q
        s[4] += abs(q)  # Σ |q|
        s[5] += q * h if q > 0 else 0.0  # Σ_long q·h
        s[6] += -q * h if q < 0 else 0.0  # Σ_short |q|·h
        s[7] += abs(q) * pos.entry_price  # Σ |q|·e
        s[8] += q * pos.entry_price  # Σ q·e
        s[9] += abs(q) * o  # Σ |q|·o
    return out


def assert_parts_equal(engine: Engine) -> None:
    parts = engine.table.parts
    assert parts is not None
    want = from_scratch(engine)
    assert set(parts) == set(want)
    for key, sums in want.items():
        got = parts[key]
        for name, w, g in zip(FIELDS, sums, got, strict=True):
            # Σ|q|·o is ~1e13 and more: a cancelled term leaves ~1e-3 of float residue
            assert g == approx(w, rel=1e-9, abs=1e-6), (key, name)


def snapshot(engine: Engine) -> dict[tuple[str, int], list[float]]:
    assert engine.table.parts is not None
    return {k: list(v) for k, v in engine.table.parts.items()}


def book_engine() -> Engine:
    return Engine(EngineConfig(book_partials=True, emit="all"))


def random_events(rng: random.Random, engine: Engine, ts: int) -> list[Event]:
    """One random change: an upsert (new, resize, asset change, partition move), a close
    or a tick (new price and volatility: new scores, new hedge fractions)."""
    positions = engine.table.positions
    r = rng.random()
    if r < 0.15 and positions:
        pid = rng.choice(sorted(positions))
        return [close(pid, partition=positions[pid].partition)]
    if r < 0.4:
        asset = rng.choice(ASSETS)
        price = BASE[asset] * rng.uniform(0.8, 1.2)
        return [tick(asset, ts, price, vol=rng.choice([0.005, 0.02, 0.05, 0.09]), funding=0.0)]
    pid = f"p{rng.randrange(25)}"
    old = positions.get(pid)
    asset = old.asset if old is not None and rng.random() < 0.6 else rng.choice(ASSETS)
    partition = old.partition if old is not None and rng.random() < 0.6 else rng.randrange(4)
    size = rng.choice([-1, 1]) * rng.uniform(0.1, 80.0)
    if rng.random() < 0.03:
        size = 0.0
    entry = BASE[asset] * rng.uniform(0.9, 1.1)
    if rng.random() < 0.5:
        return [
            position(
                pid,
                asset,
                size,
                entry,
                ts=ts,
                age=None,
                opened_at=ts - rng.randrange(600) * MIN,
                partition=partition,
            )
        ]
    return [position(pid, asset, size, entry, ts=ts, age=rng.uniform(0, 600), partition=partition)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_parts_equal_sums_from_scratch_and_drain_the_changed_keys(seed: int) -> None:
    rng = random.Random(seed)
    engine = book_engine()
    engine.step([tick(a, T0, BASE[a], vol=0.05, funding=0.0) for a in ASSETS], T0)
    hedge_fractions: set[float] = set()
    drained_tombstones = 0
    for i in range(300):
        ts = T0 + (i + 1) * 1_000
        before = snapshot(engine)
        engine.step(random_events(rng, engine, ts), ts)
        assert_parts_equal(engine)
        after = snapshot(engine)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        drained = engine.drain_partials()
        assert [(a, p) for a, p, _ in drained] == sorted(changed)
        for a, p, part in drained:
            if (a, p) in after:
                assert part == Partial.of(after[(a, p)])
            else:
                assert part is None
                drained_tombstones += 1
        assert engine.drain_partials() == []  # drained: nothing until the next change
        hedge_fractions.update(
            pos.last.hedge_pct for pos in engine.table.positions.values() if pos.last
        )
    # the sequence did exercise what it is meant to
    assert len(hedge_fractions) >= 3
    assert drained_tombstones > 0
    # asset_totals: the asset's keys summed
    want = from_scratch(engine)
    for asset in ASSETS:
        t = engine.asset_totals(asset)
        sums = [sum(v[i] for k, v in want.items() if k[0] == asset) for i in range(len(FIELDS))]
        for name, w, g in zip(FIELDS, sums, t, strict=True):
            assert g == approx(w, rel=1e-9, abs=1e-6), (asset, name)


def test_a_tick_that_changes_the_hedge_fraction_changes_the_hedged_sums() -> None:
    engine = book_engine()
    # DESIGN's worked example: 10 BTC, score 48.82 → HEDGE_PARTIAL (h 0.5)
    engine.step([tick(), position("p1", partition=2), position("p2", size=-4.0, partition=2)], T0)
    engine.drain_partials()
    parts = engine.table.parts
    assert parts is not None
    h1 = engine.table.positions["p1"].last
    h2 = engine.table.positions["p2"].last
    assert h1 is not None and h2 is not None
    assert parts[("BTC", 2)][5] == approx(10 * h1.hedge_pct)
    assert parts[("BTC", 2)][6] == approx(4 * h2.hedge_pct)
    # vol 0.09: vol score 25 → 58.82 (p1): HEDGE_FULL needs 60; depth 2e5: liquidity
    # 440,000/2e5 · 15 = 33 > 15 → 15: 30 + 2.5 + 25 + 15 = 72.5 → HEDGE_FULL (h 1.0)
    engine.step([tick(ts=T0 + 1_000, vol=0.09, bid=2e5, ask=2e5)], T0 + 1_000)
    p1 = engine.table.positions["p1"].last
    assert p1 is not None and p1.hedge_pct == 1.0
    assert parts[("BTC", 2)][5] == approx(10.0)
    drained = engine.drain_partials()
    assert [(a, p) for a, p, _ in drained] == [("BTC", 2)]


def test_closing_the_last_position_drains_a_tombstone() -> None:
    engine = book_engine()
    engine.step([tick(), position("p1", partition=1), position("p2", "ETH", partition=1)], T0)
    assert [(a, p, s is None) for a, p, s in engine.drain_partials()] == [
        ("BTC", 1, False),
        ("ETH", 1, False),
    ]
    engine.step([close("p1", partition=1)], T0 + 1)
    assert engine.drain_partials() == [("BTC", 1, None)]
    parts = engine.table.parts
    assert parts is not None and list(parts) == [("ETH", 1)]


def test_drop_partition_forgets_its_keys_and_dirty_entries() -> None:
    engine = book_engine()
    engine.step(
        [
            tick(),
            position("a", partition=0),
            position("b", partition=1),
            position("c", "ETH", partition=1),
            position("d", "ETH", partition=3),
        ],
        T0,
    )
    engine.drop_partition(1)
    parts = engine.table.parts
    assert parts is not None
    assert sorted(parts) == [("BTC", 0), ("ETH", 3)]
    # the revoked partition's keys are the next owner's to publish: not drained here
    assert [(a, p) for a, p, _ in engine.drain_partials()] == [("BTC", 0), ("ETH", 3)]
    assert_parts_equal(engine)
    # and after a drain, a drop leaves nothing dirty behind
    engine.step([position("e", partition=2)], T0 + 1)
    engine.drop_partition(2)
    assert engine.drain_partials() == []
    assert sorted(parts) == [("BTC", 0), ("ETH", 3)]


def test_off_by_default() -> None:
    engine = Engine(EngineConfig())
    engine.step([tick(), position("p1", partition=1), close("p1", partition=1)], T0)
    engine.step([position("p2", partition=2)], T0 + 1)
    assert engine.table.parts is None
    assert engine.drain_partials() == []
    with pytest.raises(RuntimeError):
        engine.asset_totals("BTC")


def test_totals_of_the_drained_contributions() -> None:
    engine = book_engine()
    engine.step(
        [
            tick(),
            position("a", size=2.0, entry=40_000.0, partition=0),
            position("b", size=-3.0, entry=50_000.0, partition=1),
        ],
        T0,
    )
    parts = {(a, p): s for a, p, s in engine.drain_partials()}
    t = total(s for s in parts.values() if s is not None)
    # Σq = 2 − 3 = −1; Σ|q| = 5; Σ|q|e = 80,000 + 150,000 = 230,000 → vwap 46,000;
    # Σqe = 80,000 − 150,000 = −70,000
    assert (t.positions, t.longs, t.shorts) == (2, 1, 1)
    assert (t.net_size, t.gross_size) == (-1.0, 5.0)
    assert t.vwap_entry == approx(46_000.0)
    assert t.entry_signed == approx(-70_000.0)
    # both are 60 minutes old at T0 (age 60 as of ts T0)
    assert t.age_minutes(T0) == approx(60.0)
    assert t == engine.asset_totals("BTC")


def test_a_key_left_with_flat_positions_only_has_exact_zero_sums() -> None:
    """0.1 + 0.2 − 0.1 − 0.2 = 5.55e-17 in floats: a key whose non-flat positions all went
    must not look like a tiny position (a net size ≠ 0 is assessed as one)."""
    engine = book_engine()
    engine.step(
        [
            tick(),
            position("a", size=0.1, partition=0),
            position("b", size=-0.2, partition=0),
            position("flat", size=0.0, partition=0),
        ],
        T0,
    )
    engine.step([close("a"), close("b")], T0 + 1)
    parts = engine.table.parts
    assert parts is not None
    assert parts[("BTC", 0)] == [1.0] + [0.0] * 9
    # one side gone: its hedged sum is exactly 0
    engine.step(
        [position("c", size=0.1, partition=0), position("d", size=-0.3, partition=0)], T0 + 2
    )
    engine.step([tick(ts=T0 + 3, vol=0.09, bid=1e3, ask=1e3)], T0 + 3)  # hedges advised
    engine.step([close("d")], T0 + 4)
    assert parts[("BTC", 0)][6] == 0.0


def test_a_rebuilt_engine_has_the_same_parts() -> None:
    """A new owner of the partitions (the changelog loaded, the published actions restored,
    settled) holds the same contributions as the instance that published, hedge fractions
    included: it republishes the same keys."""
    events = [
        position("a", size=10.0, partition=0),
        position("b", size=-4.0, entry=43_000.0, partition=0),
        position("c", "ETH", size=300.0, entry=3_100.0, partition=1, opened_at=T0 - 90 * MIN),
        position("d", size=2.0, partition=1),
    ]
    ticks = [tick(), tick("ETH", price=3_000.0, vol=0.09, bid=1e5, ask=1e5)]
    live = book_engine()
    res = live.step([*ticks, *events], T0)
    last = {o.position_id: o.value for o in res.outputs if o.value is not None}
    assert {v["hedge_pct"] for v in last.values()} - {0.0}  # some hedges are advised

    rebuilt = book_engine()
    rebuilt.step(ticks, T0)
    rebuilt.load(events)
    for ev in events:
        rebuilt.restore(ev.lineage.partition, ev.position_id, last[ev.position_id])
    for partition in (0, 1):
        rebuilt.settle(partition, T0)
    assert_parts_equal(rebuilt)
    assert snapshot(rebuilt) == snapshot(live)
    assert [(a, p) for a, p, _ in rebuilt.drain_partials()] == [
        ("BTC", 0),
        ("BTC", 1),
        ("ETH", 1),
    ]
