"""Historical inputs for replay: ticks and positions from JSONL, CSV or Parquet files.

Records are shaped like the topics' messages (DESIGN §2); columns can be mapped with
`FIELD=COLUMN` (e.g. `current_price=close,ts=timestamp,asset=symbol`) so exchange files
work as they come. Timestamps may be epoch ms, epoch s (told apart by magnitude: below
1e11 is seconds, unless `ts_unit` says) or ISO-8601 strings (no zone = UTC).

Files are parsed by pyarrow (the format follows the extension: .jsonl/.ndjson/.json, .csv,
.parquet/.pq). Ticks stay columnar (numpy) and are validated column by column against the
ranges of `MarketTick`; positions are few and validated one by one with `PositionMessage`.
A bad record raises `SourceError` naming the file, the line (JSONL/CSV) or row (Parquet)
and the field; with `skip_bad` it is counted and skipped instead.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from numpy.typing import NDArray
from pydantic import ValidationError

from stream_risk.config import SCOPE_FORMS, RiskConfigPatch, is_scope, patch_dict
from stream_risk.engine.estimates import (
    MARKET_INPUTS,
    MarketDefaults,
    VolEstimator,
    estimate_series,
)
from stream_risk.models import MAX_PRICE, MAX_SIZE, MAX_TS_MS, MAX_USD, PositionMessage

TsUnit = Literal["auto", "ms", "s"]

TICK_FIELDS: tuple[str, ...] = (
    "asset",
    "ts",
    "current_price",
    "volatility_1d",
    "spot_spread_bps",
    "perp_funding_rate",
    "bid_depth_usd",
    "ask_depth_usd",
)
POSITION_FIELDS: tuple[str, ...] = (
    "position_id",
    "asset",
    "size",
    "entry_price",
    "ts",
    "opened_at",
    "age_minutes",
    "unrealized_pnl",
    "config",
    "closed",
)

#: Numeric tick fields: (lower, lower inclusive, upper) as in `MarketTick`.
_TICK_RANGES: dict[str, tuple[float, bool, float]] = {
    "current_price": (0.0, False, MAX_PRICE),
    "volatility_1d": (0.0, True, 1.0),
    "spot_spread_bps": (0.0, True, 10_000.0),
    "perp_funding_rate": (-100.0, True, 100.0),
    "bid_depth_usd": (0.0, False, MAX_USD),
    "ask_depth_usd": (0.0, False, MAX_USD),
}
#: Epoch values below this are seconds (1e11 s is year 5138; 1e11 ms is 1973).
SECONDS_BELOW = 1e11

EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class SourceError(Exception):
    """A problem with an input file, worded for the person who gave it."""


#: Market fields used when the data never gives them: the engine's own defaults type
#: (DESIGN §1's funding and depths; a 2 bps spread, replay's and live's default).
Defaults = MarketDefaults


@dataclass(slots=True)
class BadRecords:
    """Records skipped under `skip_bad`: how many, and the first few reasons."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < 20:
            self.examples.append(message)


@dataclass(slots=True)
class Ticks:
    """Validated ticks, sorted by (ts, file order), every market field carried forward."""

    source: str
    assets: list[str]
    asset: NDArray[np.int32]
    ts: NDArray[np.int64]
    price: NDArray[np.float64]
    vol: NDArray[np.float64]  # NaN while no vol is known yet (estimator warming up)
    spread: NDArray[np.float64]
    funding: NDArray[np.float64]
    bid: NDArray[np.float64]
    ask: NDArray[np.float64]
    #: Bits of MARKET_INPUTS the data has given for the asset at or before each tick (as
    #: `MarketState.given`): the engine is sent only those; it estimates vol and applies
    #: the defaults to the rest itself, exactly as live.
    given: NDArray[np.int8] | None = None  # None: every value that is not NaN was given
    vol_source: str = "data"
    assumptions: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    bad: BadRecords = field(default_factory=BadRecords)

    def __post_init__(self) -> None:
        if self.given is None:
            given = np.zeros(len(self.ts), dtype=np.int8)
            cols = (self.vol, self.spread, self.funding, self.bid, self.ask)
            for bit, col in enumerate(cols):
                given |= (~np.isnan(col)).astype(np.int8) << bit
            self.given = given

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(slots=True)
class PositionRecord:
    """One position update (or close, `message` None) at event time `ts`."""

    position_id: str
    asset: str
    ts: int
    message: PositionMessage | None
    where: str = ""


