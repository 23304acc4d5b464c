"""Tests of `stream-risk replay` (DESIGN §6): sources, vol estimate, the event-time runner,
the fast path, the report, the sweep, the command and `--publish`.

Shared builders live here (test modules import them with `from . import ...`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_risk.replay.cli import main

#: Event time origin (2023-11-14T22:13:20Z), and one minute in ms.
T0 = 1_700_000_000_000
MIN = 60_000
DATA = Path(__file__).resolve().parents[1] / "data"
CANDLES = DATA / "candles_ethusdt_1m.csv"


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(names))
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path


def replay(*argv: str | Path) -> int:
    """Run `stream-risk replay ARGV` in-process; its exit code."""
    return main([str(a) for a in argv])


def read_actions(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out / "actions.jsonl").read_bytes().splitlines()]


def read_report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads((out / "report.json").read_bytes())
    return report


approx = pytest.approx
