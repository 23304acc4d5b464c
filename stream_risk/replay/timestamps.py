"""Timestamps to epoch ms: epoch ms, epoch s (told apart by magnitude: below 1e11 is
seconds, unless `ts_unit` says), arrow timestamps and dates, or ISO-8601 strings (no zone
= UTC). Out-of-range values (µs or ns by mistake) are bad rows. And back: `ms_to_iso`."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from stream_risk.models import MAX_TS_MS
from stream_risk.replay.columns import RowChecker, one_array, to_float

TsUnit = Literal["auto", "ms", "s"]

#: Epoch values below this are seconds (1e11 s is year 5138; 1e11 ms is 1973).
SECONDS_BELOW = 1e11


def to_ts(
    col: pa.ChunkedArray, name: str, chk: RowChecker, unit: TsUnit
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Epoch ms from epoch ms / epoch s numbers, arrow timestamps, or ISO-8601 strings."""
    arr, null = one_array(col)
    t = arr.type
    n = len(arr)
    ms = np.zeros(n, dtype=np.int64)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        ts_arr = arr.cast(pa.timestamp("ms", tz=t.tz if pa.types.is_timestamp(t) else None))
        ms = np.asarray(ts_arr.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64)
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        vals, _ = to_float(arr, name, chk)
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
    arr: pa.Array, null: NDArray[np.bool_], name: str, chk: RowChecker, unit: TsUnit
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


def ms_to_iso(ms: int) -> str:
    """Epoch ms to ISO-8601 UTC to the centisecond, e.g. `2023-11-14T22:13:20.00Z`."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