# ---------------------------------------------------------------------- mapping
def parse_mapping(
    specs: Sequence[str] | None, fields: Sequence[str], flag: str = "--map"
) -> dict[str, str]:
    """`["current_price=close,ts=timestamp", "asset=symbol"]` -> {field: column}."""
    out: dict[str, str] = {}
    for spec in specs or ():
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, column = part.partition("=")
            name, column = name.strip(), column.strip()
            if not sep or not name or not column:
                raise SourceError(f"{flag} {part!r}: expected FIELD=COLUMN")
            if name not in fields:
                raise SourceError(
                    f"{flag} {part!r}: unknown field {name!r}; fields are {', '.join(fields)}"
                )
            out[name] = column
    return out


# ---------------------------------------------------------------------- reading files
@dataclass(slots=True)
class _Raw:
    """A file read into an arrow table, with a way to name a row's place in the file."""

    path: Path
    kind: str
    table: pa.Table
    #: Original (0-based) record index of each table row (rows may have been dropped).
    record: NDArray[np.int64]
    bad: list[str]
    _lines: list[int] | None = None

    def where(self, row: int) -> str:
        """'file, line N' (JSONL/CSV) or 'file, row N' (Parquet) for table row `row`."""
        rec = int(self.record[row])
        if self.kind == "parquet":
            return f"{self.path}, row {rec + 1}"
        if self._lines is None:
            self._lines = _record_lines(self.path, header=self.kind == "csv")
        line = self._lines[rec] if rec < len(self._lines) else rec + 1
        return f"{self.path}, line {line}"


def _record_lines(path: Path, header: bool) -> list[int]:
    """1-based line number of each record: non-blank lines, after the header for CSV."""
    out: list[int] = []
    seen_header = not header
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not seen_header:
                seen_header = True
                continue
            out.append(n)
    return out


def file_kind(path: Path) -> str:
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise SourceError(
            f"{path}: unknown file type {path.suffix!r}; use .jsonl (or .ndjson/.json, one "
            "JSON object per line), .csv or .parquet"
        )
    return kind


def read_file(path: str | Path, skip_bad: bool = False) -> _Raw:
    """Read a JSONL, CSV or Parquet file with pyarrow (format by extension)."""
    p = Path(path)
    kind = file_kind(p)
    if not p.is_file():
        raise SourceError(f"{p}: no such file")
    try:
        if kind == "parquet":
            table = pq.read_table(p)
            return _Raw(p, kind, table, np.arange(table.num_rows, dtype=np.int64), [])
        if kind == "csv":
            return _read_csv(p, skip_bad)
        return _read_jsonl(p, skip_bad)
    except SourceError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise SourceError(f"{p}: cannot read it as {kind.upper()}: {exc}") from None


