"""The latest-state table: positions by id, markets by asset, and the indexes between them."""

from __future__ import annotations

from typing import TypeVar

from sortedcontainers import SortedList

from stream_risk.config import RiskConfig
from stream_risk.engine.actions import LastAction
from stream_risk.engine.market import MarketState

K = TypeVar("K")


class PositionState:
    """Latest version of one position, its effective config and its re-evaluation timer."""

    __slots__ = (
        "age_at_ts",
        "asset",
        "config",
        "config_version",
        "entry_price",
        "last",
        "next_due",
        "offset",
        "opened_at",
        "overrides",
        "partition",
        "position_id",
        "size",
        "timer_entry",
        "timer_seq",
        "ts",
        "unrealized_pnl",
    )

    def __init__(
        self,
        position_id: str,
        asset: str = "",
        size: float = 0.0,
        entry_price: float = 0.0,
        ts: int = -1,
        opened_at: int | None = None,
        age_at_ts: float = 0.0,
        unrealized_pnl: float | None = None,
        partition: int = -1,
        offset: int = -1,
    ) -> None:
        # The version's fields may be given here, each set once (a rebuild makes millions).
        self.position_id = position_id
        self.asset = asset
        self.size = size
        self.entry_price = entry_price
        self.ts = ts
        self.opened_at = opened_at
        self.age_at_ts = age_at_ts
        self.unrealized_pnl = unrealized_pnl
        self.config: RiskConfig | None = None  # None = the engine-wide config
        self.overrides: dict[str, object] | None = None
        #: Offsets of the risk-config scopes applied ({} or None: none).
        self.config_version: dict[str, int] | None = None
        #: Offset of the `positions` record it was read from (the action's lineage).
        self.offset = offset
        #: The `positions` partition it was read from (-1: not from Kafka). Only the
        #: partition is kept of the record's lineage: it costs no memory of its own.
        self.partition = partition
        self.last: LastAction | None = None
        self.next_due = -1  # event time of the next timer re-assessment; -1 = none
        self.timer_seq = -1  # sequence number of that timer (its order among equal dues)
        #: The heap entry this timer tracks (`Timers`): due no later than `next_due`.
        self.timer_entry: tuple[int, int, str] | None = None

    def age_minutes(self, at_ms: int) -> float:
        """Age at event time `at_ms`: from opened_at, else age as of ts plus the time since."""
        if self.opened_at is not None:
            return max(0.0, (at_ms - self.opened_at) / 60_000)
        return max(0.0, self.age_at_ts + (at_ms - self.ts) / 60_000)


