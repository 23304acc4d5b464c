"""Stage 2 of the aggregation (docs/design.md D17): the owner of some partitions of
`risk-book-partials`, hence of the assets that hash to them, sums each owned asset's
contributions over the positions partitions, assesses its net position (`net`), publishes
it to `risk-book`, and fires and clears the asset's limit and stale-market alerts, once
across the instances. Pure: the shell feeds it the records of the partitions it owns and
asks it, now and then, what changed.

The owner's alert state survives a move: each change of it is written back to the asset's
partition of the internal topic (key `s:<asset>`; the book's `s:*` in partition 0), and a
new owner reads it with the contributions when it rebuilds the partition, so a condition
still true is not fired again and one that ended is cleared once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from stream_risk import alerting
from stream_risk.book.figures import breaches
from stream_risk.book.net import MarketInputs, NetBook
from stream_risk.book.partial import Partial, total
from stream_risk.config import RiskConfig

#: Key prefix of the owner's alert state records in the internal topic.
STATE_PREFIX = "s:"
#: The book's own state key (book limits), in partition 0.
BOOK_STATE_KEY = "s:*"
BOOK_PARTITION = 0


class BookInputs(Protocol):
    """What the aggregation reads of the engine (every instance has every market and the
    whole risk-config)."""

    def book_market(self, asset: str) -> MarketInputs | None: ...
    def asset_config(self, asset: str) -> RiskConfig: ...
    def asset_limits(self, asset: str) -> Mapping[str, float]: ...


@dataclass
class BookOutput:
    """What one evaluation produced: `risk-book` records (asset, value or None for a
    tombstone), alerts, and the owner's state records for the internal topic."""

    records: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    alerts: list[alerting.Alert] = field(default_factory=list)
    states: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class _Published:
    """What the last `risk-book` record of an asset said (the emission rule's memory)."""

    totals: Partial
    action: str | None
    hedge_pct: float
    instrument: str | None
    score: float
    breaches: tuple[str, ...]


def state_key(asset: str) -> str:
    return STATE_PREFIX + asset


