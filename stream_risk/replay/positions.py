"""Positions for replay: `--position` flags, or a positions file of records shaped like
the `positions` messages (DESIGN §2), validated one by one with `PositionMessage`. A
record with `closed: true` closes its position; one with no `ts` opens at the first tick
of its asset. Bad records are named (or skipped) as for ticks."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from stream_risk.models import MAX_PRICE, MAX_SIZE, PositionMessage
from stream_risk.replay.columns import RowChecker, field_column
from stream_risk.replay.errors import BadRecords, SourceError, first_error
from stream_risk.replay.files import read_file
from stream_risk.replay.ticks import Ticks
from stream_risk.replay.timestamps import TsUnit, to_ts

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


@dataclass(slots=True)
class PositionRecord:
    """One position update (or close, `message` None) at event time `ts`."""

    position_id: str
    asset: str
    ts: int
    message: PositionMessage | None
    where: str = ""


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
    chk = RowChecker(raw, skip_bad)
    n = raw.table.num_rows
    bad = BadRecords()
    for msg in raw.bad:
        bad.add(msg)
    cols: dict[str, list[Any]] = {}
    for name in POSITION_FIELDS:
        col = field_column(raw, mapping, name)
        if col is None:
            continue
        if name in ("ts", "opened_at"):
            ms, null = to_ts(col, name, chk, ts_unit, mapping.get(name, name))
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
        loc, what = first_error(exc)
        raise SourceError(f"field {loc}: {what}") from None
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
