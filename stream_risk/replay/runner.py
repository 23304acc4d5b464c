"""Offline replay: history merged in event-time order through the same pure core as live.

The schedule (the scalar path, the definition both paths follow):

- Every distinct event time `t` of the data is one `engine.step(events, now=t)`: the
  position records at `t` (file order) then the ticks at `t` (file order), conflated as
  one live batch would be.
- Before it, every re-evaluation timer due before `t` fires at its own due time
  (`engine.fire_timers(due)`, one call per distinct due time), so a quiet market still
  re-evaluates each position when it is due. Timers due exactly at `t` fire inside that
  step, after its own assessments (as live).
- After the last event, timers keep firing at their due times up to `until` (default: the
  last event time).

`now` is always event time, so `ts_ms`/`assessed_at` are event time and the same input
gives byte-identical actions. Several engines (a policy sweep) can be driven in lockstep:
one pass over the data, each event built once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from stream_risk.engine import Engine, Output, PositionEvent, StepResult, TickEvent
from stream_risk.engine.events import NO_LINEAGE, ConfigEvent, Event, Lineage
from stream_risk.models import MarketTick
from stream_risk.replay.positions import PositionRecord
from stream_risk.replay.risk_config import ConfigRecord
from stream_risk.replay.ticks import Ticks
from stream_risk.rules import RANK, band_index

Progress = Callable[[float], None]

TRIGGERS: tuple[str, ...] = ("position", "tick", "timer", "config")


@dataclass(slots=True)
class Timeline:
    """Ticks and position records, ready to be replayed in event-time order."""

    ticks: Ticks
    positions: list[PositionRecord]
    until: int
    #: risk-config records (docs/design.md D9), applied first at their event time.
    configs: list[ConfigRecord] = field(default_factory=list)
    #: Position record times (sorted, parallel to `positions`).
    pos_ts: NDArray[np.int64] = field(init=False)
    #: Distinct event times of the data (ticks and positions), sorted.
    times: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.positions = sorted(self.positions, key=lambda r: r.ts)
        self.pos_ts = np.array([r.ts for r in self.positions], dtype=np.int64)
        self.configs = sorted(self.configs, key=lambda r: r.ts)
        cfg_ts = np.array([r.ts for r in self.configs], dtype=np.int64)
        self.times = np.unique(np.concatenate((self.ticks.ts, self.pos_ts, cfg_ts)))
        last = int(self.times[-1]) if len(self.times) else 0
        self.until = max(self.until, last)

    @property
    def start(self) -> int:
        return int(self.times[0]) if len(self.times) else 0

    def position_event(self, rec: PositionRecord) -> PositionEvent:
        return PositionEvent(rec.position_id, rec.message, rec.ts, NO_LINEAGE)

    def config_events(self) -> list[tuple[int, ConfigEvent]]:
        """(ts, event) of each risk-config record; its index in the input is its offset
        (so `config_version` names the record), its topic `risk-config`."""
        return [
            (r.ts, ConfigEvent(r.scope, r.value, Lineage("risk-config", 0, i, r.ts)))
            for i, r in enumerate(self.configs)
        ]

    def tick_fields(self, row: int) -> dict[str, Any]:
        """The `market-ticks` record of tick row `row`: the market fields the data has given
        for its asset by then (carried forward), none it has not — the engine estimates
        vol and applies its defaults to those, exactly as it does live."""
        t = self.ticks
        assert t.given is not None  # set by Ticks.__post_init__
        given = int(t.given[row])
        fields: dict[str, Any] = {
            "asset": t.assets[int(t.asset[row])],
            "ts": int(t.ts[row]),
            "current_price": float(t.price[row]),
        }
        if given & 1:
            fields["volatility_1d"] = float(t.vol[row])
        if given & 2:
            fields["spot_spread_bps"] = float(t.spread[row])
        if given & 4:
            fields["perp_funding_rate"] = float(t.funding[row])
        if given & 8:
            fields["bid_depth_usd"] = float(t.bid[row])
        if given & 16:
            fields["ask_depth_usd"] = float(t.ask[row])
        return fields

    def tick_event(self, row: int) -> TickEvent:
        """The `market-ticks` record of tick row `row` as an engine event."""
        return TickEvent(MarketTick.model_construct(**self.tick_fields(row)), NO_LINEAGE)

    def events_at(self, t: int) -> list[Event]:
        """Every record at event time `t`: positions (file order), then ticks (file order)."""
        events: list[Event] = [ev for ts, ev in self.config_events() if ts == t]
        pts = self.pos_ts
        lo, hi = np.searchsorted(pts, t, "left"), np.searchsorted(pts, t, "right")
        events.extend(self.position_event(r) for r in self.positions[lo:hi])
        ts = self.ticks.ts
        lo, hi = np.searchsorted(ts, t, "left"), np.searchsorted(ts, t, "right")
        events.extend(self.tick_event(r) for r in range(int(lo), int(hi)))
        return events

    def tick_rows(self, t: int) -> tuple[int, int]:
        ts = self.ticks.ts
        return int(np.searchsorted(ts, t, "left")), int(np.searchsorted(ts, t, "right"))


class Sink(Protocol):
    def __call__(self, now: int, res: StepResult, engine: Engine) -> None: ...


@dataclass(slots=True)
class ActionLog:
    """Writes `actions.jsonl` (one record per line, as published) and keeps a compact copy
    of each action for the report.

    A tombstone (a position closed) is written as
    `{"position_id": ID, "tombstone": true, "event_ts": T, "ts_ms": T}`.
    """

    out: IO[bytes] | None = None
    now: list[int] = field(default_factory=list)
    pid: list[str] = field(default_factory=list)
    action: list[int] = field(default_factory=list)  # index in ACTIONS; -1 = tombstone
    hedge_pct: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    band: list[int] = field(default_factory=list)
    trigger: list[int] = field(default_factory=list)
    stale: list[bool] = field(default_factory=list)
    #: Whether the suggested hedge is a perp (it pays or receives funding); spot: False.
    perp: list[bool] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def __call__(self, now: int, res: StepResult, engine: Engine) -> None:
        for rej in res.rejected:
            self.rejected.append(f"at {now}: {rej.reason}")
        if not res.outputs:
            return
        positions = engine.table.positions
        default_cfg = engine.config.risk
        lines: list[bytes] = []
        for o in res.outputs:
            self.now.append(now)
            self.pid.append(o.position_id)
            v = o.value
            if v is None or o.data is None:
                data = orjson.dumps(
                    {"position_id": o.position_id, "tombstone": True, "event_ts": now, "ts_ms": now}
                )
                self.action.append(-1)
                self.hedge_pct.append(0.0)
                self.score.append(0.0)
                self.band.append(-1)
                self.trigger.append(-1)
                self.stale.append(False)
                self.perp.append(False)
            else:
                data = o.data
                pos = positions.get(o.position_id)
                cfg = (pos.config if pos is not None else None) or default_cfg
                score = float(v["risk_score"])
                self.action.append(RANK[v["action"]])
                self.hedge_pct.append(float(v["hedge_pct"]))
                self.score.append(score)
                self.band.append(band_index(score, cfg))
                self.trigger.append(TRIGGERS.index(v["trigger"]))
                self.stale.append(bool(v["stale_market_data"]))
                sh = v.get("suggested_hedge")
                self.perp.append(sh is not None and str(sh["instrument"]).startswith("perp"))
            lines.append(data)
        if self.out is not None:
            self.out.write(b"\n".join(lines) + b"\n")

    def __len__(self) -> int:
        return len(self.now)


def run_scalar(
    timeline: Timeline,
    engines: Sequence[Engine],
    sinks: Sequence[Sink],
    progress: Progress | None = None,
) -> None:
    """Replay `timeline` through each engine in lockstep (the reference schedule above)."""
    ticks = timeline.ticks
    ts_list: list[int] = ticks.ts.tolist()
    n_ticks = len(ts_list)
    positions = timeline.positions
    pos_ts: list[int] = timeline.pos_ts.tolist()
    n_pos = len(pos_ts)
    pairs = list(zip(engines, sinks, strict=True))
    configs = timeline.config_events()
    n_cfg = len(configs)
    ci = 0
    ti = pi = 0
    times = timeline.times
    n_times = len(times)
    every = max(1, n_times // 200)
    for gi, t in enumerate(times.tolist()):
        events: list[Event] = []
        while ci < n_cfg and configs[ci][0] == t:
            events.append(configs[ci][1])
            ci += 1
        while pi < n_pos and pos_ts[pi] == t:
            events.append(timeline.position_event(positions[pi]))
            pi += 1
        while ti < n_ticks and ts_list[ti] == t:
            events.append(timeline.tick_event(ti))
            ti += 1
        for engine, sink in pairs:
            step_at(engine, sink, t, events)
        if progress is not None and gi % every == 0:
            progress(gi / n_times)
    for engine, sink in pairs:
        finish(engine, sink, timeline.until)
    if progress is not None:
        progress(1.0)


def step_at(engine: Engine, sink: Sink, t: int, events: list[Event]) -> None:
    """Event time `t` in the reference schedule: every timer due before `t`, each at its
    due time, then `t`'s events in one `Engine.step`."""
    while (due := engine.next_due()) is not None and due < t:
        sink(due, engine.fire_timers(due), engine)
    sink(t, engine.step(events, t), engine)


def finish(engine: Engine, sink: Sink, until: int) -> None:
    """After the last event: fire every timer due up to `until`, each at its due time."""
    while (due := engine.next_due()) is not None and due <= until:
        sink(due, engine.fire_timers(due), engine)


__all__ = [
    "ActionLog",
    "Output",
    "Timeline",
    "finish",
    "run_scalar",
    "step_at",
]
