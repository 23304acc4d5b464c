"""A positions partition's contribution to an asset (`book.partial`): the sums, the figures
derived from them, the record and its key. Expected numbers are worked by hand."""

from __future__ import annotations

import orjson
import pytest
from pytest import approx

from stream_risk.book.partial import (
    FIELDS,
    Partial,
    as_dict,
    parse_partial_key,
    partial_key,
    total,
)
from stream_risk.engine.actions import LastAction
from stream_risk.engine.table import PositionState, Table

T0 = 1_700_000_000_000
MIN = 60_000

# Three positions of one asset, by hand:
#   A: q = +2, e = 100, h = 0.5,  opened 10 min before T0
#   B: q = +3, e = 110, h = 0,    opened 20 min before T0
#   C: q = −4, e = 120, h = 0.25, opened 30 min before T0
# positions 3, longs 2, shorts 1
# Σq = 2 + 3 − 4 = 1;  Σ|q| = 9
# Σ_long q·h = 2·0.5 + 3·0 = 1;  Σ_short |q|·h = 4·0.25 = 1
# Σ|q|·e = 200 + 330 + 480 = 1010;  Σq·e = 200 + 330 − 480 = 50
# Σ|q|·o = 2(T0 − 10 MIN) + 3(T0 − 20 MIN) + 4(T0 − 30 MIN) = 9 T0 − 200 MIN
ABC = Partial(3, 2, 1, 1.0, 9.0, 1.0, 1.0, 1010.0, 50.0, 9.0 * T0 - 200 * MIN)


def test_derived_figures_by_hand() -> None:
    assert not ABC.empty and Partial().empty
    # hedged_size = Σ q·h = 1 − 1 = 0
    assert ABC.hedged_size == 0.0
    # vwap entry = 1010 / 9 = 112.2222…
    assert ABC.vwap_entry == approx(112.222222222, rel=1e-9)
    # age at T0 = (T0 − (9 T0 − 200 MIN)/9) / MIN = 200/9 = 22.222… minutes
    #   (= (2·10 + 3·20 + 4·30)/9: the size-weighted ages)
    assert ABC.age_minutes(T0) == approx(200 / 9, rel=1e-9)
    # one hour later every position is 60 minutes older: 22.22 + 60
    assert ABC.age_minutes(T0 + 60 * MIN) == approx(200 / 9 + 60, rel=1e-9)
    # before the weighted origin (30 min before T0 < T0 − 22.2 min): never below 0
    assert ABC.age_minutes(T0 - 30 * MIN) == 0.0
    # unrealised at 115 = 2·(115−100) + 3·(115−110) − 4·(115−120) = 30 + 15 + 20 = 65
    assert ABC.unrealized_pnl(115.0) == approx(65.0)
    # and at 100: 0 + 3·(−10) − 4·(−20) = −30 + 80 = 50
    assert ABC.unrealized_pnl(100.0) == approx(50.0)


def test_flat_and_empty_figures() -> None:
    assert Partial().vwap_entry == 0.0
    assert Partial().age_minutes(T0) == 0.0
    assert Partial().unrealized_pnl(123.0) == 0.0
    # +5 and −5 at entries 10 and 14: Σq = 0, Σ|q| = 10, Σ|q|e = 50 + 70 = 120 → vwap 12;
    # Σq·e = 50 − 70 = −20 → unrealised at 13 = 13·0 + 20 = 20 (= 5·3 + (−5)·(−1))
    flat = Partial(2, 1, 1, 0.0, 10.0, 0.0, 0.0, 120.0, -20.0, 10.0 * T0)
    assert flat.vwap_entry == approx(12.0)
    assert flat.unrealized_pnl(13.0) == approx(20.0)
    assert flat.age_minutes(T0 + 6 * MIN) == approx(6.0)


def _last(h: float) -> LastAction:
    return LastAction("HEDGE_PARTIAL" if h else "HOLD", h, None, 50.0, False)