def _read_csv(p: Path, skip_bad: bool) -> _Raw:
    invalid: list[str] = []

    def on_invalid(row: Any) -> str:
        invalid.append(row.text)
        return "skip"

    table = pcsv.read_csv(
        p,
        read_options=pcsv.ReadOptions(use_threads=False),
        parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
    )
    if not invalid:
        return _Raw(p, "csv", table, np.arange(table.num_rows, dtype=np.int64), [])
    # Find the skipped records' lines to name them and to keep record numbers right.
    lines = _record_lines(p, header=True)
    texts = _record_texts(p)
    bad_recs: list[int] = []
    pos = 0
    for text in invalid:
        while pos < len(texts) and texts[pos] != text:
            pos += 1
        bad_recs.append(pos if pos < len(texts) else len(texts) - 1)
        pos += 1
    ncols = table.num_columns
    messages = [
        f"{p}, line {lines[r] if r < len(lines) else '?'}: expected {ncols} columns "
        f"({', '.join(table.column_names)}), got {len(_split_csv(texts[r]))}"
        for r in bad_recs
    ]
    if not skip_bad:
        raise SourceError(messages[0])
    keep = np.setdiff1d(np.arange(len(texts), dtype=np.int64), np.array(bad_recs))
    return _Raw(p, "csv", table, keep[: table.num_rows], messages)


def _record_texts(p: Path) -> list[str]:
    out = []
    with p.open("rb") as f:
        first = True
        for line in f:
            if not line.strip():
                continue
            if first:
                first = False
                continue
            out.append(line.decode("utf-8", "replace").rstrip("\r\n"))
    return out


def _split_csv(text: str) -> list[str]:
    import csv

    return next(csv.reader([text]), [])


def _read_jsonl(p: Path, skip_bad: bool) -> _Raw:
    try:
        table = pjson.read_json(p)
        return _Raw(p, "jsonl", table, np.arange(table.num_rows, dtype=np.int64), [])
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # pyarrow refused the file as a whole: read it line by line to name (or skip) the bad
    # lines and to let columns of mixed types reach the per-field checks below.
    rows: list[dict[str, Any]] = []
    records: list[int] = []
    bad: list[str] = []
    rec = 0
    with p.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                msg = f"{p}, line {n}: not valid JSON ({exc})"
                if not skip_bad:
                    raise SourceError(msg) from None
                bad.append(msg)
                rec += 1
                continue
            if not isinstance(obj, dict):
                msg = f"{p}, line {n}: expected a JSON object, got {type(obj).__name__}"
                if not skip_bad:
                    raise SourceError(msg)
                bad.append(msg)
                rec += 1
                continue
            rows.append(obj)
            records.append(rec)
            rec += 1
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        columns[name] = _loose_array(values)
    table = pa.table(columns) if columns else pa.table({})
    return _Raw(p, "jsonl", table, np.array(records, dtype=np.int64), bad)


