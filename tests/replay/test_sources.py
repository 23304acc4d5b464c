"""Input files: JSONL, CSV and Parquet, column mapping, timestamp units, and bad records
named by file, line/row and field (or counted and skipped under --skip-bad)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_risk.replay.columns import parse_mapping
from stream_risk.replay.errors import SourceError
from stream_risk.replay.positions import load_positions, parse_position_spec, positions_from_specs
from stream_risk.replay.ticks import TICK_FIELDS, Defaults, load_ticks
from stream_risk.replay.timestamps import iso_to_ms

from . import T0, write_csv, write_jsonl, write_parquet

WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


def tick_rows() -> list[dict[str, Any]]:
    """Two assets, out of order in the file, a field left out of later ticks."""
    return [
        {
            "asset": "BTC",
            "ts": T0 + 2000,
            "current_price": 101.0,
            "volatility_1d": 0.05,
            "spot_spread_bps": 3.0,
        },
        {
            "asset": "ETH",
            "ts": T0,
            "current_price": 10.0,
            "volatility_1d": 0.02,
            "spot_spread_bps": 4.0,
        },
        {
            "asset": "BTC",
            "ts": T0,
            "current_price": 100.0,
            "volatility_1d": 0.04,
            "spot_spread_bps": 3.5,
        },
        {
            "asset": "BTC",
            "ts": T0 + 4000,
            "current_price": 102.0,
            "volatility_1d": None,
            "spot_spread_bps": None,
        },
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_format_gives_the_same_sorted_carried_forward_ticks(tmp_path: Path, fmt: str) -> None:
    path = WRITERS[fmt](tmp_path / f"ticks.{fmt}", tick_rows())
    t = load_ticks(path, defaults=Defaults(spot_spread_bps=9.0))
    assert [t.assets[c] for c in t.asset] == ["ETH", "BTC", "BTC", "BTC"]
    assert t.ts.tolist() == [T0, T0, T0 + 2000, T0 + 4000]  # by ts, file order at ties
    assert t.price.tolist() == [10.0, 100.0, 101.0, 102.0]
    assert t.vol.tolist() == [0.02, 0.04, 0.05, 0.05]  # the last BTC tick carries 0.05
    assert t.spread.tolist() == [4.0, 3.5, 3.0, 3.0]
    # Never given: the defaults (DESIGN §1 for funding and depths).
    assert t.funding.tolist() == [0.0] * 4
    assert t.bid.tolist() == [1e6] * 4 and t.ask.tolist() == [1e6] * 4
    assert t.vol_source == "data"
    assert any("perp_funding_rate never given" in a for a in t.assumptions)


def test_column_mapping_and_a_constant_asset_read_exchange_candles(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "c.csv",
        [
            {"open_time": "2024-03-04T00:00:00Z", "close": 3400.5, "volume": 7},
            {"open_time": "2024-03-04T00:01:00+01:00", "close": 3401.0, "volume": 8},
        ],
    )
    mapping = parse_mapping(["current_price=close", "ts=open_time"], TICK_FIELDS)
    t = load_ticks(path, mapping, asset="ETH")
    # 00:01+01:00 is 23:01 the day before: it sorts first.
    assert t.ts.tolist() == [iso_to_ms("2024-03-03T23:01:00Z"), iso_to_ms("2024-03-04T00:00:00Z")]
    assert t.ts[1] == 1_709_510_400_000  # 2024-03-04T00:00:00Z, worked out from the epoch
    assert t.price.tolist() == [3401.0, 3400.5]
    assert t.assets == ["ETH"]
    assert t.ignored_columns == ["volume"]
    assert t.vol_source == "estimated"  # no volatility column


@pytest.mark.parametrize(
    ("values", "unit", "expected"),
    [
        ([1_700_000_000_000, 1_700_000_060_000], "auto", [T0, T0 + 60_000]),  # epoch ms
        ([1_700_000_000, 1_700_000_060], "auto", [T0, T0 + 60_000]),  # epoch s
        ([1_700_000_000.5, 1_700_000_060.25], "auto", [T0 + 500, T0 + 60_250]),
        (["2023-11-14T22:13:20Z", "2023-11-14T22:14:20.000Z"], "auto", [T0, T0 + 60_000]),
        (["2023-11-14 22:13:20", "2023-11-14T23:14:20+01:00"], "auto", [T0, T0 + 60_000]),
        ([T0, T0 + 1_000], "ms", [T0, T0 + 1_000]),  # forced
        ([T0 // 1000, T0 // 1000 + 1], "s", [T0, T0 + 1_000]),
    ],
)
def test_timestamps_epoch_ms_epoch_s_and_iso(
    tmp_path: Path, values: list[Any], unit: str, expected: list[int]
) -> None:
    for fmt in ("jsonl", "csv"):
        rows = [{"asset": "BTC", "ts": v, "current_price": 1.0} for v in values]
        path = WRITERS[fmt](tmp_path / f"t.{fmt}", rows)
        t = load_ticks(path, ts_unit=unit)  # type: ignore[arg-type]
        assert t.ts.tolist() == expected, fmt


def test_parquet_timestamp_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "time": pa.array([T0, T0 + 1000], type=pa.timestamp("ms", tz="UTC")),
            "symbol": ["SOL", "SOL"],
            "px": [150.0, 151.0],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    mapping = parse_mapping(["ts=time,asset=symbol,current_price=px"], TICK_FIELDS)
    t = load_ticks(tmp_path / "t.parquet", mapping)
    assert t.ts.tolist() == [T0, T0 + 1000]
    assert t.assets == ["SOL"]


@pytest.mark.parametrize(
    ("fmt", "rows", "message"),
    [
        (
            "csv",
            [
                {"asset": "BTC", "ts": T0, "current_price": 1.0},
                {"asset": "BTC", "ts": T0 + 1, "current_price": "abc"},
            ],
            "t.csv, line 3, field current_price: expected a number, got 'abc'",
        ),
        (
            "jsonl",
            [{"asset": "BTC", "ts": T0, "current_price": -5.0}],
            "t.jsonl, line 1, field current_price: must be > 0 and <= 1e+12, got -5",
        ),
        (
            "parquet",
            [
                {"asset": "BTC", "ts": T0, "current_price": 1.0, "volatility_1d": 0.1},
                {"asset": "BTC", "ts": T0 + 1, "current_price": 1.0, "volatility_1d": 1.5},
            ],
            "t.parquet, row 2, field volatility_1d: must be >= 0 and <= 1, got 1.5",
        ),
        (
            "jsonl",
            [{"asset": "BTC", "ts": "yesterday", "current_price": 1.0}],
            "t.jsonl, line 1, field ts: expected epoch ms/s or ISO-8601, got 'yesterday'",
        ),
        (
            "csv",
            [{"asset": "BTC", "ts": 1_700_000_000_000_000, "current_price": 1.0}],
            "t.csv, line 2, field ts: column 'ts' holds 1700000000000000, read as "
            "1,700,000,000,000,000 ms since 1970 (epoch ms): outside 2000-01-01 .. ",
        ),
        (
            "jsonl",
            [{"asset": "", "ts": T0, "current_price": 1.0}],
            "t.jsonl, line 1, field asset: must be 1..64 characters",
        ),
    ],
)
def test_a_bad_record_names_file_line_or_row_and_field(
    tmp_path: Path, fmt: str, rows: list[dict[str, Any]], message: str
) -> None:
    path = WRITERS[fmt](tmp_path / f"t.{fmt}", rows)
    with pytest.raises(SourceError) as err:
        load_ticks(path)
    assert message in str(err.value)


def test_unparseable_lines_are_named_and_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"asset": "BTC", "ts": 1700000000000, "current_price": 1.0}\n'
        "\n"
        '{"asset": "BTC", ts: 1700000001000}\n'
        '{"asset": "BTC", "ts": 1700000002000, "current_price": "x"}\n'
        '{"asset": "BTC", "ts": 1700000003000, "current_price": 3.0}\n'
    )
    with pytest.raises(SourceError, match=r"t\.jsonl, line 3: not valid JSON"):
        load_ticks(path)
    t = load_ticks(path, skip_bad=True)
    assert t.price.tolist() == [1.0, 3.0]
    assert t.bad.count == 2
    assert "line 3: not valid JSON" in t.bad.examples[0]
    assert "line 4, field current_price: expected a number, got 'x'" in t.bad.examples[1]


def test_a_csv_row_with_the_wrong_number_of_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "asset,ts,current_price\nBTC,1700000000000,1.0\nBTC,1700000001000\nBTC,1700000002000,2.0\n"
    )
    with pytest.raises(SourceError, match=r"t\.csv, line 3: expected 3 columns"):
        load_ticks(path)
    t = load_ticks(path, skip_bad=True)
    assert t.price.tolist() == [1.0, 2.0] and t.bad.count == 1


def test_missing_columns_and_bad_mappings_are_explained(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", [{"symbol": "BTC", "time": T0, "close": 1.0}])
    with pytest.raises(SourceError, match="no asset column; name one with --map asset=COLUMN"):
        load_ticks(path)
    with pytest.raises(SourceError, match="no ts column"):
        load_ticks(path, {"asset": "symbol"})
    with pytest.raises(SourceError, match="no current_price column"):
        load_ticks(path, {"asset": "symbol", "ts": "time"})
    with pytest.raises(SourceError, match="no column 'price' \\(mapped to field current_price\\)"):
        load_ticks(path, {"asset": "symbol", "ts": "time", "current_price": "price"})
    with pytest.raises(SourceError, match="unknown field 'close'"):
        parse_mapping(["close=current_price"], TICK_FIELDS)
    with pytest.raises(SourceError, match="expected FIELD=COLUMN"):
        parse_mapping(["current_price"], TICK_FIELDS)
    with pytest.raises(SourceError, match="unknown file type"):
        load_ticks(tmp_path / "t.xlsx")


def test_positions_file_records_closes_and_bad_fields(tmp_path: Path) -> None:
    ticks = load_ticks(write_jsonl(tmp_path / "t.jsonl", tick_rows()))
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"position_id": "a", "asset": "BTC", "size": 2, "entry_price": 99, "ts": T0 + 1000},
            {
                "position_id": "b",
                "asset": "ETH",
                "size": -1,
                "entry_price": 10,
                "config": {"max_loss_pct": 0.03},
            },  # no ts: opens at ETH's first tick
            {"position_id": "a", "closed": True, "ts": T0 + 3000},
        ],
    )
    recs, bad = load_positions(path, ticks)
    assert bad.count == 0
    assert [(r.position_id, r.ts, r.message is None) for r in recs] == [
        ("a", T0 + 1000, False),
        ("b", T0, False),
        ("a", T0 + 3000, True),
    ]
    assert recs[1].message is not None and recs[1].message.config is not None

    bad_path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"position_id": "a", "asset": "BTC", "size": 2, "entry_price": 99, "ts": T0},
            {"position_id": "c", "asset": "BTC", "size": 1, "entry_price": -3, "ts": T0},
        ],
    )
    with pytest.raises(SourceError, match=r"bad\.jsonl, line 2, field entry_price: "):
        load_positions(bad_path, ticks)
    recs, bad = load_positions(bad_path, ticks, skip_bad=True)
    assert [r.position_id for r in recs] == ["a"] and bad.count == 1


def test_position_specs() -> None:
    assert parse_position_spec("BTC:10@2509.17") == ("BTC", "BTC", 10.0, 2509.17)
    assert parse_position_spec("desk1=ETH:-5@3100") == ("desk1", "ETH", -5.0, 3100.0)
    with pytest.raises(SourceError, match="expected \\[ID=\\]ASSET:SIZE@ENTRY"):
        parse_position_spec("BTC 10")
    with pytest.raises(SourceError, match="entry price must be > 0"):
        parse_position_spec("BTC:1@0")


def test_a_spec_opens_at_the_first_tick_of_its_asset(tmp_path: Path) -> None:
    ticks = load_ticks(write_jsonl(tmp_path / "t.jsonl", tick_rows()))
    (rec,) = positions_from_specs(["BTC:10@99"], ticks)
    assert rec.ts == T0 and rec.message is not None and rec.message.age_minutes == 0
    with pytest.raises(SourceError, match="no ticks of 'DOGE'"):
        positions_from_specs(["DOGE:1@1"], ticks)


def test_vol_estimated_when_the_data_has_none(tmp_path: Path) -> None:
    rows = [
        {"asset": "BTC", "ts": T0 + i * 60_000, "current_price": 100.0 + i % 3} for i in range(30)
    ]
    t = load_ticks(write_jsonl(tmp_path / "t.jsonl", rows))
    assert t.vol_source == "estimated"
    assert np.isnan(t.vol[:20]).all()  # 20 returns needed: the 21st tick has the first
    assert np.isfinite(t.vol[20:]).all()