class Table:
    """Positions, markets, and the asset -> positions and partition -> positions indexes;
    and the position ids in order, of the table (`ids`) and per asset (`ids_by_asset`), so
    that a page of `GET /positions` seeks its cursor in O(log n) (docs/design.md D14).

    A rebuild's load adds its positions with `add_new`, which leaves their ids out of the
    two sorted indexes until they are read (or `sort_ids` is called): then they go in with
    one sort, not one insert each (an insert costs 0.5-2 µs at 1M ids, D14). `upsert` and
    `remove` (the live path) keep both indexes as they go."""

    __slots__ = (
        "_ids",
        "_ids_by_asset",
        "_unsorted",
        "by_asset",
        "by_partition",
        "dirty_parts",
        "markets",
        "parts",
        "positions",
        "sizes",
    )

    def __init__(self, track_parts: bool = False) -> None:
        self.positions: dict[str, PositionState] = {}
        self.markets: dict[str, MarketState] = {}
        self.by_asset: dict[str, dict[str, None]] = {}  # ordered sets: deterministic order
        self.by_partition: dict[int, dict[str, None]] = {}
        #: Per asset, running sums over its positions: [Σ size, Σ |size|, longs, shorts,
        #: Σ size × h] (h: the hedge fraction of the position's latest action, 0 without
        #: one): exposure in O(assets), not O(positions) (docs/design.md D9, D14). Reset
        #: when an asset's last position goes. `set_last` keeps the last sum.
        self.sizes: dict[str, list[float]] = {}
        self._ids: SortedList = SortedList()
        self._ids_by_asset: dict[str, SortedList] = {}
        #: Whether `add_new` may have left ids out of `_ids` and `_ids_by_asset`. A position
        #: is in both or in neither: an asset's sorted ids are its members but those left
        #: out (so an asset without sorted ids has only such members). No set of them is
        #: kept: a dict of a million ids costs ~0.3 µs an insert, as much as the table's.
        self._unsorted = False
        #: Per (asset, positions partition), the sums of `book.partial.FIELDS` over its
        #: positions (what the partition contributes to the asset's book, D17), and the
        #: keys changed since the last `drain_parts`; None when not tracked (replay, a
        #: single instance without the book stage): no cost then.
        self.parts: dict[tuple[str, int], list[float]] | None = {} if track_parts else None
        self.dirty_parts: set[tuple[str, int]] = set()

    @property
    def ids(self) -> SortedList:
        """Every position id, sorted."""
        if self._unsorted:
            self.sort_ids()
        return self._ids

    @property
    def ids_by_asset(self) -> dict[str, SortedList]:
        """Per asset, its position ids, sorted (an asset without positions has none)."""
        if self._unsorted:
            self.sort_ids()
        return self._ids_by_asset

    def sort_ids(self) -> None:
        """Put the ids `add_new` left out into the sorted indexes, asset by asset: an
        asset without sorted ids gets them in one sort; one with fewer than its members
        gets those it lacks in one `update`; `ids` gets them all in one. (A position is in
        both indexes or in neither.)"""
        if not self._unsorted:
            return
        self._unsorted = False
        ids_all = self._ids
        # `ids` lacks as many as the table has more (a position is in it or left out). As
        # many as it holds, or more (a rebuild's): `update` would sort all anyway, so all
        # go in, in the table's order (a few long sorted runs, a read's batches), not one
        # run per asset. Fewer: those its assets lack, below.
        refill = (len(self.positions) - len(ids_all)) * 4 >= len(ids_all)
        if refill:
            ids_all.clear()
            ids_all.update(self.positions)
        by_asset = self._ids_by_asset
        added: list[str] = []
        for asset, members in self.by_asset.items():
            ids = by_asset.get(asset)
            if ids is None:
                by_asset[asset] = SortedList(members)
                if not refill:
                    added.extend(members)
            elif len(ids) != len(members):
                have = set(ids)
                missing = [pid for pid in members if pid not in have]
                ids.update(missing)
                if not refill:
                    added.extend(missing)
        if not refill:
            ids_all.update(added)

    def add_new(self, pos: PositionState) -> None:
        """`upsert(pos, None, None)` of a position not in the table (a rebuild's common
        case), its id left out of the sorted indexes until they are read (`sort_ids`)."""
        pid = pos.position_id
        asset = pos.asset
        self.positions[pid] = pos
        _add(self.sizes, asset, pos.size, _hedged(pos.last))
        if self.parts is not None:
            self._part(pos, 1.0, _hedged(pos.last))
        members = self.by_asset.get(asset)
        if members is None:
            self.by_asset[asset] = {pid: None}
        else:
            members[pid] = None
        members = self.by_partition.get(pos.partition)
        if members is None:
            self.by_partition[pos.partition] = {pid: None}
        else:
            members[pid] = None
        self._unsorted = True

    def upsert(
        self,
        pos: PositionState,
        old_asset: str | None,
        old_partition: int | None,
        old_size: float = 0.0,
        old: PositionState | None = None,
    ) -> None:
        """`old`: the version `pos` replaces (its fields; needed when `parts` is tracked)."""
        pid = pos.position_id
        self.positions[pid] = pos
        sizes = self.sizes
        h = _hedged(pos.last)  # the latest action carries over to the new version
        if old_asset is not None:
            _sub(sizes, old_asset, old_size, h)
        _add(sizes, pos.asset, pos.size, h)
        if self.parts is not None:
            if old is not None:
                self._part(old, -1.0, h)
            self._part(pos, 1.0, h)
        if old_asset is None and old_partition is None:  # new: index it, nothing to unindex
            self.by_asset.setdefault(pos.asset, {})[pid] = None
            self.by_partition.setdefault(pos.partition, {})[pid] = None
            self._ids.add(pid)
            self._sorted_add(pos.asset, pid)
            return
        if old_asset != pos.asset:
            # An id `add_new` left out stays out: it goes in under the asset it has then.
            indexed = not self._unsorted or pid in self._ids
            if old_asset is not None:
                self._unindex(self.by_asset, old_asset, pos.position_id)
                if indexed:
                    self._sorted_discard(old_asset, pid)
                if old_asset not in self.by_asset:
                    self.sizes.pop(old_asset, None)
            self.by_asset.setdefault(pos.asset, {})[pos.position_id] = None
            if indexed:
                self._sorted_add(pos.asset, pid)
        partition = pos.partition
        if old_partition != partition:
            if old_partition is not None:
                self._unindex(self.by_partition, old_partition, pos.position_id)
            self.by_partition.setdefault(partition, {})[pos.position_id] = None

    def remove(self, position_id: str) -> PositionState | None:
        pos = self.positions.pop(position_id, None)
        if pos is not None:
            _sub(self.sizes, pos.asset, pos.size, _hedged(pos.last))
            if self.parts is not None:
                self._part(pos, -1.0, _hedged(pos.last))
            self._unindex(self.by_asset, pos.asset, position_id)
            if pos.asset not in self.by_asset:
                self.sizes.pop(pos.asset, None)
            self._unindex(self.by_partition, pos.partition, position_id)
            # (An id `add_new` left out is in neither index: nothing to discard.)
            self._ids.discard(position_id)
            self._sorted_discard(pos.asset, position_id)
        return pos

    def set_last(self, pos: PositionState, last: LastAction | None) -> None:
        """`pos.last = last`, keeping its asset's Σ size × h (a position of the table)."""
        h_old = _hedged(pos.last)
        h_new = _hedged(last)
        pos.last = last
        if h_new != h_old:
            s = self.sizes.get(pos.asset)
            if s is not None:
                s[4] += pos.size * h_new - pos.size * h_old
            parts = self.parts
            if parts is not None:
                key = (pos.asset, pos.partition)
                p = parts.get(key)
                if p is not None:
                    size = pos.size
                    if size > 0:
                        p[5] += size * h_new - size * h_old
                    elif size < 0:
                        p[6] += -size * h_new + size * h_old
                    self.dirty_parts.add(key)

    def _part(self, pos: PositionState, sign: float, h: float) -> None:
        """Add (sign 1) or take out (-1) a position's terms of its (asset, partition) sums;
        an emptied key goes (no float residue left behind)."""
        parts = self.parts
        assert parts is not None
        key = (pos.asset, pos.partition)
        self.dirty_parts.add(key)
        q = pos.size
        a = abs(q)
        e = pos.entry_price
        o = pos.opened_at if pos.opened_at is not None else pos.ts - pos.age_at_ts * 60_000
        p = parts.get(key)
        if p is None:
            if sign < 0:
                return
            p = parts[key] = [0.0] * 10
        p[0] += sign
        p[1] += sign * (q > 0)
        p[2] += sign * (q < 0)
        p[3] += sign * q
        p[4] += sign * a
        if q > 0:
            p[5] += sign * q * h
        elif q < 0:
            p[6] += sign * a * h
        p[7] += sign * a * e
        p[8] += sign * q * e
        p[9] += sign * a * o
        if p[0] <= 0:
            del parts[key]
        elif p[1] <= 0 and p[2] <= 0:
            # Only flat positions left: every size-weighted sum is exactly 0 (no residue
            # that would make a flat key look like a tiny, negative-gross position).
            p[3:] = _ZERO_SUMS
        else:
            if p[1] <= 0:
                p[5] = 0.0  # no long left: nothing the longs' hedges sell
            if p[2] <= 0:
                p[6] = 0.0

    def drain_parts(self) -> list[tuple[str, int, list[float] | None]]:
        """The (asset, partition) keys changed since the last call, with their sums (None:
        no position left there)."""
        parts = self.parts
        if parts is None or not self.dirty_parts:
            return []
        out = [(a, p, parts.get((a, p))) for a, p in sorted(self.dirty_parts)]
        self.dirty_parts.clear()
        return out

    def forget_parts(self, partition: int) -> None:
        """A revoked partition: its keys are the next owner's to publish, not ours."""
        if self.parts is not None:
            for key in [k for k in self.parts if k[1] == partition]:
                del self.parts[key]
            self.dirty_parts = {k for k in self.dirty_parts if k[1] != partition}

    def _sorted_add(self, asset: str, position_id: str) -> None:
        ids = self._ids_by_asset.get(asset)
        if ids is None:
            ids = self._ids_by_asset[asset] = SortedList()
        ids.add(position_id)

    def _sorted_discard(self, asset: str, position_id: str) -> None:
        ids = self._ids_by_asset.get(asset)
        if ids is not None:
            ids.discard(position_id)
            if not ids:
                del self._ids_by_asset[asset]

    @staticmethod
    def _unindex(index: dict[K, dict[str, None]], key: K, position_id: str) -> None:
        members = index.get(key)
        if members is not None:
            members.pop(position_id, None)
            if not members:
                del index[key]


#: The size-weighted sums of a key with only flat positions left (`Table._part`).
_ZERO_SUMS = (0.0,) * 7


def _hedged(last: LastAction | None) -> float:
    """The hedge fraction the latest action advises (0 without one)."""
    return 0.0 if last is None else last.hedge_pct


def _add(sizes: dict[str, list[float]], asset: str, size: float, h: float) -> None:
    s = sizes.get(asset)
    if s is None:
        sizes[asset] = [size, abs(size), float(size > 0), float(size < 0), size * h]
    else:
        s[0] += size
        s[1] += abs(size)
        s[2] += size > 0
        s[3] += size < 0
        s[4] += size * h


def _sub(sizes: dict[str, list[float]], asset: str, size: float, h: float) -> None:
    s = sizes.get(asset)
    if s is not None:
        s[0] -= size
        s[1] -= abs(size)
        s[2] -= size > 0
        s[3] -= size < 0
        s[4] -= size * h
