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
from collections.abc import Container, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from stream_risk.assessor import assess
from stream_risk.config import (
    DEFAULT_CONFIG,
    SCOPE_ASSET,
    SCOPE_GLOBAL,
    SCOPE_POSITION,
    RiskConfig,
    patch_dict,
)
from stream_risk.engine.estimates import MarketDefaults, VolEstimator
from stream_risk.engine.events import (
    NO_LINEAGE,
    ConfigEvent,
    Event,
    Lineage,
    Output,
    PositionEvent,
    PositionFields,
    Rejected,
    StepResult,
    TickEvent,
    Trigger,
)
from stream_risk.engine.record import (
    ReadAction,
    action_record,
    apply_hysteresis,
    apply_stale_policy,
    read_action,
    should_emit,
)
from stream_risk.engine.table import (
    DEFAULT_MARKET,
    DEFAULT_VOL,
    LastAction,
    MadeAction,
    MarketState,
    PositionState,
    PriceHistory,
    Table,
)
from stream_risk.engine.timers import Timers
from stream_risk.engine.views import (
    PositionQuery,
    PositionsPage,
    position_row,
    positions_page,
    resolve_assets,
)
from stream_risk.engine.views import waiting_detail as _waiting_detail
from stream_risk.models import MarketTick, PositionMessage

EmitPolicy = Literal["changed", "all"]

