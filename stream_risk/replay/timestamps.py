"""Timestamps to epoch ms: epoch ms, epoch s (told apart by magnitude: below 1e11 is
seconds, unless `ts_unit` says), arrow timestamps and dates, or ISO-8601 strings (no zone
= UTC). A time outside 2000-01-01 .. now + 1 year is refused (a bad row), naming the column,
the value as given and the unit it most likely is (`unit_hint`): µs or ns, seconds read as
ms, or a column that is not a time at all (a wrong `--map ts=`). And back: `ms_to_iso`."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from typing import Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from stream_risk.replay.columns import RowChecker, one_array, to_float

TsUnit = Literal["auto", "ms", "s"]

#: Epoch values below this are seconds (1e11 s is year 5138; 1e11 ms is 1973).
SECONDS_BELOW = 1e11
#: The earliest time replay accepts: 2000-01-01T00:00:00Z.
EARLIEST_MS = 946_684_800_000
YEAR_MS = 365 * 86_400_000


def latest_ms() -> int:
    """The latest time replay accepts: now + 1 year."""
    return int(time.time() * 1000) + YEAR_MS


def unit_hint(ms: int, unit: str, hi: int | None = None) -> str:
    """What a time `ms` outside the window most likely is, and what to do."""
    hi = latest_ms() if hi is None else hi

    def ok(v: float) -> bool:
        return EARLIEST_MS <= v <= hi

    if unit not in ("ms", "s"):  # a date, not a number: no unit to suggest
        return (
            "a date before 2000: check the data (or --map ts=COLUMN)"
            if ms < EARLIEST_MS
            else "a date too far ahead: check the data (or --map ts=COLUMN)"
        )
    if unit == "ms" and ok(ms * 1000.0):
        return "these look like epoch seconds read as ms: pass --ts-unit s"
    if unit == "s" and ok(ms / 1000.0):
        return "these look like epoch ms read as seconds: pass --ts-unit ms"
    if ok(ms / 1000.0):
        return "these look like epoch µs: convert the column to ms (divide by 1,000)"
    if ok(ms / 1e6):
        return "these look like epoch ns: convert the column to ms (divide by 1,000,000)"
    return "this does not look like a time (a price or a count?): check --map ts=COLUMN"


def to_ts(
    col: pa.ChunkedArray, name: str, chk: RowChecker, unit: TsUnit, column: str | None = None
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Epoch ms from epoch ms / epoch s numbers, arrow timestamps, or ISO-8601 strings;
    `column` (default `name`) is the file's column, named when a time is out of range."""
    arr, null = one_array(col)
    read_as = "timestamp"
    t = arr.type
    n = len(arr)
    ms = np.zeros(n, dtype=np.int64)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        ts_arr = arr.cast(pa.timestamp("ms", tz=t.tz if pa.types.is_timestamp(t) else None))
        ms = np.asarray(ts_arr.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64)
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        vals, _ = to_float(arr, name, chk)
        ms, read_as = _epoch_ms(vals, null, unit)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        ms, read_as = _parse_iso(arr, null, name, chk, unit)
    else:
        chk.flag(~null, name, lambda r: f"expected epoch ms/s or ISO-8601, got {arr[r]}")
    hi = latest_ms()
    out_of_range = ~null & ~chk.bad & ((ms < EARLIEST_MS) | (ms > hi))
    col_name = column or name

    def why(r: int) -> str:
        value = arr[r].as_py()
        given = value.isoformat() if isinstance(value, dt.date) else repr(value)
        how = f" (epoch {read_as})" if read_as in ("ms", "s") else ""
        return (
            f"column {col_name!r} holds {given}, read as {_shown(int(ms[r]))}{how}: "
            f"outside {ms_to_iso(EARLIEST_MS)[:10]} .. "
            f"{ms_to_iso(hi)[:10]} (now + 1 year); {unit_hint(int(ms[r]), read_as, hi)}"
        )

    chk.flag(out_of_range, name, why)
    return ms, null


def _shown(ms: int) -> str:
    try:
        return ms_to_iso(ms)
    except (ValueError, OverflowError, OSError):
        return f"{ms:,} ms since 1970"


def _epoch_ms(
    vals: NDArray[np.float64], null: NDArray[np.bool_], unit: TsUnit
) -> tuple[NDArray[np.int64], str]:
    """Epoch ms, and the unit the numbers were read in ("ms" or "s")."""
    finite = vals[~null & np.isfinite(vals)]
    if unit == "auto":
        unit = "s" if len(finite) and float(np.max(np.abs(finite))) < SECONDS_BELOW else "ms"
    scaled = vals * 1000.0 if unit == "s" else vals
    scaled = np.where(np.isfinite(scaled), scaled, 0.0)
    return np.asarray(np.rint(np.clip(scaled, -1e18, 1e18)), dtype=np.int64), unit


_NUMERIC = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def _parse_iso(
    arr: pa.Array, null: NDArray[np.bool_], name: str, chk: RowChecker, unit: TsUnit
) -> tuple[NDArray[np.int64], str]:
    values: list[str | None] = arr.to_pylist()
    present = [v for v in values if v is not None]
    if present and all(_NUMERIC.match(v) for v in present):
        vals = np.array([math.nan if v is None else float(v) for v in values])
        return _epoch_ms(vals, null, unit)
    for tz in ("UTC", None):
        try:
            cast = arr.cast(pa.timestamp("ms", tz=tz))
            ms = np.asarray(cast.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64)
            return ms, "iso"
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
    return out, "iso"


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


def ms_to_iso(ms: int) -> str:
    """Epoch ms to ISO-8601 UTC to the centisecond, e.g. `2023-11-14T22:13:20.00Z`."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
