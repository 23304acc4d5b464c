"""Ticks for replay: a ticks file read, validated, sorted and completed.

Records are shaped like the `market-ticks` messages (DESIGN §2); columns can be mapped
with `FIELD=COLUMN` (e.g. `current_price=close,ts=timestamp,asset=symbol`) so exchange
files work as they come. Ticks stay columnar (numpy) and are validated column by column
against the ranges of `MarketTick`. Market fields carry forward per asset; vol the data
does not give is estimated as the engine would, and the other fields take the defaults.
A bad record raises `SourceError` naming the file, the line (JSONL/CSV) or row (Parquet)
and the field; with `skip_bad` it is counted and skipped instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from stream_risk.engine.estimates import (
    MARKET_INPUTS,
    MarketDefaults,
    VolEstimator,
    estimate_series,
)
from stream_risk.models import MAX_PRICE, MAX_USD
from stream_risk.replay.columns import RowChecker, field_column, to_float
from stream_risk.replay.errors import BadRecords, SourceError
from stream_risk.replay.files import read_file
from stream_risk.replay.timestamps import TsUnit, to_ts

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

#: Numeric tick fields: (lower, lower inclusive, upper) as in `MarketTick`.
_TICK_RANGES: dict[str, tuple[float, bool, float]] = {
    "current_price": (0.0, False, MAX_PRICE),
    "volatility_1d": (0.0, True, 1.0),
    "spot_spread_bps": (0.0, True, 10_000.0),
    "perp_funding_rate": (-100.0, True, 100.0),
    "bid_depth_usd": (0.0, False, MAX_USD),
    "ask_depth_usd": (0.0, False, MAX_USD),
}


#: Market fields used when the data never gives them: the engine's own defaults type
#: (DESIGN §1's funding and depths; a 2 bps spread, replay's and live's default).
Defaults = MarketDefaults


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
    chk = RowChecker(raw, skip_bad)
    n = raw.table.num_rows
    used = {mapping.get(f, f) for f in TICK_FIELDS}
    ignored = [c for c in raw.table.column_names if c not in used]
    if "asset" in mapping and asset is not None:
        raise SourceError(
            "give the asset either as a column (--map asset=...) or --asset, not both"
        )

    # asset
    acol = None if asset is not None else field_column(raw, mapping, "asset")
    if asset is None and acol is None:
        raise SourceError(
            f"{raw.name}: no asset column; name one with --map asset=COLUMN, or give --asset "
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
    tcol = field_column(raw, mapping, "ts")
    if tcol is None:
        raise SourceError(
            f"{raw.name}: no ts column; name one with --map ts=COLUMN "
            f"(columns: {', '.join(raw.table.column_names)})"
        )
    ts, tnull = to_ts(tcol, "ts", chk, ts_unit, mapping.get("ts", "ts"))
    chk.flag(tnull, "ts", lambda r: "missing (null)")

    if field_column(raw, mapping, "current_price") is None:
        raise SourceError(
            f"{raw.name}: no current_price column; name one with --map "
            f"current_price=COLUMN (columns: {', '.join(raw.table.column_names)})"
        )

    # numeric market fields
    cols: dict[str, NDArray[np.float64]] = {}
    present: dict[str, bool] = {}
    for name, (lo, lo_incl, hi) in _TICK_RANGES.items():
        col = field_column(raw, mapping, name)
        if col is None:
            cols[name] = np.full(n, np.nan)
            present[name] = False
            continue
        vals, null = to_float(col, name, chk)
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
        filled[name] = ffill(v, starts)

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
        source=raw.name,
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


def ffill(v: NDArray[np.float64], starts: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Carry the last non-NaN value forward, restarting at each True of `starts`."""
    if len(v) == 0:
        return v.copy()
    idx = np.where(~np.isnan(v) | starts, np.arange(len(v)), 0)
    np.maximum.accumulate(idx, out=idx)
    return v[idx]
