"""`Table.add_new` (a rebuild's load: sorted indexes made in one sort, when read) against
`Table.upsert` per record, with live updates, moves, removals and reads in between: the
same positions, indexes and sums."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stream_risk.engine.table import PositionState, Table


def _state(t: Table) -> tuple[Any, ...]:
    return (
        {pid: (p.asset, p.partition, p.size) for pid, p in t.positions.items()},
        {a: list(m) for a, m in t.by_asset.items()},
        {p: list(m) for p, m in t.by_partition.items()},
        t.sizes,
        list(t.ids),
        {a: list(ids) for a, ids in t.ids_by_asset.items()},
    )


@pytest.mark.parametrize("seed", range(40))
def test_add_new_gives_the_table_upsert_gives(seed: int) -> None:
    rnd = random.Random(seed)
    bulk, one = Table(), Table()
    for _ in range(400):
        pid = f"p{rnd.randrange(60):02d}"
        r = rnd.random()
        asset = rnd.choice(("BTC", "ETH", "SOL"))
        size = rnd.choice((1.0, -2.0, 0.5))
        partition = rnd.randrange(3)
        if pid not in one.positions and r < 0.7:
            # New: the load's way in one table, the live way in the other.
            for t in (bulk, one):
                pos = PositionState(pid, asset, size, partition=partition)
                if t is bulk:
                    t.add_new(pos)
                else:
                    t.upsert(pos, None, None)
        elif pid in one.positions and r < 0.5:  # a new version: maybe moved
            for t in (bulk, one):
                old = t.positions[pid]
                pos = PositionState(pid, asset, size, partition=partition)
                t.upsert(pos, old.asset, old.partition, old.size)
        elif pid in one.positions and r < 0.8:
            for t in (bulk, one):
                t.remove(pid)
        elif r < 0.85:  # a read in between: what is pending is sorted in then
            assert list(bulk.ids) == list(one.ids)
        else:  # a live new position while others are pending
            if pid not in one.positions:
                for t in (bulk, one):
                    t.upsert(PositionState(pid, asset, size, partition=partition), None, None)
    assert _state(bulk) == _state(one)
    assert list(bulk.ids) == sorted(bulk.positions)
    for asset, ids in bulk.ids_by_asset.items():
        assert list(ids) == sorted(bulk.by_asset[asset])
    assert set(bulk.ids_by_asset) == set(bulk.by_asset)


def test_sort_ids_makes_the_indexes_and_settle_calls_it() -> None:
    from stream_risk.engine import Engine

    engine = Engine()
    t = engine.table
    for i in (3, 1, 2):
        t.add_new(PositionState(f"p{i}", "BTC" if i < 3 else "ETH", 1.0, partition=0))
    assert t._unsorted and not t._ids
    engine.settle(0, 0)
    assert not t._unsorted
    assert list(t._ids) == ["p1", "p2", "p3"]
    assert {a: list(ids) for a, ids in t._ids_by_asset.items()} == {
        "BTC": ["p1", "p2"],
        "ETH": ["p3"],
    }


@pytest.mark.parametrize("n_new", [1, 2, 50])
def test_sort_ids_onto_indexes_that_have_ids_already(n_new: int) -> None:
    """Ids left out go in onto an asset that has sorted ids already (those it lacks), and
    onto one that has none."""
    bulk, one = Table(), Table()
    for t in (bulk, one):
        for i in range(0, 40, 2):
            t.upsert(PositionState(f"p{i:03d}", ("BTC", "ETH", "SOL")[i % 3], 1.0), None, None)
    for i in range(1, 2 * n_new, 2):
        asset = ("BTC", "XRP")[i % 4 == 1]
        bulk.add_new(PositionState(f"p{i:03d}", asset, 1.0))
        one.upsert(PositionState(f"p{i:03d}", asset, 1.0), None, None)
    assert _state(bulk) == _state(one)