def _loose_array(values: list[Any]) -> pa.Array:
    """An arrow array of mixed JSON values: numbers if all are, else their JSON text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [
                None if v is None else (v if isinstance(v, str) else orjson.dumps(v).decode())
                for v in values
            ],
            type=pa.string(),
        )


# ---------------------------------------------------------------------- column helpers
class _Checker:
    """Collects bad rows of a table (row -> first reason), raising at once unless skipping."""

    def __init__(self, raw: _Raw, skip_bad: bool) -> None:
        self.raw = raw
        self.skip_bad = skip_bad
        self.bad = np.zeros(raw.table.num_rows, dtype=bool)
        self.reasons: dict[int, str] = {}

    def flag(self, mask: NDArray[np.bool_], name: str, why: Callable[[int], str]) -> None:
        rows = np.flatnonzero(mask & ~self.bad)
        if len(rows) == 0:
            return
        if not self.skip_bad:
            r = int(rows[0])
            raise SourceError(f"{self.raw.where(r)}, field {name}: {why(r)}")
        for r in rows[:20]:
            self.reasons[int(r)] = f"{self.raw.where(int(r))}, field {name}: {why(int(r))}"
        for r in rows[20:]:
            self.reasons[int(r)] = ""
        self.bad[rows] = True


def _column(raw: _Raw, mapping: Mapping[str, str], name: str) -> pa.ChunkedArray | None:
    col = mapping.get(name, name)
    if col not in raw.table.column_names:
        if name in mapping:
            raise SourceError(
                f"{raw.path}: no column {col!r} (mapped to field {name}); the columns are "
                f"{', '.join(raw.table.column_names) or '(none)'}"
            )
        return None
    return raw.table.column(col)


def _to_float(
    col: pa.ChunkedArray, name: str, chk: _Checker
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Values as float64 and a null mask; non-numbers are flagged bad."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    n = len(arr)
    null = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        vals = np.asarray(arr.cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64)
    elif pa.types.is_boolean(t):
        chk.flag(~null, name, lambda r: f"expected a number, got {arr[r].as_py()!r}")
        vals = np.full(n, np.nan)
    else:
        vals = np.full(n, np.nan)
        bad = np.zeros(n, dtype=bool)
        for i, v in enumerate(arr.to_pylist()):
            if v is None:
                continue
            try:
                vals[i] = float(v) if not isinstance(v, bool) else math.nan
                if isinstance(v, bool):
                    bad[i] = True
            except (TypeError, ValueError):
                bad[i] = True
        values = arr.to_pylist()
        chk.flag(bad, name, lambda r: f"expected a number, got {values[r]!r}")
    nonfinite = ~null & ~np.isfinite(vals)
    chk.flag(nonfinite & ~chk.bad, name, lambda r: f"must be a finite number, got {vals[r]}")
    return vals, null


def _to_ts(
    col: pa.ChunkedArray, name: str, chk: _Checker, unit: TsUnit
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Epoch ms from epoch ms / epoch s numbers, arrow timestamps, or ISO-8601 strings."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    n = len(arr)
    null = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    ms = np.zeros(n, dtype=np.int64)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        ts_arr = arr.cast(pa.timestamp("ms", tz=t.tz if pa.types.is_timestamp(t) else None))
        ms = np.asarray(ts_arr.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64)
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        vals, _ = _to_float(arr, name, chk)
        ms = _epoch_ms(vals, null, unit)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        ms = _parse_iso(arr, null, name, chk, unit)
    else:
        chk.flag(~null, name, lambda r: f"expected epoch ms/s or ISO-8601, got {arr[r]}")
    out_of_range = ~null & ~chk.bad & ((ms < 0) | (ms > MAX_TS_MS))
    chk.flag(
        out_of_range,
        name,
        lambda r: f"timestamp {ms[r]} ms is out of range (0..{MAX_TS_MS}): µs or ns by mistake?",
    )
    return ms, null


def _epoch_ms(
    vals: NDArray[np.float64], null: NDArray[np.bool_], unit: TsUnit
) -> NDArray[np.int64]:
    finite = vals[~null & np.isfinite(vals)]
    if unit == "auto":
        unit = "s" if len(finite) and float(np.max(np.abs(finite))) < SECONDS_BELOW else "ms"
    scaled = vals * 1000.0 if unit == "s" else vals
    scaled = np.where(np.isfinite(scaled), scaled, 0.0)
    return np.asarray(np.rint(np.clip(scaled, -1e18, 1e18)), dtype=np.int64)


_NUMERIC = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def _parse_iso(
    arr: pa.Array, null: NDArray[np.bool_], name: str, chk: _Checker, unit: TsUnit
) -> NDArray[np.int64]:
    values: list[str | None] = arr.to_pylist()
    present = [v for v in values if v is not None]
    if present and all(_NUMERIC.match(v) for v in present):
        vals = np.array([math.nan if v is None else float(v) for v in values])
        return _epoch_ms(vals, null, unit)
    for tz in ("UTC", None):
        try:
            cast = arr.cast(pa.timestamp("ms", tz=tz))
            return np.asarray(cast.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    out = np.zeros(len(values), dtype=np.int64)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            out[i] = iso_to_ms(v)
        except ValueError:
            bad[i] = True
    chk.flag(bad, name, lambda r: f"expected epoch ms/s or ISO-8601, got {values[r]!r}")
    return out


def iso_to_ms(text: str) -> int:
    """ISO-8601 (a zone-less time is UTC) to epoch ms; raises ValueError."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    d = dt.datetime.fromisoformat(s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    delta = d - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


