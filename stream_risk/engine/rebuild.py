"""The rebuild path of the engine: a partition's table loaded from its `positions`
changelog (`load`, `load_rows`), its last actions read back from `risk-actions`
(`restore`, `restore_batch`), then settled (`settle`); and revocation (`drop_partition`).
Pure: the Kafka shell reads the topics (kafka/recovery.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from stream_risk.engine.actions import LastAction
from stream_risk.engine.base import (
    MIN_RECORD_TS_MS,
    EngineParts,
    PositionRow,
    Restored,
    compact,
    future_reference,
)
from stream_risk.engine.events import (
    Lineage,
    Output,
    PositionEvent,
    PositionFields,
    Rejected,
    StepResult,
    Trigger,
)
from stream_risk.engine.record import (
    ReadAction,
    read_action,
)
from stream_risk.engine.table import PositionState


class RebuildMixin(EngineParts):
    def load(self, events: Iterable[PositionEvent], now_ms: int | None = None) -> list[Rejected]:
        """Rebuild: apply position records without assessing (the latest version wins).

        `now_ms` (wall time live) lets the rebuild refuse what the live path refused for a
        future `ts` (see `future_reference`); without it nothing is refused for its time.
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
            ref = future_reference(now_ms, lineage.timestamp_ms)
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
                # future_reference(now_ms, record_ms), inline.
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
            value = read_action(compact(orjson.dumps(value)))
            assert value is not None  # a dict encodes to a readable object
        restored[position_id] = Restored.of(value)

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
            restored[pid] = Restored.of(read)

    def restored_actions(self, partition: int) -> list[tuple[str, LastAction]]:
        """The last actions read back for `partition` (position id, action), until it
        settles: what the instance before published (e.g. the LIQUIDATEs whose alerts it
        fired, so they are not fired again here)."""
        return [(pid, r.last) for pid, r in self._restored.get(partition, {}).items()]

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
                    self.table.set_last(pos, r.last)
                if market is None or not market.complete:
                    waiting.append(pid)  # what `_assess` would do: count it, no more
                else:
                    to_assess.append((pos, "position"))
                continue
            self.table.set_last(pos, r.last)
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
        self.table.forget_parts(partition)
        return len(pids)
