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

from collections import deque
from collections.abc import Container, Iterable
from typing import Any

import orjson
from pydantic import ValidationError

from stream_risk.assessor import assess
from stream_risk.config import (
    RiskConfig,
    patch_dict,
)
from stream_risk.engine.actions import MadeAction
from stream_risk.engine.base import (
    CONFIG_HISTORY,
    EngineConfig,
    EngineParts,
    Restored,
    Stats,
    future_reference,
)
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
from stream_risk.engine.exposure import ExposureMixin
from stream_risk.engine.market import MarketState
from stream_risk.engine.rebuild import RebuildMixin
from stream_risk.engine.record import (
    action_record,
    apply_hysteresis,
    apply_stale_policy,
    should_emit,
)
from stream_risk.engine.replay_api import ReplayMixin
from stream_risk.engine.scopes import ScopesMixin
from stream_risk.engine.table import PositionState, Table
from stream_risk.engine.timers import Timers
from stream_risk.engine.views import (
    PositionQuery,
    PositionsPage,
    position_row,
    positions_page,
    resolve_assets,
)
from stream_risk.models import MarketTick, PositionMessage


class Engine(RebuildMixin, ScopesMixin, ExposureMixin, ReplayMixin, EngineParts):
    """Latest positions and markets, re-evaluation timers, and the emission policy.

    The live path is here; the rebuild, risk-config scopes, exposure and replay's fast
    path are its parts (mixins over `EngineParts`, see engine/base.py)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.table = Table(track_parts=self.config.book_partials)
        self.timers = Timers()
        self.stats = Stats()
        self._config_cache: dict[tuple[tuple[str, Any], ...], RiskConfig] = {}
        #: Last published actions read back from `risk-actions`, by partition, until settled.
        self._restored: dict[int, dict[str, Restored]] = {}
        #: risk-config overrides in force: scope -> (fields, offset of the record).
        self.scopes: dict[str, tuple[dict[str, Any], int]] = {}
        #: The latest changes of risk-config (applied or rejected), oldest first.
        self.config_history: deque[dict[str, Any]] = deque(maxlen=CONFIG_HISTORY)
        #: The positions topic (from the records' lineage), for the actions' lineage.
        self._pos_topic = ""

    # ------------------------------------------------------------------ live path
    def step(self, events: Iterable[Event], now_ms: int) -> StepResult:
        """Apply a batch of records, assess each affected position once, fire due timers."""
        res = StepResult()
        affected: dict[str, Trigger] = {}
        ticked: set[str] = set()
        config_ts = -1  # a config change re-assesses as of its record's time
        for ev in events:
            if isinstance(ev, TickEvent):
                self._apply_tick(ev.tick, ev.lineage, now_ms, affected, res, ticked)
            elif isinstance(ev, PositionEvent):
                self._apply_position(ev, now_ms, affected, res)
            else:
                config_ts = max(config_ts, self._apply_config(ev, now_ms, affected, res))
        positions = self.table.positions
        for pid, trigger in affected.items():
            pos = positions.get(pid)
            if pos is not None:
                self._assess(pos, trigger, now_ms, config_ts if trigger == "config" else -1, res)
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
        return self.timers.next_due(self.table.positions.get)

    # ------------------------------------------------------------------ reads
    def snapshot(self, asset: str | None = None) -> list[dict[str, Any]]:
        """The whole table as JSON-ready rows, with each position's latest published action.

        O(positions), every action's record made again: for tests, replay and small
        tables. A server pages with `positions_page` instead."""
        t = self.table
        pids = t.by_asset.get(asset, {}) if asset is not None else t.positions
        return [position_row(t, t.positions[pid]) for pid in pids]

    def positions_page(self, query: PositionQuery | None = None) -> PositionsPage:
        """One page of the table in position-id order, filtered (`PositionQuery`): bounded
        work whatever the table's size (O(log n) seek, at most `query.budget` candidates
        examined, only the returned rows formatted). Continue with
        `PositionQuery(..., after=page.next_after)` until `next_after` is None."""
        return positions_page(self.table, query or PositionQuery())

    def position(self, position_id: str) -> dict[str, Any] | None:
        """One position's row (as in `snapshot`), or None when the table has no such id."""
        pos = self.table.positions.get(position_id)
        return None if pos is None else position_row(self.table, pos)

    def count(self, asset: str | None = None) -> int:
        """Positions in the table (on `asset`, case-insensitive, when given). O(1)/O(assets)."""
        t = self.table
        if asset is None:
            return len(t.positions)
        return sum(len(t.ids_by_asset[a]) for a in resolve_assets(t, asset))

    # ------------------------------------------------------------------ internals
    def schedule(self, pos: PositionState, due: int) -> None:
        """Set `pos`'s next re-evaluation to event time `due` (replacing any other)."""
        timers = self.timers
        timers.schedule(pos, due)
        if len(timers) > 2 * len(self.table.positions) + 4096:
            timers.compact(self.table.positions.get)

    def _fire_timers(self, now_ms: int, res: StepResult, skip: Container[str] = ()) -> None:
        """Re-assess positions whose timer is due (those in `skip` wait for the next call).

        A timer later than `max_timer_lateness_ms` (the process was down, or replay skipped
        ahead) is one re-assessment as of `now - max_timer_lateness_ms`, not one per missed
        period: the next one is then due a full period after it.
        """
        positions = self.table.positions
        floor = now_ms - self.config.max_timer_lateness_ms
        deferred = []
        for due, pid in self.timers.pop_due(now_ms, positions.get):
            pos = positions.get(pid)
            # Re-check: an assessment fired earlier in this loop may have moved it on.
            if pos is None or pos.next_due != due:
                continue
            if pid in skip:
                deferred.append(pos)
                continue
            pos.next_due = -1
            self._assess(pos, "timer", now_ms, due if due >= floor else floor, res)
        for pos in deferred:
            self.schedule(pos, pos.next_due)

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
        ref = future_reference(now_ms, lineage.timestamp_ms)
        if ref is not None and tick.ts > ref + self.config.max_future_ms:
            stats.future_records += 1
            res.rejected.append(
                Rejected(
                    f"tick ts {tick.ts} is more than {self.config.max_future_ms} ms ahead of "
                    f"now ({ref}): check the producer's clock and that ts is epoch ms",
                    lineage,
                )
            )
            return
        market = self.table.markets.get(tick.asset)
        if market is None:
            cfg = self.config
            market = self.table.markets[tick.asset] = MarketState(
                tick.asset, cfg.market_defaults, cfg.vol
            )
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
                pos.last = None  # its action references it: no cycle left behind
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
        ref = future_reference(now_ms, ev.lineage.timestamp_ms)
        if ref is not None and ts > ref + self.config.max_future_ms:
            if not rebuilding:  # counted when first consumed
                stats.future_records += 1
            res.rejected.append(
                Rejected(
                    f"position ts {ts} is more than {self.config.max_future_ms} ms ahead of "
                    f"now ({ref}): check the producer's clock and that ts is epoch ms",
                    ev.lineage,
                )
            )
            return
        # Validate before the order checks: an invalid record is dead-lettered whatever its
        # ts, like every record the codec refuses (a stale one must not just be counted).
        version: dict[str, int] | None = None
        if msg.config is None and not self.scopes:  # the common case, without the calls
            overrides: dict[str, Any] = {}
            config = None
        else:
            overrides = patch_dict(msg.config)
            try:
                config, version = self._effective(pid, msg.asset, overrides, self.scopes)
            except ValidationError as exc:
                res.rejected.append(
                    Rejected(f"invalid config: {exc.errors()[0]['msg']}", ev.lineage)
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
            old_size = pos.size
            # A new version is a new object: the actions made of the old one reference it
            # (`MadeAction.pos`) and must keep describing it. The timer and last action
            # carry over; the old version keeps only its data (no cycle through `last`).
            old = replaced = pos
            pos = PositionState(pid)
            pos.last = old.last
            pos.next_due = old.next_due
            pos.timer_seq = old.timer_seq
            pos.timer_entry = old.timer_entry
            old.last = None
            old.next_due = -1
            old.timer_entry = None
        else:
            pos = PositionState(pid)
            old_asset = old_partition = None
            old_size = 0.0
            replaced = None
        pos.asset = msg.asset
        pos.size = msg.size
        pos.entry_price = msg.entry_price
        pos.ts = ts
        pos.opened_at = msg.opened_at
        pos.age_at_ts = msg.age_minutes or 0.0
        pos.unrealized_pnl = msg.unrealized_pnl
        pos.overrides = overrides or None
        pos.config = config
        pos.config_version = version
        lineage = ev.lineage
        pos.partition = lineage.partition
        pos.offset = lineage.offset
        if lineage.topic is not self._pos_topic:
            self._pos_topic = lineage.topic
        table.upsert(pos, old_asset, old_partition, old_size, replaced)
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
        due = event_ts + a.re_evaluate_minutes * 60_000
        self.schedule(pos, due)
        stale = now_ms - market.ts > self.config.max_tick_age_ms
        policy: str | None = None
        if cfg.hysteresis_points > 0 and pos.last is not None:
            # Hysteresis (§12, D11): a safer band only past the margin; before the stale policy.
            policy = apply_hysteresis(a, pos.last.action)
        if stale:
            stats.stale_assessments += 1
            if cfg.stale_policy != "flag" and apply_stale_policy(a, cfg.stale_policy):
                policy = cfg.stale_policy
        instrument = a.instrument
        last = pos.last
        # `changed` emission (DESIGN §3): the latest record always describes the position
        # as it is, so an update of the position itself always publishes; a tick publishes
        # only when the advice changed.
        ecfg = self.config
        if not should_emit(
            ecfg.emit,
            trigger,
            last,
            a.action,
            a.hedge_pct,
            instrument,
            stale,
            a.risk_score,
            ecfg.score_change_points,
        ):
            stats.suppressed += 1
            return
        pos_ref = {"topic": self._pos_topic, "partition": pos.partition, "offset": pos.offset}
        snap = market.snapshot()
        value = action_record(
            a,
            pos.position_id,
            pos.asset,
            trigger,
            event_ts,
            market.ts,
            pos.ts,
            now_ms,
            stale,
            due,
            policy=policy,
            config_version=pos.config_version,
            position_ref=pos_ref,
            age_minutes=age,
            entry_price=pos.entry_price,
            unrealized_pnl=pos.unrealized_pnl,
            refs=snap.refs,
        )
        data = orjson.dumps(value)
        # Kept for GET /positions as what made it: references to the position version, the
        # tick's market snapshot and the config, and this assessment's own few fields.
        self.table.set_last(
            pos,
            MadeAction(
                a.action,
                a.hedge_pct,
                instrument,
                a.risk_score,
                stale,
                pos,
                snap,
                cfg,
                trigger,
                event_ts,
                now_ms,
                due,
                policy,
                pos.config_version,
                self._pos_topic,
            ),
        )
        stats.published += 1
        res.outputs.append(
            Output(
                pos.position_id,
                value,
                market.lineage,
                data,
                pos.partition,
                value["action"],
                pos.asset,
                value["risk_score"],
                value["reason_code"],
                trigger,
            )
        )


__all__ = ["NO_LINEAGE", "Engine", "EngineConfig", "Stats"]