# ---------------------------------------------------------------------- ticks
def load_ticks(
    path: str | Path,
    mapping: Mapping[str, str] | None = None,
    *,
    asset: str | None = None,
    ts_unit: TsUnit = "auto",
    skip_bad: bool = False,
    defaults: Defaults | None = None,
    vol: VolEstimator | None = None,
    estimate_vol: bool = False,
) -> Ticks:
    """Read, validate, sort and complete a ticks file (see the module doc).

    `asset` names the asset when the file has no asset column (one file per symbol).
    Market fields carry forward per asset; ones the data never gives take `defaults`.
    Without a `volatility_1d` column (or with `estimate_vol`) vol is estimated by `vol`.
    """
    mapping = dict(mapping or {})
    defaults = defaults or Defaults()
    vol = vol or VolEstimator()
    raw = read_file(path, skip_bad)
    chk = _Checker(raw, skip_bad)
    n = raw.table.num_rows
    used = {mapping.get(f, f) for f in TICK_FIELDS}
    ignored = [c for c in raw.table.column_names if c not in used]
    if "asset" in mapping and asset is not None:
        raise SourceError(
            "give the asset either as a column (--map asset=...) or --asset, not both"
        )

    # asset
    acol = None if asset is not None else _column(raw, mapping, "asset")
    if asset is None and acol is None:
        raise SourceError(
            f"{raw.path}: no asset column; name one with --map asset=COLUMN, or give --asset "
            f"NAME for a file of one asset (columns: {', '.join(raw.table.column_names)})"
        )
    if acol is not None:
        a = acol.combine_chunks()
        if not (pa.types.is_string(a.type) or pa.types.is_large_string(a.type)):
            a = a.cast(pa.string())
        enc = pc.dictionary_encode(a)
        codes = np.asarray(enc.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int32)
        names = [str(x) for x in enc.dictionary.to_pylist()]
        lengths = np.array([len(x) for x in names] + [0], dtype=np.int64)
        chk.flag(codes < 0, "asset", lambda r: "missing (null)")
        chk.flag(
            (codes >= 0) & ((lengths[codes] == 0) | (lengths[codes] > 64)),
            "asset",
            lambda r: f"must be 1..64 characters, got {names[codes[r]]!r}",
        )
    else:
        assert asset is not None
        if not 1 <= len(asset) <= 64:
            raise SourceError(f"--asset {asset!r}: must be 1..64 characters")
        codes = np.zeros(n, dtype=np.int32)
        names = [asset]

    # ts
    tcol = _column(raw, mapping, "ts")
    if tcol is None:
        raise SourceError(
            f"{raw.path}: no ts column; name one with --map ts=COLUMN "
            f"(columns: {', '.join(raw.table.column_names)})"
        )
    ts, tnull = _to_ts(tcol, "ts", chk, ts_unit)
    chk.flag(tnull, "ts", lambda r: "missing (null)")

    if _column(raw, mapping, "current_price") is None:
        raise SourceError(
            f"{raw.path}: no current_price column; name one with --map "
            f"current_price=COLUMN (columns: {', '.join(raw.table.column_names)})"
        )

    # numeric market fields
    cols: dict[str, NDArray[np.float64]] = {}
    present: dict[str, bool] = {}
    for name, (lo, lo_incl, hi) in _TICK_RANGES.items():
        col = _column(raw, mapping, name)
        if col is None:
            cols[name] = np.full(n, np.nan)
            present[name] = False
            continue
        vals, null = _to_float(col, name, chk)
        present[name] = bool((~null).any())
        if name == "current_price":
            chk.flag(null, name, lambda r: "missing (null)")
        ok = ~null & np.isfinite(vals)
        below = (vals < lo) if lo_incl else (vals <= lo)
        out = ok & (below | (vals > hi))
        bound = f"{'>=' if lo_incl else '>'} {lo:g} and <= {hi:g}"
        chk.flag(out, name, _range_reason(vals, bound))
        cols[name] = np.where(null, np.nan, vals)

    bad = BadRecords()
    for msg in raw.bad:
        bad.add(msg)
    if chk.bad.any():
        for r in np.flatnonzero(chk.bad):
            reason = chk.reasons.get(int(r), "")
            if reason:
                bad.add(reason)
            else:
                bad.count += 1
    keep = ~chk.bad

    # Sort by (asset, ts, file order) to carry fields forward per asset, then by (ts, order).
    idx = np.flatnonzero(keep)
    codes_k, ts_k = codes[idx], ts[idx]
    by_asset = np.lexsort((idx, ts_k, codes_k))
    a_sorted = codes_k[by_asset]
    starts = np.ones(len(by_asset), dtype=bool)
    starts[1:] = a_sorted[1:] != a_sorted[:-1]
    filled: dict[str, NDArray[np.float64]] = {}
    for name in _TICK_RANGES:
        v = cols[name][idx][by_asset]
        filled[name] = _ffill(v, starts)

    assumptions: list[str] = []
    if estimate_vol:
        filled["volatility_1d"] = np.full(len(by_asset), np.nan)  # the data's is not used
    given = np.zeros(len(by_asset), dtype=np.int8)
    for bit, name in enumerate(MARKET_INPUTS):
        given |= (~np.isnan(filled[name])).astype(np.int8) << bit
    vol_source = "data"
    if not (given & 1).all():
        # Before the data's first vol of an asset (all of it when it has none, or under
        # --estimate-vol) the engine estimates it: the same estimator, tick by tick.
        vol_source = "estimated" if not (given & 1).any() else "data, estimated before it"
        est = np.full(len(by_asset), np.nan)
        bounds = [*np.flatnonzero(starts).tolist(), len(by_asset)]
        ts_sorted = ts_k[by_asset]
        for s, e in itertools.pairwise(bounds):
            est[s:e] = estimate_series(vol, ts_sorted[s:e], filled["current_price"][s:e])
        filled["volatility_1d"] = np.where(given & 1, filled["volatility_1d"], est)
        if estimate_vol:
            why = "forced by --estimate-vol"
        elif present["volatility_1d"]:
            why = "before the data's first value"
        else:
            why = "the data has none"
        assumptions.append(f"volatility_1d estimated from prices ({why}): {vol.describe()}")
    for name, value in (
        ("spot_spread_bps", defaults.spot_spread_bps),
        ("perp_funding_rate", defaults.perp_funding_rate),
        ("bid_depth_usd", defaults.bid_depth_usd),
        ("ask_depth_usd", defaults.ask_depth_usd),
    ):
        missing = np.isnan(filled[name])
        if missing.any() and value is not None:
            filled[name] = np.where(missing, value, filled[name])
            what = "never given" if not present[name] else "missing before its first value"
            assumptions.append(f"{name} {what}: default {value:g} used")

    # Back to file order, then a stable sort by ts.
    order_back = np.empty_like(by_asset)
    order_back[by_asset] = np.arange(len(by_asset))
    by_ts = np.argsort(ts_k, kind="stable")
    sel = order_back[by_ts]
    return Ticks(
        source=str(raw.path),
        assets=names,
        asset=codes_k[by_ts].astype(np.int32),
        ts=ts_k[by_ts].astype(np.int64),
        price=filled["current_price"][sel],
        vol=filled["volatility_1d"][sel],
        spread=filled["spot_spread_bps"][sel],
        funding=filled["perp_funding_rate"][sel],
        bid=filled["bid_depth_usd"][sel],
        ask=filled["ask_depth_usd"][sel],
        given=given[sel],
        vol_source=vol_source,
        assumptions=assumptions,
        ignored_columns=ignored,
        bad=bad,
    )


