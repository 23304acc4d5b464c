"""The pure core: `state + events + now -> (state, actions)`.

No I/O, no clock, no asyncio. Live mode passes wall time as `now_ms`, replay passes event
time; both call the same methods in the same way. Within one `step` ticks are conflated:
each affected position is assessed once, against the latest market of its asset.

Time:
- `event_ts` of an assessment is the event time it is as of: the later of its position's
  `ts` and its market's `ts` (position/tick triggers), or the timer's due time.
- A position's age is measured at `event_ts`; its next re-evaluation is due at
  `event_ts + re_evaluate_minutes`.
- `now_ms` decides staleness (`now - tick ts > max_tick_age_ms`), which timers are due,
  and rejects records time-stamped more than `max_future_ms` ahead of it.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from stream_risk.assessor import Assessment, assess
from stream_risk.config import DEFAULT_CONFIG, RiskConfig, patch_dict
from stream_risk.engine.events import (
    NO_LINEAGE,
    Event,
    Lineage,
    Output,
    PositionEvent,
    Rejected,
    StepResult,
    TickEvent,
    Trigger,
)
from stream_risk.engine.record import action_record
from stream_risk.engine.table import LastAction, MadeAction, MarketState, PositionState, Table
from stream_risk.engine.timers import Timers
from stream_risk.models import MarketTick, PositionMessage

EmitPolicy = Literal["changed", "all"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    risk: RiskConfig = DEFAULT_CONFIG
    emit: EmitPolicy = "changed"
    #: A tick older than this at assessment time marks the action `stale_market_data`.
    max_tick_age_ms: int = 60_000
    #: A record whose ts is further than this ahead of `now` is rejected (clock skew guard).
    max_future_ms: int = 300_000
    #: A timer firing later than this is re-based to `now - max_timer_lateness_ms`.
    max_timer_lateness_ms: int = 60_000
    #: `changed` emission publishes when the score moves by at least this many points.
    score_change_points: float = 1.0


@dataclass(slots=True)
class Stats:
    """Counters the shells export as metrics. Plain ints: the core has no metrics library."""

    assessments: int = 0
    published: int = 0
    suppressed: int = 0
    tombstones: int = 0
    waiting: int = 0
    stale_assessments: int = 0
    out_of_order_ticks: int = 0
    out_of_order_positions: int = 0
    duplicate_ticks: int = 0
    duplicate_positions: int = 0
    future_records: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Restored:
    last: LastAction
    next_due: int
    position_ts: int
    tick_ts: int


class Engine:
    """Latest positions and markets, re-evaluation timers, and the emission policy."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.table = Table()
        self.timers = Timers()
        self.stats = Stats()
        self._config_cache: dict[tuple[tuple[str, Any], ...], RiskConfig] = {}
        #: Last published actions read back from `risk-actions`, by partition, until settled.
        self._restored: dict[int, dict[str, _Restored]] = {}

    # ------------------------------------------------------------------ live path
    def step(self, events: Iterable[Event], now_ms: int) -> StepResult:
        """Apply a batch of records, assess each affected position once, fire due timers."""
        res = StepResult()
        affected: dict[str, Trigger] = {}
        ticked: set[str] = set()
        for ev in events:
            if isinstance(ev, TickEvent):
                self._apply_tick(ev.tick, ev.lineage, now_ms, affected, res, ticked)
            else:
                self._apply_position(ev, now_ms, affected, res)
        positions = self.table.positions
        for pid, trigger in affected.items():
            pos = positions.get(pid)
            if pos is not None:
                self._assess(pos, trigger, now_ms, -1, res)
        # A position just assessed is not assessed again for its timer in the same step.
        self._fire_timers(now_ms, res, skip=affected)
        return res

    def fire_timers(self, now_ms: int) -> StepResult:
        """Re-assess every position whose re-evaluation is due at or before `now_ms`."""
        res = StepResult()
        self._fire_timers(now_ms, res)
        return res

    def next_due(self) -> int | None:
        """Event time of the earliest pending re-evaluation, or None."""
        return self.timers.next_due(self._current_due)

    # ------------------------------------------------------------------ rebuild path
    def load(self, events: Iterable[PositionEvent]) -> list[Rejected]:
        """Rebuild: apply position records without assessing (the latest version wins)."""
        res = StepResult()
        sink: dict[str, Trigger] = {}
        for ev in events:
            self._apply_position(ev, None, sink, res, rebuilding=True)
        return res.rejected

    def restore(self, partition: int, position_id: str, value: Mapping[str, Any] | None) -> None:
        """Rebuild: remember the last action published for a position (None: a tombstone)."""
        restored = self._restored.setdefault(partition, {})
        if value is None:
            restored.pop(position_id, None)
            return
        hedge = value.get("suggested_hedge") or {}
        restored[position_id] = _Restored(
            LastAction(
                str(value.get("action", "")),
                float(value.get("hedge_pct", 0.0)),
                hedge.get("instrument"),
                float(value.get("risk_score", 0.0)),
                bool(value.get("stale_market_data", False)),
                _compact(orjson.dumps(value)),
            ),
            int(value.get("next_evaluation_ts", -1)),
            int(value.get("position_ts", -1)),
            int(value.get("tick_ts", -1)),
        )

    def settle(self, partition: int, now_ms: int) -> StepResult:
        """Rebuild done for `partition`: resume timers, act on what changed while down.

        A position whose restored action was made from the same position and tick versions
        keeps its action and timer and publishes nothing; any other position is assessed.
        A restored action whose position is gone gets its tombstone.
        """
        res = StepResult()
        restored = self._restored.pop(partition, {})
        to_assess: list[PositionState] = []
        for pid in list(self.table.by_partition.get(partition, ())):
            pos = self.table.positions[pid]
            r = restored.pop(pid, None)
            market = self.table.markets.get(pos.asset)
            if r is not None:
                pos.last = r.last
                if (
                    r.position_ts == pos.ts
                    and market is not None
                    and r.tick_ts == market.ts
                    and r.next_due >= 0
                ):
                    self._schedule(pos, r.next_due)
                    continue
            to_assess.append(pos)
        for pos in to_assess:
            self._assess(pos, "position", now_ms, -1, res)
        self._fire_timers(now_ms, res, skip={pos.position_id for pos in to_assess})
        for pid in restored:
            res.outputs.append(Output(pid, None, partition=partition))
            self.stats.tombstones += 1
        return res

    def drop_partition(self, partition: int) -> int:
        """Revocation: forget the positions (and timers) of a positions partition."""
        self._restored.pop(partition, None)
        pids = list(self.table.by_partition.get(partition, ()))
        for pid in pids:
            pos = self.table.remove(pid)
            if pos is not None:
                pos.next_due = -1
        return len(pids)

    # ------------------------------------------------------------------ reads
    def snapshot(self, asset: str | None = None) -> list[dict[str, Any]]:
        """The table as JSON-ready rows, with each position's latest published action."""
        t = self.table
        pids = t.by_asset.get(asset, {}) if asset is not None else t.positions
        rows = []
        for pid in pids:
            pos = t.positions[pid]
            market = t.markets.get(pos.asset)
            last = pos.last
            waiting = market.missing() if market is not None else ["current_price"]
            rows.append(
                {
                    "position_id": pid,
                    "asset": pos.asset,
                    "size": pos.size,
                    "entry_price": pos.entry_price,
                    "position_ts": pos.ts,
                    "tick_ts": market.ts if market is not None else None,
                    "waiting_for": waiting,
                    "next_evaluation_ts": pos.next_due if pos.next_due >= 0 else None,
                    "latest_action": None if last is None else last.record(),
                }
            )
        return rows

    def exposure(self) -> dict[str, dict[str, float]]:
        """Net and gross notional per asset at the latest price (positions with a market)."""
        out: dict[str, dict[str, float]] = {}
        for asset, pids in self.table.by_asset.items():
            market = self.table.markets.get(asset)
            if market is None or market.ts < 0:
                continue
            price = market.current_price
            net = gross = 0.0
            for pid in pids:
                size = self.table.positions[pid].size
                net += size * price
                gross += abs(size * price)
            out[asset] = {"net_notional_usd": net, "gross_notional_usd": gross}
        return out

    # ------------------------------------------------------------------ internals
    def _current_due(self, pid: str) -> int:
        pos = self.table.positions.get(pid)
        return -1 if pos is None else pos.next_due

    def _schedule(self, pos: PositionState, due: int) -> None:
        pos.next_due = due
        self.timers.schedule(due, pos.position_id)
        if len(self.timers) > 2 * len(self.table.positions) + 4096:
            self.timers.compact(self._current_due)

    def _fire_timers(self, now_ms: int, res: StepResult, skip: Container[str] = ()) -> None:
        """Re-assess positions whose timer is due (those in `skip` wait for the next call).

        A timer later than `max_timer_lateness_ms` (the process was down, or replay skipped
        ahead) is one re-assessment as of `now - max_timer_lateness_ms`, not one per missed
        period: the next one is then due a full period after it.
        """
        positions = self.table.positions
        floor = now_ms - self.config.max_timer_lateness_ms
        deferred = []
        for due, pid in self.timers.pop_due(now_ms, self._current_due):
            pos = positions.get(pid)
            # Re-check: the heap may hold the same (due, pid) twice (re-assessed at the same
            # event_ts), and the first firing has already moved next_due on.
            if pos is None or pos.next_due != due:
                continue
            if pid in skip:
                deferred.append((due, pid))
                continue
            pos.next_due = -1
            self._assess(pos, "timer", now_ms, due if due >= floor else floor, res)
        for due, pid in deferred:
            self.timers.schedule(due, pid)

    def _apply_tick(
        self,
        tick: MarketTick,
        lineage: Lineage,
        now_ms: int | None,
        affected: dict[str, Trigger],
        res: StepResult,
        ticked: set[str],
    ) -> None:
        """Apply a tick; mark its asset's positions affected (trigger "tick").

        `ticked`: assets already marked in this step. A later tick of one of them marks
        nothing new: its positions are already in `affected`, and any that joined the asset
        since came in by a position update, which put them there too.
        """
        stats = self.stats
        if now_ms is not None and tick.ts > now_ms + self.config.max_future_ms:
            stats.future_records += 1
            res.rejected.append(
                Rejected(
                    f"tick ts {tick.ts} is more than {self.config.max_future_ms} ms ahead of "
                    f"now ({now_ms}): check the producer's clock and that ts is epoch ms",
                    lineage,
                )
            )
            return
        market = self.table.markets.get(tick.asset)
        if market is None:
            market = self.table.markets[tick.asset] = MarketState(tick.asset)
        elif tick.ts < market.ts:
            stats.out_of_order_ticks += 1
            return
        elif market.same_as(tick):
            stats.duplicate_ticks += 1
            return
        market.apply(tick, lineage)
        asset = tick.asset
        if asset not in ticked:
            ticked.add(asset)
            for pid in self.table.by_asset.get(asset, ()):
                affected.setdefault(pid, "tick")

    def _apply_position(
        self,
        ev: PositionEvent,
        now_ms: int | None,
        affected: dict[str, Trigger],
        res: StepResult,
        rebuilding: bool = False,
    ) -> None:
        msg = ev.message
        stats = self.stats
        table = self.table
        if msg is None:
            pos = table.remove(ev.position_id)
            affected.pop(ev.position_id, None)
            if pos is not None:
                pos.next_due = -1
                if not rebuilding:
                    stats.tombstones += 1
                    res.outputs.append(Output(ev.position_id, None, partition=pos.partition))
            return
        pid = msg.position_id or ev.position_id or msg.asset
        if ev.position_id and msg.position_id and ev.position_id != msg.position_id:
            res.rejected.append(
                Rejected(
                    f"record key {ev.position_id!r} disagrees with body position_id "
                    f"{msg.position_id!r}: key positions records by their position_id",
                    ev.lineage,
                )
            )
            return
        ts = msg.ts if msg.ts is not None else ev.ts_fallback
        if now_ms is not None and ts > now_ms + self.config.max_future_ms:
            stats.future_records += 1
            res.rejected.append(
                Rejected(
                    f"position ts {ts} is more than {self.config.max_future_ms} ms ahead of "
                    f"now ({now_ms}): check the producer's clock and that ts is epoch ms",
                    ev.lineage,
                )
            )
            return
        pos = table.positions.get(pid)
        if pos is not None:
            if ts < pos.ts:
                stats.out_of_order_positions += 1
                return
            if ts == pos.ts and self._same_position(pos, msg):
                stats.duplicate_positions += 1
                return
            old_asset: str | None = pos.asset
            old_partition: int | None = pos.partition
        else:
            pos = PositionState(pid)
            old_asset = old_partition = None
        if msg.config is None:  # the common case, without the two calls
            overrides: dict[str, Any] = {}
            config = None
        else:
            overrides = patch_dict(msg.config)
            try:
                config = self._config_for(overrides)
            except ValidationError as exc:
                res.rejected.append(
                    Rejected(f"invalid config: {exc.errors()[0]['msg']}", ev.lineage)
                )
                return
        pos.asset = msg.asset
        pos.size = msg.size
        pos.entry_price = msg.entry_price
        pos.ts = ts
        pos.opened_at = msg.opened_at
        pos.age_at_ts = msg.age_minutes or 0.0
        pos.unrealized_pnl = msg.unrealized_pnl
        pos.overrides = overrides or None
        pos.config = config
        pos.partition = ev.lineage.partition
        table.upsert(pos, old_asset, old_partition)
        affected[pid] = "position"

    @staticmethod
    def _same_position(pos: PositionState, msg: PositionMessage) -> bool:
        return (
            pos.asset == msg.asset
            and pos.size == msg.size
            and pos.entry_price == msg.entry_price
            and pos.opened_at == msg.opened_at
            and pos.age_at_ts == (msg.age_minutes or 0.0)
            and pos.unrealized_pnl == msg.unrealized_pnl
            and (pos.overrides or {}) == patch_dict(msg.config)
        )

    def _config_for(self, overrides: dict[str, Any]) -> RiskConfig | None:
        if not overrides:
            return None
        key = tuple(sorted(overrides.items()))
        cfg = self._config_cache.get(key)
        if cfg is None:
            cfg = self.config.risk.merged(overrides)
            if len(self._config_cache) > 10_000:
                self._config_cache.clear()
            self._config_cache[key] = cfg
        return cfg

    def _assess(
        self, pos: PositionState, trigger: Trigger, now_ms: int, due_ms: int, res: StepResult
    ) -> None:
        market = self.table.markets.get(pos.asset)
        if market is None or not market.complete:
            self.stats.waiting += 1
            return
        # As of the later of the data's times, or of the timer's due time.
        event_ts = max(due_ms, pos.ts, market.ts)
        vol = market.volatility_1d
        spread = market.spot_spread_bps
        assert vol is not None and spread is not None  # market.complete
        cfg = pos.config or self.config.risk
        age = pos.age_minutes(event_ts)
        a = assess(
            pos.size,
            pos.entry_price,
            age,
            pos.unrealized_pnl,
            market.current_price,
            vol,
            spread,
            market.perp_funding_rate,
            market.bid_depth_usd,
            market.ask_depth_usd,
            cfg,
            pos.asset,
        )
        res.assessments += 1
        stats = self.stats
        stats.assessments += 1
        pos.last_assessed_ts = event_ts
        due = event_ts + a.re_evaluate_minutes * 60_000
        self._schedule(pos, due)
        stale = now_ms - market.ts > self.config.max_tick_age_ms
        if stale:
            stats.stale_assessments += 1
        instrument = a.instrument
        last = pos.last
        if not (
            self.config.emit == "all"
            or last is None
            or trigger == "timer"
            or trigger == "config"
            or last.action != a.action
            or last.hedge_pct != a.hedge_pct
            or last.instrument != instrument
            or last.stale != stale
            or abs(a.risk_score - last.risk_score) >= self.config.score_change_points
        ):
            stats.suppressed += 1
            return
        value = action_record(
            a, pos.position_id, pos.asset, trigger, event_ts, market.ts, pos.ts, now_ms, stale, due
        )
        data = orjson.dumps(value)
        # Kept for GET /positions as what made it (a fifth of the bytes' memory).
        pos.last = MadeAction(
            a.action,
            a.hedge_pct,
            instrument,
            a.risk_score,
            stale,
            pos.size,
            pos.entry_price,
            age,
            pos.unrealized_pnl,
            market.current_price,
            vol,
            spread,
            market.perp_funding_rate,
            market.bid_depth_usd,
            market.ask_depth_usd,
            cfg,
            pos.asset,
            pos.position_id,
            trigger,
            event_ts,
            market.ts,
            pos.ts,
            now_ms,
            due,
        )
        stats.published += 1
        res.outputs.append(Output(pos.position_id, value, market.lineage, data, pos.partition))

    @staticmethod
    def _action_record(
        pos: PositionState,
        market: MarketState,
        a: Assessment,
        trigger: Trigger,
        event_ts: int,
        now_ms: int,
        stale: bool,
        due: int,
    ) -> dict[str, Any]:
        """The action record of `a` (see `stream_risk.engine.record.action_record`)."""
        return action_record(
            a, pos.position_id, pos.asset, trigger, event_ts, market.ts, pos.ts, now_ms, stale, due
        )


def _compact(data: bytes) -> bytes:
    """`data` in a bytes object of its own size (orjson over-allocates what it returns)."""
    return bytes(memoryview(data))


__all__ = ["NO_LINEAGE", "Engine", "EngineConfig", "Stats"]
