"""A file's columns as validated numpy values: the `FIELD=COLUMN` mapping, finding a
field's column, numbers, and the checker that names (or, with `skip_bad`, collects) the
bad rows by file, line or row, and field."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from stream_risk.replay.errors import SourceError
from stream_risk.replay.files import RawFile


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


class RowChecker:
    """Collects bad rows of a table (row -> first reason), raising at once unless skipping."""

    def __init__(self, raw: RawFile, skip_bad: bool) -> None:
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


def field_column(raw: RawFile, mapping: Mapping[str, str], name: str) -> pa.ChunkedArray | None:
    col = mapping.get(name, name)
    if col not in raw.table.column_names:
        if name in mapping:
            raise SourceError(
                f"{raw.name}: no column {col!r} (mapped to field {name}); the columns are "
                f"{', '.join(raw.table.column_names) or '(none)'}"
            )
        return None
    return raw.table.column(col)


def one_array(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, NDArray[np.bool_]]:
    """A column as one arrow array, and its null mask."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr, np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def to_float(
    col: pa.ChunkedArray, name: str, chk: RowChecker
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Values as float64 and a null mask; non-numbers are flagged bad."""
    arr, null = one_array(col)
    t = arr.type
    n = len(arr)
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
