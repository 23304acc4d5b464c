"""Replay and backtests (DESIGN §6): history through the same pure core as live mode.

Inputs, read and validated:
- `files`: JSONL, CSV or Parquet into an arrow table, each row's place in its file kept.
- `columns`: the `FIELD=COLUMN` mapping, a field's column, numbers, naming bad rows.
- `timestamps`: epoch ms / epoch s / ISO-8601 to epoch ms (`iso_to_ms`), and back
  (`ms_to_iso`).
- `errors`: `SourceError` (a bad input, worded for its giver) and `BadRecords` (skipped).
- `ticks`: a ticks file validated, sorted and completed (vol estimated by the engine's
  `engine.estimates` when the data has none, defaults for the rest): `Ticks`.
- `positions`: `--position` flags or a positions file: `PositionRecord`s.
- `risk_config`: `--risk-config` records: `ConfigRecord`s.

Running and reporting:
- `runner`: the event-time schedule through `Engine` (the scalar path, the definition).
- `fastpath`: the same outputs, with silent runs of tick assessments done in numpy; its
  parts: `fast_assess` (the assessor over arrays), `fast_scan` (per asset its ticks, per
  position its next point that could publish).
- `pnl`: the P&L path of each position and of the book, unhedged vs following the advice.
- `report`: the report's figures (`summarize`): counts, time in band, hedge cost, turnover,
  P&L and max drawdown per position and for the book.
- `render`: the report as files: report.json, report.html, chart.png.
- `sweep`: every combination of some risk config values over the same data.
- `publish`: `--publish`, the data onto the topics at its original timestamps.
- `cli`: `stream-risk replay`'s arguments and exit codes (`add_arguments`, `handler`).
- `command`: what it then does (`run`): read, replay or publish, write the report, print.
"""