#: The notional limits a scope may set (checked on exposure, not by the model).
LIMIT_FIELDS = ("max_net_notional_usd", "max_gross_notional_usd")
#: A `positions` record decoded for `Engine.load_rows`: (key, message, or its fields
#: (`PositionFields`), or None for a tombstone, offset, record timestamp).
PositionRow = tuple[str, PositionMessage | PositionFields | None, int, int]
#: How many config changes `config_view()` remembers.
CONFIG_HISTORY = 1000


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
    #: Market fields a feed never gives (spread None: wait for the feed's).
    market_defaults: MarketDefaults = DEFAULT_MARKET
    #: The vol estimate used while an asset's feed gives no volatility_1d (None: off, wait).
    vol: VolEstimator | None = DEFAULT_VOL


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
    config_changes: int = 0
    config_rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Restored:
    last: LastAction
    next_due: int
    position_ts: int
    tick_ts: int
    config_version: dict[str, int]


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

    # ------------------------------------------------------------------ rebuild path
    def load(self, events: Iterable[PositionEvent], now_ms: int | None = None) -> list[Rejected]:
        """Rebuild: apply position records without assessing (the latest version wins).

        `now_ms` (wall time live) lets the rebuild refuse what the live path refused for a
        future `ts` (see `_future_reference`); without it nothing is refused for its time.
        """
        res = StepResult()
        sink: dict[str, Trigger] = {}
        positions = self.table.positions
        add_new = self.table.add_new
        max_future = self.config.max_future_ms
        for ev in events:
            msg = ev.message
            # The common case of a changelog, inline: a position not in the table yet, its
            # id agreed, no config of its own or in force, its ts not from the future.
            # Anything else takes `_apply_position` (the live path's rules, in its order).
            if msg is None or msg.config is not None or self.scopes:
                self._apply_position(ev, now_ms, sink, res, rebuilding=True)
                continue
            key = ev.position_id
            body_id = msg.position_id
            pid = body_id or key or msg.asset
            lineage = ev.lineage
            ts = msg.ts if msg.ts is not None else ev.ts_fallback
            ref = _future_reference(now_ms, lineage.timestamp_ms)
            if (
                pid in positions
                or (key and body_id and key != body_id)
                or (ref is not None and ts > ref + max_future)
            ):
                self._apply_position(ev, now_ms, sink, res, rebuilding=True)
                continue
            pos = PositionState(
                pid,
                msg.asset,
                msg.size,
                msg.entry_price,
                ts,
                msg.opened_at,
                msg.age_minutes or 0.0,
                msg.unrealized_pnl,
                lineage.partition,
                lineage.offset,
            )
            if lineage.topic is not self._pos_topic:
                self._pos_topic = lineage.topic
            add_new(pos)
        return res.rejected

    def load_rows(
        self,
        topic: str,
        partition: int,
        rows: Iterable[PositionRow],
        now_ms: int | None = None,
    ) -> list[Rejected]:
        """`load`, for a batch of one partition's records decoded to rows (`codec.
        decode_position_rows`: key, message, offset, record timestamp) rather than events:
        the changelog's common case goes straight into the table (`Table.add_new`: its
        sorted indexes are made when read, or by `settle`); anything else is made the event
        `load` takes and takes its rule. The same table as `load`."""
        res = StepResult()
        sink: dict[str, Trigger] = {}
        positions = self.table.positions
        add_new = self.table.add_new
        max_future = self.config.max_future_ms
        loaded = False
        for key, msg, offset, record_ms in rows:
            # The common case of a changelog, inline: as in `load`.
            if (
                msg is not None
                and not self.scopes
                and (isinstance(msg, PositionFields) or msg.config is None)
            ):
                if isinstance(msg, PositionFields):
                    body_id, asset, size, entry, ts, opened_at, age, pnl = msg
                else:
                    body_id, asset, size, entry = (
                        msg.position_id,
                        msg.asset,
                        msg.size,
                        msg.entry_price,
                    )
                    ts, opened_at, age, pnl = (
                        msg.ts,
                        msg.opened_at,
                        msg.age_minutes,
                        msg.unrealized_pnl,
                    )
                pid = body_id or key or asset
                if ts is None:
                    ts = record_ms
                # _future_reference(now_ms, record_ms), inline.
                if record_ms < MIN_RECORD_TS_MS:
                    ref = now_ms
                elif now_ms is None or record_ms < now_ms:
                    ref = record_ms
                else:
                    ref = now_ms
                if not (
                    pid in positions
                    or (key and body_id and key != body_id)
                    or (ref is not None and ts > ref + max_future)
                ):
                    add_new(
                        PositionState(
                            pid,
                            asset,
                            size,
                            entry,
                            ts,
                            opened_at,
                            age or 0.0,
                            pnl,
                            partition,
                            offset,
                        )
                    )
                    loaded = True
                    continue
            if isinstance(msg, PositionFields):
                msg = msg.message()
            ev = PositionEvent(key, msg, record_ms, Lineage(topic, partition, offset, record_ms))
            self._apply_position(ev, now_ms, sink, res, rebuilding=True)
        if loaded and topic is not self._pos_topic:
            self._pos_topic = topic
        return res.rejected

    def restore(
        self,
        partition: int,
        position_id: str,
        value: ReadAction | Mapping[str, Any] | None,
    ) -> None:
        """Rebuild: remember the last action published for a position (None: a tombstone).

        `value`: the record as `codec.decode_action` reads it (`ReadAction`: its bytes are
        kept as read), or as a dict (encoded again)."""
        restored = self._restored.get(partition)
        if restored is None:
            restored = self._restored[partition] = {}
        if value is None:
            restored.pop(position_id, None)
            return
        if not isinstance(value, ReadAction):
            value = read_action(_compact(orjson.dumps(value)))
            assert value is not None  # a dict encodes to a readable object
        restored[position_id] = _Restored(
            LastAction(
                value.action,
                value.hedge_pct,
                value.instrument,
                value.risk_score,
                value.stale,
                value.value,
            ),
            value.next_due,
            value.position_ts,
            value.tick_ts,
            value.config_version,
        )

    def restore_batch(self, partition: int, records: Iterable[Any]) -> None:
        """Rebuild: `restore` every record (aiokafka's: `key`, `value` bytes) of a read of
        `risk-actions` partition `partition`, in order; a record without a key is skipped."""
        restored = self._restored.get(partition)
        if restored is None:
            restored = self._restored[partition] = {}
        for rec in records:
            key = rec.key
            if key is None:
                continue
            pid = key.decode(errors="replace")
            value = rec.value
            read = None if value is None else read_action(value)
            if read is None:
                restored.pop(pid, None)
                continue
            restored[pid] = _Restored(
                LastAction(
                    read.action,
                    read.hedge_pct,
                    read.instrument,
                    read.risk_score,
                    read.stale,
                    read.value,
                ),
                read.next_due,
                read.position_ts,
                read.tick_ts,
                read.config_version,
            )

    def settle(self, partition: int, now_ms: int) -> StepResult:
        """Rebuild done for `partition`: resume timers, act on what changed while down.

        A position whose restored action was made from the same position and tick versions
        keeps its action and timer and publishes nothing; any other position is assessed.
        A restored action whose position is gone gets its tombstone.
        """
        res = StepResult()
        self.table.sort_ids()  # what the load left out of the sorted indexes: one sort
        restored = self._restored.pop(partition, {})
        to_assess: list[tuple[PositionState, Trigger]] = []
        positions = self.table.positions
        markets = self.table.markets
        waiting: list[str] = []  # positions assessed here that wait for their market
        for pid in list(self.table.by_partition.get(partition, ())):
            pos = positions[pid]
            r = restored.pop(pid, None) if restored else None
            market = markets.get(pos.asset)
            if r is None or r.position_ts != pos.ts:
                # Never published, or the position changed since (a resize consumed just
                # before a crash): its latest record must describe it as it is (§3).
                if r is not None:
                    pos.last = r.last
                if market is None or not market.complete:
                    waiting.append(pid)  # what `_assess` would do: count it, no more
                else:
                    to_assess.append((pos, "position"))
                continue
            pos.last = r.last
            if r.config_version != (pos.config_version or {}):
                to_assess.append((pos, "config"))
            elif market is None or r.tick_ts != market.ts or r.next_due < 0:
                # Only the market moved on: the tick rules decide whether to publish.
                to_assess.append((pos, "tick"))
            else:
                self.schedule(pos, r.next_due)
        self.stats.waiting += len(waiting)
        for pos, trigger in to_assess:
            self._assess(pos, trigger, now_ms, -1, res)
        due = self.next_due()
        if due is not None and due <= now_ms:
            skip = {pos.position_id for pos, _ in to_assess}
            skip.update(waiting)
            self._fire_timers(now_ms, res, skip=skip)
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
                pos.last = None  # its action references it: no cycle left behind
        return len(pids)

    # ------------------------------------------------------------------ replay's fast path
    def apply_market(
        self,
        asset: str,
        ts: int,
        current_price: float,
        volatility_1d: float | None,
        spot_spread_bps: float,
        perp_funding_rate: float,
        bid_depth_usd: float,
        ask_depth_usd: float,
        given: int,
        history: PriceHistory | None = None,
        duplicates: int = 0,
    ) -> None:
        """Set `asset`'s market as after a run of its ticks not stepped through one by one
        (replay's fast path: their assessments published nothing, see `assess_quietly`):
        the values as of the last (`MarketState.set_as_of`; `given`: the MARKET_INPUTS
        bits the feed had given by then; `history` feeds the vol estimate). `duplicates`:
        how many of those ticks were duplicate deliveries (counted as `step` counts them)."""
        market = self.table.markets.get(asset)
        if market is None:
            cfg = self.config
            market = self.table.markets[asset] = MarketState(asset, cfg.market_defaults, cfg.vol)
        market.set_as_of(
            ts,
            current_price,
            volatility_1d,
            spot_spread_bps,
            perp_funding_rate,
            bid_depth_usd,
            ask_depth_usd,
            given,
            history,
        )
        self.stats.duplicate_ticks += duplicates

    def assess_quietly(self, position_id: str, event_ts: int, n: int = 1) -> int:
        """Count `n` tick assessments of a position that published nothing (replay's fast
        path skips them; `step` would have suppressed them), the last as of `event_ts` on
        its asset's market as it now is; returns the due time of the re-evaluation that one
        sets. Not scheduled: the caller schedules (`schedule`) in the order of the ticks."""
        pos = self.table.positions[position_id]
        market = self.table.markets[pos.asset]
        vol, spread = market.volatility_1d, market.spot_spread_bps
        assert vol is not None and spread is not None  # a quiet tick is of a complete market
        re_eval = assess(
            pos.size,
            pos.entry_price,
            pos.age_minutes(event_ts),
            pos.unrealized_pnl,
            market.current_price,
            vol,
            spread,
            market.perp_funding_rate,
            market.bid_depth_usd,
            market.ask_depth_usd,
            pos.config or self.config.risk,
            pos.asset,
        ).re_evaluate_minutes
        stats = self.stats
        stats.assessments += n
        stats.suppressed += n
        return event_ts + re_eval * 60_000

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

    def waiting(self) -> dict[str, dict[str, Any]]:
        """Assets whose positions cannot be assessed yet: per asset, how many positions
        wait and what for (`MarketState.waiting`). O(assets)."""
        out: dict[str, dict[str, Any]] = {}
        markets = self.table.markets
        for asset, pids in self.table.by_asset.items():
            detail = _waiting_detail(asset, markets.get(asset))
            if detail is not None:
                out[asset] = {"positions": len(pids), **detail}
        return out

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

    def limits(self) -> dict[str, dict[str, float]]:
        """Notional limits in force: `book` (from `global`, else the engine's config) and
        per asset (from `asset:<ASSET>` scopes only: a book limit is not an asset's)."""
        out: dict[str, dict[str, float]] = {}
        book: dict[str, float] = {}
        base = self.config.risk
        glob = self.scopes.get(SCOPE_GLOBAL, ({}, -1))[0]
        for name in LIMIT_FIELDS:
            v = glob.get(name, getattr(base, name))
            if v is not None:
                book[name] = float(v)
        if book:
            out["book"] = book
        for scope, (fields, _) in self.scopes.items():
            if scope.startswith(SCOPE_ASSET):
                lim = {n: float(fields[n]) for n in LIMIT_FIELDS if fields.get(n) is not None}
                if lim:
                    out[scope] = lim
        return out

    def book_exposure(self) -> dict[str, Any]:
        """Net / gross notional and P&L under the four moves, per asset and for the book,
        at the latest price of each asset; with the limits in force and their breaches.

        P&L at move m of a set of positions = Σ size × price × m = net notional × m.
        Positions whose market has no price yet count in `positions` only.
        """
        moves = self._moves()
        assets: dict[str, dict[str, Any]] = {}
        book_net = book_gross = 0.0
        book_n = 0
        for asset, pids in self.table.by_asset.items():
            e = assets[asset] = self._asset_exposure(asset, len(pids), moves)
            book_net += e["net_notional_usd"]
            book_gross += e["gross_notional_usd"]
            book_n += len(pids)
        book: dict[str, Any] = {
            "positions": book_n,
            "net_notional_usd": book_net,
            "gross_notional_usd": book_gross,
        }
        for name, m in moves:
            book[name] = book_net * m
        limits = self.limits()
        breaches = []
        for scope, lim in limits.items():
            x = book if scope == "book" else assets.get(scope[len(SCOPE_ASSET) :])
            if x is None:
                continue
            for name, value in (
                ("max_net_notional_usd", abs(x["net_notional_usd"])),
                ("max_gross_notional_usd", x["gross_notional_usd"]),
            ):
                limit = lim.get(name)
                if limit is not None and value > limit:
                    breaches.append(
                        {"scope": scope, "limit": name, "limit_usd": limit, "value_usd": value}
                    )
        return {"assets": assets, "book": book, "limits": limits, "breaches": breaches}

    def asset_exposure(self, assets: Iterable[str]) -> dict[str, dict[str, Any]]:
        """`book_exposure()["assets"]` for these assets only (those of the table among
        them): O(len(assets)), e.g. the assets of a page of `GET /positions`."""
        moves = self._moves()
        by_asset = self.table.by_asset
        return {
            a: self._asset_exposure(a, len(by_asset[a]), moves) for a in assets if a in by_asset
        }

    def _moves(self) -> tuple[tuple[str, float], ...]:
        cfg = self.config.risk
        return (
            ("pnl_down_5pct", -cfg.large_move),
            ("pnl_down_2pct", -cfg.small_move),
            ("pnl_up_2pct", cfg.small_move),
            ("pnl_up_5pct", cfg.large_move),
        )

    def _asset_exposure(
        self, asset: str, n: int, moves: tuple[tuple[str, float], ...]
    ) -> dict[str, Any]:
        market = self.table.markets.get(asset)
        priced = market is not None and market.ts >= 0
        price = market.current_price if market is not None and priced else 0.0
        net = gross = 0.0
        if priced:
            # Σ size × price = price × Σ size (the table keeps the sums per asset).
            net_size, gross_size = self.table.sizes.get(asset, (0.0, 0.0))
            net = net_size * price
            gross = gross_size * price
        e: dict[str, Any] = {
            "positions": n,
            "price": price if priced else None,
            "net_notional_usd": net,
            "gross_notional_usd": gross,
        }
        for name, m in moves:
            e[name] = net * m
        return e

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
        ref = _future_reference(now_ms, lineage.timestamp_ms)
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
        ref = _future_reference(now_ms, ev.lineage.timestamp_ms)
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
            old = pos
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
        table.upsert(pos, old_asset, old_partition, old_size)
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

    def _effective(
        self,
        pid: str,
        asset: str,
        own: dict[str, Any],
        scopes: dict[str, tuple[dict[str, Any], int]],
    ) -> tuple[RiskConfig | None, dict[str, int] | None]:
        """A position's config: defaults < global < asset: < position: < its own `config`;
        and the offsets of the scopes applied. Raises ValidationError on a conflict."""
        if not scopes:
            return self._config_for(own), None
        merged: dict[str, Any] = {}
        version: dict[str, int] = {}
        for scope in (SCOPE_GLOBAL, SCOPE_ASSET + asset, SCOPE_POSITION + pid):
            hit = scopes.get(scope)
            if hit is not None:
                merged.update(hit[0])
                version[scope] = hit[1]
        merged.update(own)
        return self._config_for(merged), (version or None)

    def _apply_config(
        self, ev: ConfigEvent, now_ms: int, affected: dict[str, Trigger], res: StepResult
    ) -> int:
        """A risk-config record: change a scope's overrides, re-assess what it covers.

        Applied only if the scope's config and every covered position's effective config
        still validate as a whole (else rejected: the previous config stays in force).
        Covered positions get trigger `config` (a position update in the same step wins).
        Returns the event time of the change (its record's time, at most `now_ms`; -1 when
        rejected): the re-assessments are as of it.
        """
        scope, patch, lin = ev.scope, ev.patch, ev.lineage
        new = dict(self.scopes)
        if patch is None:
            new.pop(scope, None)
        else:
            new[scope] = (patch, lin.offset)
        table = self.table
        if scope == SCOPE_GLOBAL:
            covered: Iterable[str] = list(table.positions)
        elif scope.startswith(SCOPE_ASSET):
            covered = list(table.by_asset.get(scope[len(SCOPE_ASSET) :], ()))
        else:
            pid = scope[len(SCOPE_POSITION) :]
            covered = [pid] if pid in table.positions else []
        entry: dict[str, Any] = {
            "scope": scope,
            "value": patch,
            "offset": lin.offset,
            "partition": lin.partition,
            "ts": lin.timestamp_ms,
            "applied_at": now_ms,
            "changed_by": ev.changed_by,
        }
        updates = []
        try:
            # The scope on its own chain (a conflict shows even with no position covered).
            probe = scope[len(SCOPE_POSITION) :] if scope.startswith(SCOPE_POSITION) else ""
            probe_asset = scope[len(SCOPE_ASSET) :] if scope.startswith(SCOPE_ASSET) else ""
            self._effective(probe, probe_asset, {}, new)
            for pid in covered:
                pos = table.positions[pid]
                updates.append((pos, *self._effective(pid, pos.asset, pos.overrides or {}, new)))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ())) or "config"
            reason = f"invalid risk-config {scope!r}: {where}: {err['msg']}"
            self.stats.config_rejected += 1
            entry["status"] = "rejected"
            entry["error"] = reason
            self.config_history.append(entry)
            res.rejected.append(Rejected(reason, lin))
            return -1
        self.scopes = new
        self.stats.config_changes += 1
        entry["status"] = "applied"
        entry["positions"] = len(updates)
        self.config_history.append(entry)
        for pos, cfg, version in updates:
            pos.config = cfg
            pos.config_version = version
            pid = pos.position_id
            if affected.get(pid) != "position":
                affected[pid] = "config"
        return min(lin.timestamp_ms, now_ms)

    def config_view(self) -> dict[str, Any]:
        """`GET /config`: the config in force per scope, and the history of changes."""
        base = self.config.risk
        scopes: dict[str, Any] = {}
        for scope in sorted(self.scopes, key=_scope_order):
            fields, offset = self.scopes[scope]
            chain: dict[str, Any] = {}
            if scope != SCOPE_GLOBAL and SCOPE_GLOBAL in self.scopes:
                chain.update(self.scopes[SCOPE_GLOBAL][0])
            if scope.startswith(SCOPE_POSITION):
                pos = self.table.positions.get(scope[len(SCOPE_POSITION) :])
                if pos is not None:
                    hit = self.scopes.get(SCOPE_ASSET + pos.asset)
                    if hit is not None:
                        chain.update(hit[0])
            chain.update(fields)
            scopes[scope] = {
                "overrides": fields,
                "offset": offset,
                "effective": base.merged(chain).model_dump(),
            }
        return {
            "defaults": base.model_dump(),
            "precedence": ["defaults", "global", "asset:<ASSET>", "position:<ID>", "message"],
            "scopes": scopes,
            "history": list(self.config_history),
        }

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
        pos.last = MadeAction(
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


def _scope_order(scope: str) -> tuple[int, str]:
    if scope == SCOPE_GLOBAL:
        return (0, "")
    return (1 if scope.startswith(SCOPE_ASSET) else 2, scope)


def _compact(data: bytes) -> bytes:
    """`data` in a bytes object of its own size (orjson over-allocates what it returns)."""
    return bytes(memoryview(data))


#: A Kafka record timestamp below this (March 1973 in epoch ms) is not a usable clock:
#: e.g. epoch seconds written where milliseconds belong.
MIN_RECORD_TS_MS = 100_000_000_000


def _future_reference(now_ms: int | None, record_ms: int) -> int | None:
    """The time a record's `ts` is checked against for "from the future" (D3).

    The earlier of `now` and the record's own Kafka timestamp (when it has one), so a record
    is refused, or accepted, alike when first consumed and whenever it is read again (a
    rebuild, a restart's tick catch-up): its timestamp does not change, and when first
    consumed `now` is not earlier than it. With `now` alone, a record refused live is applied
    by a rebuild (which had no clock) and then hides every newer update until its `ts` comes.
    """
    if record_ms < MIN_RECORD_TS_MS:
        # No timestamp, or one that is not epoch ms (seconds by mistake): not a clock.
        return now_ms
    return record_ms if now_ms is None else min(now_ms, record_ms)


__all__ = ["NO_LINEAGE", "Engine", "EngineConfig", "Stats"]