class BookAggregator:
    """The owned assets' contributions, their last published record and alert state."""

    def __init__(self, score_change_points: float = 1.0, max_tick_age_ms: int = 60_000) -> None:
        self.points = score_change_points
        self.max_tick_age_ms = max_tick_age_ms
        #: asset -> positions partition -> contribution
        self.parts: dict[str, dict[int, Partial]] = {}
        #: internal partition -> assets read from it (what a revocation drops)
        self.assets_of: dict[int, set[str]] = {}
        self.dirty: set[str] = set()
        self.published: dict[str, _Published] = {}
        self.tracker = alerting.AlertTracker()
        #: asset (or "*") -> alert keys of its state (what `_state` writes back)
        self._alert_keys: dict[str, set[str]] = {}
        self._book_partitions: set[int] = set()

    # ------------------------------------------------------------------ input
    def apply(self, partition: int, asset: str, source: int, partial: Partial | None) -> None:
        """A contribution record (None: a tombstone) read from internal `partition`."""
        self.assets_of.setdefault(partition, set()).add(asset)
        by_source = self.parts.setdefault(asset, {})
        if partial is None or partial.empty:
            by_source.pop(source, None)
        else:
            by_source[source] = partial
        self.dirty.add(asset)

    def restore_state(self, partition: int, key: str, value: bytes | None) -> None:
        """An alert state record read while rebuilding `partition` (later ones win)."""
        owner = key[len(STATE_PREFIX) :]
        for k in self._alert_keys.pop(owner, set()):
            self.tracker.active.pop(k, None)
        if owner != "*":
            self.assets_of.setdefault(partition, set()).add(owner)
            self.dirty.add(owner)
        if value is None:
            return
        active = orjson.loads(value).get("active", {})
        for k, (kind, details) in active.items():
            self.tracker.active[k] = (kind, details)
        self._alert_keys[owner] = set(active)

    def owns_book(self, partitions: Iterable[int]) -> None:
        """The internal partitions owned now (partition 0 carries the book's limits)."""
        self._book_partitions = set(partitions) & {BOOK_PARTITION}

    @property
    def book_owner(self) -> bool:
        return bool(self._book_partitions)

    def drop_partition(self, partition: int) -> None:
        """Revocation: forget the assets of `partition` (their alerts stay fired: the next
        owner reads their state and clears them when the condition ends)."""
        for asset in self.assets_of.pop(partition, set()):
            self.parts.pop(asset, None)
            self.published.pop(asset, None)
            self.dirty.discard(asset)
            for k in self._alert_keys.pop(asset, set()):
                self.tracker.active.pop(k, None)
        if partition == BOOK_PARTITION:
            for k in self._alert_keys.pop("*", set()):
                self.tracker.active.pop(k, None)
            self._book_partitions.discard(partition)

    def market_moved(self, assets: Iterable[str]) -> None:
        """Ticks of these assets: their owned ones are evaluated again."""
        parts = self.parts
        self.dirty.update(a for a in assets if a in parts)

    def all_dirty(self) -> None:
        """Evaluate every owned asset (a config change, the stale check's cadence)."""
        self.dirty.update(self.parts)

    # ------------------------------------------------------------------ output
    def totals(self, asset: str) -> Partial:
        return total(self.parts.get(asset, {}).values())

    def evaluate(self, inputs: BookInputs, now_ms: int, assessed_at: int) -> BookOutput:
        """The dirty owned assets: their `risk-book` records (when the rule says so), alert
        transitions and state records."""
        out = BookOutput()
        dirty, self.dirty = self.dirty, set()
        for asset in sorted(dirty):
            self._evaluate(asset, inputs, now_ms, assessed_at, out)
        return out

    def evaluate_book(
        self, book: Mapping[str, float], limits: Mapping[str, float], now_ms: int
    ) -> BookOutput:
        """The book's limits (only the owner of partition 0 calls this): `book` the whole
        book's net and gross notional (from the broadcast view)."""
        out = BookOutput()
        now = {f"limit:book:{b['limit']}": {"scope": "book", **b} for b in breaches(book, limits)}
        alerts = self.tracker.sync(alerting.EXPOSURE_LIMIT + ":book", now, now_ms)
        if alerts:
            out.alerts.extend(_kind(alerts, alerting.EXPOSURE_LIMIT))
            out.states.append(self._state("*", set(now)))
        return out

    def _evaluate(
        self, asset: str, inputs: BookInputs, now_ms: int, assessed_at: int, out: BookOutput
    ) -> None:
        t = self.totals(asset)
        market = inputs.book_market(asset)
        cfg = inputs.asset_config(asset)
        # Alerts: the asset's limits and its stale market, owned here only.
        conditions: dict[str, dict[str, Any]] = {}
        found: list[dict[str, Any]] = []
        if market is not None and not t.empty:
            price = market.current_price
            figures = {
                "net_notional_usd": t.net_size * price,
                "gross_notional_usd": t.gross_size * price,
            }
            found = [
                {"scope": "asset:" + asset, **b}
                for b in breaches(figures, inputs.asset_limits(asset))
            ]
            for b in found:
                conditions[f"limit:{b['scope']}:{b['limit']}"] = b
        stale_key = "stale:asset:" + asset
        stale = market is not None and not t.empty and now_ms - market.ts > self.max_tick_age_ms
        before = self._alert_keys.get(asset, set())
        alerts: list[alerting.Alert] = []
        tracker = self.tracker
        for key in sorted(set(conditions) | {k for k in before if k.startswith("limit:")}):
            a = tracker.observe(
                alerting.EXPOSURE_LIMIT, key, key in conditions, conditions.get(key, {}), now_ms
            )
            if a is not None:
                alerts.append(a)
        a = tracker.observe(
            alerting.STALE,
            stale_key,
            stale,
            {
                "asset": asset,
                "tick_ts": market.ts if market else None,
                "max_tick_age_ms": self.max_tick_age_ms,
            },
            now_ms,
        )
        if a is not None:
            alerts.append(a)
        active = set(conditions) | ({stale_key} if stale else set())
        if alerts:
            out.alerts.extend(alerts)
            out.states.append(self._state(asset, active))
        # The record.
        if t.empty:
            if asset in self.published or self.parts.get(asset) == {}:
                out.records.append((asset, None))
            self.published.pop(asset, None)
            if not self.parts.get(asset):
                self.parts.pop(asset, None)
            return
        nb = NetBook.of(asset, t, market, cfg, max(now_ms, market.ts) if market else now_ms)
        a_ = nb.assessment
        hedge = a_.suggested_hedge if a_ is not None else None
        summary = _Published(
            t,
            a_.action if a_ is not None else None,
            a_.hedge_pct if a_ is not None else 0.0,
            hedge.instrument if hedge is not None else None,
            a_.risk_score if a_ is not None else 0.0,
            tuple(sorted(conditions)),
        )
        last = self.published.get(asset)
        if last is not None and not _differs(last, summary, self.points):
            return
        self.published[asset] = summary
        out.records.append((asset, nb.record(cfg, found, assessed_at)))

    def _state(self, owner: str, active: set[str]) -> tuple[str, bytes]:
        self._alert_keys[owner] = set(active)
        body = {k: self.tracker.active[k] for k in sorted(active) if k in self.tracker.active}
        return (STATE_PREFIX + owner, orjson.dumps({"active": body}))


def _differs(last: _Published, now: _Published, points: float) -> bool:
    """A new `risk-book` record when the sizes, the advice (action, fraction, instrument),
    the breaches changed, or the score moved `points` (the `changed` rule of actions)."""
    return (
        last.totals != now.totals
        or last.action != now.action
        or last.hedge_pct != now.hedge_pct
        or last.instrument != now.instrument
        or last.breaches != now.breaches
        or abs(now.score - last.score) >= points
    )


def _kind(alerts: list[alerting.Alert], kind: str) -> list[alerting.Alert]:
    for a in alerts:
        a["kind"] = kind
    return alerts