def test_sums_from_a_table_with_opened_at_and_age_as_of_ts_positions() -> None:
    """The origin of a position's age: `opened_at`, else `ts − age_minutes`."""
    table = Table(track_parts=True)
    # A: opened_at T0 − 10 MIN (its ts and age_at_ts are then not used)
    a = PositionState(
        "A", "X", 2.0, 100.0, ts=T0, opened_at=T0 - 10 * MIN, age_at_ts=99.0, partition=1
    )
    # B: 15 minutes old as of ts = T0 − 5 MIN → origin T0 − 20 MIN
    b = PositionState("B", "X", 3.0, 110.0, ts=T0 - 5 * MIN, age_at_ts=15.0, partition=1)
    # C: 30 minutes old as of T0 → origin T0 − 30 MIN
    c = PositionState("C", "X", -4.0, 120.0, ts=T0, age_at_ts=30.0, partition=1)
    for p in (a, b, c):
        table.upsert(p, None, None)
    table.set_last(a, _last(0.5))
    table.set_last(c, _last(0.25))
    assert table.parts is not None
    got = Partial.of(table.parts[("X", 1)])
    for name, want, have in zip(FIELDS, ABC, got, strict=True):
        assert have == approx(want, rel=1e-12), name
    # Each position alone: its age agrees with PositionState.age_minutes.
    for p, age in ((a, 10.0), (b, 20.0), (c, 30.0)):
        assert p.age_minutes(T0) == approx(age)
    assert got.age_minutes(T0) == approx(200 / 9)


def test_json_round_trip() -> None:
    data = ABC.to_json()
    d = orjson.loads(data)
    assert list(d) == list(FIELDS)
    assert d["positions"] == 3 and d["net_size"] == 1.0
    assert Partial.from_json(data) == ABC
    assert as_dict(ABC) == d
    # integers where floats are expected are accepted (a JSON writer may drop ".0")
    assert Partial.from_json(orjson.dumps(dict.fromkeys(FIELDS, 1))) == Partial(
        1, 1, 1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0
    )


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"[1, 2, 3]",
        b"42",
        b"null",
        orjson.dumps({k: 1 for k in FIELDS if k != "gross_size"}),  # missing field
        orjson.dumps({**dict.fromkeys(FIELDS, 1), "positions": "many"}),
        orjson.dumps({**dict.fromkeys(FIELDS, 1), "net_size": None}),
        orjson.dumps({**dict.fromkeys(FIELDS, 1), "entry_weight": [1]}),
    ],
)
def test_bad_records_raise_value_error(value: bytes) -> None:
    with pytest.raises(ValueError):
        Partial.from_json(value)


def test_keys() -> None:
    assert partial_key("BTC", 3) == b"3:BTC"
    assert parse_partial_key(b"3:BTC") == ("BTC", 3)
    # an asset with ':' in it: the first ':' splits (the partition is a number)
    assert partial_key("BTC:PERP:USD", 12) == b"12:BTC:PERP:USD"
    assert parse_partial_key(b"12:BTC:PERP:USD") == ("BTC:PERP:USD", 12)
    # replay's positions have partition -1
    assert parse_partial_key(partial_key("ETH", -1)) == ("ETH", -1)


@pytest.mark.parametrize("key", [b"BTC", b"3:", b":BTC", b"x:BTC", b"", b"\xff:BTC", b"1.5:BTC"])
def test_bad_keys(key: bytes) -> None:
    with pytest.raises(ValueError):
        parse_partial_key(key)


def test_total() -> None:
    assert total([]) == Partial()
    other = Partial(2, 0, 2, -5.0, 5.0, 0.0, 2.5, 600.0, -600.0, 5.0 * T0)
    t = total([ABC, other])
    # 3+2 positions, 2+0 longs, 1+2 shorts; Σq 1 − 5 = −4; Σ|q| 9 + 5 = 14;
    # long_hedged 1 + 0; short_hedged 1 + 2.5; Σ|q|e 1010 + 600; Σqe 50 − 600;
    # Σ|q|o 9T0 − 200 MIN + 5 T0 = 14 T0 − 200 MIN
    assert t == Partial(5, 2, 3, -4.0, 14.0, 1.0, 3.5, 1610.0, -550.0, 14.0 * T0 - 200 * MIN)
    assert isinstance(t.positions, int) and isinstance(t.shorts, int)
    assert total([ABC]) == ABC