def _range_reason(vals: NDArray[np.float64], bound: str) -> Callable[[int], str]:
    return lambda r: f"must be {bound}, got {vals[r]:g}"


def _ffill(v: NDArray[np.float64], starts: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Carry the last non-NaN value forward, restarting at each True of `starts`."""
    if len(v) == 0:
        return v.copy()
    idx = np.where(~np.isnan(v) | starts, np.arange(len(v)), 0)
    np.maximum.accumulate(idx, out=idx)
    return v[idx]


# ---------------------------------------------------------------------- positions
_SPEC = re.compile(
    r"^(?:(?P<id>[^=]+)=)?(?P<asset>[^:=]+):(?P<size>[-+]?[0-9.eE+-]+)@(?P<entry>[0-9.eE+-]+)$"
)


def parse_position_spec(spec: str) -> tuple[str, str, float, float]:
    """`[ID=]ASSET:SIZE@ENTRY` -> (position_id, asset, size, entry). ID defaults to ASSET."""
    m = _SPEC.match(spec.strip())
    if m is None:
        raise SourceError(
            f"--position {spec!r}: expected [ID=]ASSET:SIZE@ENTRY, e.g. BTC:10@2509.17 or "
            "desk1=ETH:-5@3100"
        )
    try:
        size, entry = float(m["size"]), float(m["entry"])
    except ValueError:
        raise SourceError(f"--position {spec!r}: SIZE and ENTRY must be numbers") from None
    asset = m["asset"].strip()
    pid = (m["id"] or asset).strip()
    if not (math.isfinite(size) and abs(size) <= MAX_SIZE):
        raise SourceError(f"--position {spec!r}: size must be a finite number within ±{MAX_SIZE:g}")
    if not (math.isfinite(entry) and 0 < entry <= MAX_PRICE):
        raise SourceError(f"--position {spec!r}: entry price must be > 0 and <= {MAX_PRICE:g}")
    return pid, asset, size, entry


def first_tick_ts(ticks: Ticks) -> dict[str, int]:
    """Each asset's first tick time."""
    out: dict[str, int] = {}
    if len(ticks) == 0:
        return out
    codes, first = np.unique(ticks.asset, return_index=True)
    for c, i in zip(codes.tolist(), first.tolist(), strict=True):
        out[ticks.assets[c]] = int(ticks.ts[i])
    return out


def positions_from_specs(specs: Iterable[str], ticks: Ticks) -> list[PositionRecord]:
    """`--position` flags: each opens at the first tick of its asset, age 0."""
    firsts = first_tick_ts(ticks)
    out = []
    for spec in specs:
        pid, asset, size, entry = parse_position_spec(spec)
        if asset not in firsts:
            known = ", ".join(sorted(firsts)) or "(none)"
            raise SourceError(
                f"--position {spec!r}: no ticks of {asset!r} in {ticks.source} (assets: {known})"
            )
        ts = firsts[asset]
        msg = PositionMessage(
            position_id=pid, asset=asset, size=size, entry_price=entry, ts=ts, age_minutes=0.0
        )
        out.append(PositionRecord(pid, asset, ts, msg, f"--position {spec}"))
    return out


def load_positions(
    path: str | Path,
    ticks: Ticks,
    mapping: Mapping[str, str] | None = None,
    *,
    ts_unit: TsUnit = "auto",
    skip_bad: bool = False,
) -> tuple[list[PositionRecord], BadRecords]:
    """Read a positions file: records shaped like `positions` messages.

    A record with `closed: true` closes its position at `ts` (a tombstone). A record with
    no `ts` opens at the first tick of its asset.
    """
    mapping = dict(mapping or {})
    raw = read_file(path, skip_bad)
    chk = _Checker(raw, skip_bad)
    n = raw.table.num_rows
    bad = BadRecords()
    for msg in raw.bad:
        bad.add(msg)
    cols: dict[str, list[Any]] = {}
    for name in POSITION_FIELDS:
        col = _column(raw, mapping, name)
        if col is None:
            continue
        if name in ("ts", "opened_at"):
            ms, null = _to_ts(col, name, chk, ts_unit)
            cols[name] = [None if null[i] else int(ms[i]) for i in range(n)]
        else:
            cols[name] = col.to_pylist()
    firsts = first_tick_ts(ticks)
    out: list[PositionRecord] = []
    for r in range(n):
        if chk.bad[r]:
            if chk.reasons.get(r):
                bad.add(chk.reasons[r])
            else:
                bad.count += 1
            continue
        body = {k: v[r] for k, v in cols.items() if v[r] is not None}
        try:
            rec = _position_record(body, firsts, ticks.source)
        except SourceError as exc:
            msg = f"{raw.where(r)}, {exc}"
            if not skip_bad:
                raise SourceError(msg) from None
            bad.add(msg)
            continue
        rec.where = raw.where(r)
        out.append(rec)
    return out, bad


def _position_record(
    body: dict[str, Any], firsts: Mapping[str, int], source: str
) -> PositionRecord:
    closed = body.pop("closed", False)
    if isinstance(closed, str):
        closed = closed.strip().lower() in ("1", "true", "yes", "y")
    cfg = body.get("config")
    if isinstance(cfg, str):
        try:
            body["config"] = orjson.loads(cfg) if cfg.strip() else None
        except orjson.JSONDecodeError:
            raise SourceError("field config: not a JSON object") from None
    if closed:
        pid = body.get("position_id") or body.get("asset")
        if not pid:
            raise SourceError("field position_id: a close needs position_id (or asset)")
        if body.get("ts") is None:
            raise SourceError("field ts: a close needs its time")
        return PositionRecord(str(pid), str(body.get("asset", "")), int(body["ts"]), None)
    try:
        msg = PositionMessage.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(x) for x in err["loc"]) or "value"
        raise SourceError(f"field {loc}: {err['msg']}") from None
    ts = msg.ts
    if ts is None:
        if msg.asset not in firsts:
            raise SourceError(
                f"field ts: missing, and {msg.asset!r} has no ticks in {source} to open it at"
            )
        ts = firsts[msg.asset]
        msg = msg.model_copy(update={"ts": ts})
    pid = msg.position_id or msg.asset
    return PositionRecord(pid, msg.asset, ts, msg)


