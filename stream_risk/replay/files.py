"""Reading input files: JSONL, CSV or Parquet into an arrow table (pyarrow; the format
follows the extension: .jsonl/.ndjson/.json, .csv, .parquet/.pq). The path `-` is standard
input: its format is told from its first bytes (`PAR1` Parquet, `{` JSONL, else CSV), and
messages name it `<stdin>`.

Each row keeps its place in the file, so that a bad record can be named by file and line
(JSONL/CSV) or row (Parquet). Lines pyarrow refuses (malformed JSON, a CSV row of the
wrong width) raise `SourceError`, or with `skip_bad` are noted in `RawFile.bad` and left
out. What the columns hold is checked afterwards (`columns`, `timestamps`).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from numpy.typing import NDArray

from stream_risk.replay.errors import SourceError

EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(slots=True)
class RawFile:
    """A file read into an arrow table, with a way to name a row's place in the file."""

    path: Path
    kind: str
    table: pa.Table
    #: Original (0-based) record index of each table row (rows may have been dropped).
    record: NDArray[np.int64]
    bad: list[str]
    _lines: list[int] | None = None
    #: How messages name the file (`<stdin>` for `-`); None: its path.
    shown: str | None = None

    @property
    def name(self) -> str:
        return self.shown or str(self.path)

    def where(self, row: int) -> str:
        """'file, line N' (JSONL/CSV) or 'file, row N' (Parquet) for table row `row`."""
        rec = int(self.record[row])
        if self.kind == "parquet":
            return f"{self.name}, row {rec + 1}"
        if self._lines is None:
            self._lines = _record_lines(self.path, header=self.kind == "csv")
        line = self._lines[rec] if rec < len(self._lines) else rec + 1
        return f"{self.name}, line {line}"


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


STDIN = "-"


def sniff_kind(head: bytes) -> str:
    """The format of data starting with `head`: Parquet, JSONL or (else) CSV."""
    if head.startswith(b"PAR1"):
        return "parquet"
    return "jsonl" if head.lstrip().startswith(b"{") else "csv"


def _read_stdin(skip_bad: bool) -> RawFile:
    """Standard input, spooled to a temporary file (pyarrow reads files; line numbers are
    found by reading it again), removed once read."""
    data = sys.stdin.buffer.read()
    if not data.strip():
        raise SourceError("<stdin>: nothing was read from standard input (given as -)")
    kind = sniff_kind(data[:64])
    suffix = {"parquet": ".parquet", "jsonl": ".jsonl", "csv": ".csv"}[kind]
    with tempfile.TemporaryDirectory(prefix="stream-risk-stdin-") as d:
        p = Path(d) / f"stdin{suffix}"
        p.write_bytes(data)
        try:
            raw = read_file(p, skip_bad)
        except SourceError as exc:
            raise SourceError(str(exc).replace(str(p), "<stdin>")) from None
        raw.shown = "<stdin>"
        raw.bad = [m.replace(str(p), "<stdin>") for m in raw.bad]
        if raw.kind != "parquet":
            raw._lines = _record_lines(p, header=raw.kind == "csv")
    return raw


def read_file(path: str | Path, skip_bad: bool = False) -> RawFile:
    """Read a JSONL, CSV or Parquet file with pyarrow (format by extension); `-` is
    standard input."""
    if str(path) == STDIN:
        return _read_stdin(skip_bad)
    p = Path(path)
    kind = file_kind(p)
    if not p.is_file():
        raise SourceError(f"{p}: no such file")
    try:
        if kind == "parquet":
            table = pq.read_table(p)
            return RawFile(p, kind, table, np.arange(table.num_rows, dtype=np.int64), [])
        if kind == "csv":
            return _read_csv(p, skip_bad)
        return _read_jsonl(p, skip_bad)
    except SourceError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise SourceError(f"{p}: cannot read it as {kind.upper()}: {exc}") from None


def _read_csv(p: Path, skip_bad: bool) -> RawFile:
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
        return RawFile(p, "csv", table, np.arange(table.num_rows, dtype=np.int64), [])
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
    return RawFile(p, "csv", table, keep[: table.num_rows], messages)


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


def _read_jsonl(p: Path, skip_bad: bool) -> RawFile:
    try:
        table = pjson.read_json(p)
        return RawFile(p, "jsonl", table, np.arange(table.num_rows, dtype=np.int64), [])
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
    return RawFile(p, "jsonl", table, np.array(records, dtype=np.int64), bad)


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
