"""Replay and backtests (DESIGN §6): history through the same pure core as live mode.

- `sources`: ticks and positions from JSONL, CSV or Parquet, mapped and validated.
- `volatility`: the daily vol estimate used when the data has none.
- `runner`: the event-time schedule through `Engine` (the scalar path, the definition).
- `fastpath`: the same outputs, with silent runs of tick assessments done in numpy.
- `report`: counts, time in band, hedge cost, P&L unhedged vs following the advice.
- `sweep`: every combination of some risk config values over the same data.
- `publish`: `--publish`, the data onto the topics at its original timestamps.
- `cli`: `stream-risk replay` (`add_arguments`, `handler`).
"""