# ---------------------------------------------------------------------- risk-config
@dataclass(slots=True)
class ConfigRecord:
    """A `risk-config` record at event time `ts`: `value` None removes the scope."""

    scope: str
    ts: int
    value: dict[str, Any] | None
    where: str = ""


def load_risk_config(path: str | Path) -> list[ConfigRecord]:
    """Read `risk-config` records from JSONL: one `{"scope", "ts", "value"}` a line
    (`key` is accepted for `scope`; `value` null or absent removes the scope; `ts` epoch
    ms or an ISO-8601 string). Validated as the live engine validates the topic; the first
    bad record stops the run naming its line (raises SourceError)."""
    p = Path(path)
    out: list[ConfigRecord] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p.name}, line {n}"
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise SourceError(f"{where}: not JSON") from None
        if not isinstance(body, dict):
            raise SourceError(f"{where}: not a JSON object")
        scope = body.get("scope", body.get("key"))
        if not isinstance(scope, str) or not is_scope(scope):
            raise SourceError(f"{where}: field scope: {scope!r} is no scope: use {SCOPE_FORMS}")
        ts = body.get("ts")
        if isinstance(ts, str):
            ts = iso_to_ms(ts)
        if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= MAX_TS_MS:
            raise SourceError(f"{where}: field ts: epoch ms (or ISO-8601) required")
        value = body.get("value")
        patch: dict[str, Any] | None = None
        if value is not None:
            try:
                patch = patch_dict(RiskConfigPatch.model_validate(value))
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                loc = ".".join(str(x) for x in err["loc"]) or "value"
                raise SourceError(f"{where}: field value.{loc}: {err['msg']}") from None
        out.append(ConfigRecord(scope, ts, patch, where))
    return out
