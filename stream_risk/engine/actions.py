"""What the engine keeps of the action last published for a position: `LastAction` (the
fields `changed` emission compares, and the record's bytes, as read back on a rebuild) and
`MadeAction` (an action this engine made, kept as what made it: the record made again on
demand)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from stream_risk.assessor import assess
from stream_risk.config import RiskConfig
from stream_risk.engine.market import MarketSnapshot
from stream_risk.engine.record import action_record, apply_stale_policy

if TYPE_CHECKING:
    from stream_risk.engine.table import PositionState


class LastAction:
    """What was last published for a position: the fields `changed` emission compares, and
    the record itself (`value`: its JSON bytes, `record()`: as a dict) for `GET /positions`.

    This base holds the bytes (an action read back from `risk-actions` on a rebuild);
    `MadeAction`, what the engine keeps for the actions it makes, holds what made it.
    """

    __slots__ = ("_data", "action", "hedge_pct", "instrument", "risk_score", "stale")

    def __init__(
        self,
        action: str,
        hedge_pct: float,
        instrument: str | None,
        risk_score: float,
        stale: bool,
        value: bytes | None = None,
    ) -> None:
        self.action = action
        self.hedge_pct = hedge_pct
        self.instrument = instrument
        self.risk_score = risk_score
        self.stale = stale
        self._data = value

    @property
    def value(self) -> bytes:
        """The published record as its JSON bytes."""
        assert self._data is not None
        return self._data

    def record(self) -> dict[str, Any]:
        """The published record as a (new) dict."""
        out: dict[str, Any] = orjson.loads(self.value)
        return out


class MadeAction(LastAction):
    """An action this engine made, kept as what made it (see `stream_risk.engine.record`):
    `value` and `record()` make the identical record again, on demand.

    What made it is referenced, not copied (docs/design.md D8): `pos`, the position
    version it was made of (the core never changes a position's fields once an action
    references it: an update makes a new `PositionState`), `market`, the tick's shared
    `MarketSnapshot`, and `cfg`, the shared config. Its own are the record's fields that
    are of this assessment only: trigger, event time, wall time, next evaluation, policy.
    The age is made again from the position and the event time (the same float).
    """

    __slots__ = (
        "cfg",
        "config_version",
        "due",
        "event_ts",
        "market",
        "now_ms",
        "policy",
        "pos",
        "topic",
        "trigger",
    )

    def __init__(
        self,
        action: str,
        hedge_pct: float,
        instrument: str | None,
        risk_score: float,
        stale: bool,
        pos: PositionState,
        market: MarketSnapshot,
        cfg: RiskConfig,
        trigger: str,
        event_ts: int,
        now_ms: int,
        due: int,
        policy: str | None = None,
        config_version: dict[str, int] | None = None,
        topic: str = "",
    ) -> None:
        super().__init__(action, hedge_pct, instrument, risk_score, stale)
        self.pos = pos
        self.market = market
        self.cfg = cfg
        self.trigger = trigger
        self.event_ts = event_ts
        self.now_ms = now_ms
        self.due = due
        self.policy = policy
        self.config_version = config_version
        self.topic = topic

    @property
    def value(self) -> bytes:
        return orjson.dumps(self.record())

    def record(self) -> dict[str, Any]:
        pos, m = self.pos, self.market
        age = pos.age_minutes(self.event_ts)
        a = assess(
            pos.size,
            pos.entry_price,
            age,
            pos.unrealized_pnl,
            m.price,
            m.vol,
            m.spread,
            m.funding,
            m.bid,
            m.ask,
            self.cfg,
            pos.asset,
        )
        if self.policy is not None:
            apply_stale_policy(a, self.policy)
        # Dicts of its own (not the snapshot's shared `refs`): the caller may change them.
        return action_record(
            a,
            pos.position_id,
            pos.asset,
            self.trigger,
            self.event_ts,
            m.ts,
            pos.ts,
            self.now_ms,
            self.stale,
            self.due,
            policy=self.policy,
            config_version=self.config_version,
            position_ref={"topic": self.topic, "partition": pos.partition, "offset": pos.offset},
            tick_lineage=m.lineage,
            age_minutes=age,
            entry_price=pos.entry_price,
            unrealized_pnl=pos.unrealized_pnl,
            market=(m.vol, m.spread, m.funding, m.bid, m.ask),
            estimated=list(m.estimated),
        )
