"""The latest-state table: positions by id, markets by asset, and the indexes between them."""

from __future__ import annotations

from typing import TypeVar

from stream_risk.config import RiskConfig
from stream_risk.engine.events import NO_LINEAGE, Lineage
from stream_risk.models import MarketTick

K = TypeVar("K")

#: DESIGN §1 defaults for the market fields that may be missing from every tick so far.
DEFAULT_FUNDING = 0.0
DEFAULT_DEPTH_USD = 1_000_000.0


class MarketState:
    """Latest market of one asset. A field a tick leaves out keeps its last value."""

    __slots__ = (
        "ask_depth_usd",
        "asset",
        "bid_depth_usd",
        "current_price",
        "lineage",
        "perp_funding_rate",
        "spot_spread_bps",
        "ts",
        "volatility_1d",
    )

    def __init__(self, asset: str) -> None:
        self.asset = asset
        self.ts = -1
        self.current_price = 0.0
        self.volatility_1d: float | None = None
        self.spot_spread_bps: float | None = None
        self.perp_funding_rate = DEFAULT_FUNDING
        self.bid_depth_usd = DEFAULT_DEPTH_USD
        self.ask_depth_usd = DEFAULT_DEPTH_USD
        self.lineage: Lineage = NO_LINEAGE

    def apply(self, tick: MarketTick, lineage: Lineage) -> None:
        self.ts = tick.ts
        self.current_price = tick.current_price
        if tick.volatility_1d is not None:
            self.volatility_1d = tick.volatility_1d
        if tick.spot_spread_bps is not None:
            self.spot_spread_bps = tick.spot_spread_bps
        if tick.perp_funding_rate is not None:
            self.perp_funding_rate = tick.perp_funding_rate
        if tick.bid_depth_usd is not None:
            self.bid_depth_usd = tick.bid_depth_usd
        if tick.ask_depth_usd is not None:
            self.ask_depth_usd = tick.ask_depth_usd
        self.lineage = lineage

    def same_as(self, tick: MarketTick) -> bool:
        """True when `tick` would change nothing (a duplicate delivery)."""
        return (
            tick.ts == self.ts
            and tick.current_price == self.current_price
            and tick.volatility_1d in (None, self.volatility_1d)
            and tick.spot_spread_bps in (None, self.spot_spread_bps)
            and tick.perp_funding_rate in (None, self.perp_funding_rate)
            and tick.bid_depth_usd in (None, self.bid_depth_usd)
            and tick.ask_depth_usd in (None, self.ask_depth_usd)
        )

    def missing(self) -> list[str]:
        """Fields without which no assessment is possible yet."""
        out = []
        if self.ts < 0:
            out.append("current_price")
        if self.volatility_1d is None:
            out.append("volatility_1d")
        if self.spot_spread_bps is None:
            out.append("spot_spread_bps")
        return out

    @property
    def complete(self) -> bool:
        return self.ts >= 0 and self.volatility_1d is not None and self.spot_spread_bps is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "asset": self.asset,
            "ts": self.ts,
            "current_price": self.current_price,
            "volatility_1d": self.volatility_1d,
            "spot_spread_bps": self.spot_spread_bps,
            "perp_funding_rate": self.perp_funding_rate,
            "bid_depth_usd": self.bid_depth_usd,
            "ask_depth_usd": self.ask_depth_usd,
        }


class LastAction:
    """What was last published for a position: the fields `changed` emission compares."""

    __slots__ = ("action", "hedge_pct", "instrument", "risk_score", "stale", "value")

    def __init__(
        self,
        action: str,
        hedge_pct: float,
        instrument: str | None,
        risk_score: float,
        stale: bool,
        value: bytes,
    ) -> None:
        self.action = action
        self.hedge_pct = hedge_pct
        self.instrument = instrument
        self.risk_score = risk_score
        self.stale = stale
        #: The published record as its JSON bytes (for `GET /positions`; compact in memory).
        self.value = value


class PositionState:
    """Latest version of one position, its effective config and its re-evaluation timer."""

    __slots__ = (
        "age_at_ts",
        "asset",
        "config",
        "entry_price",
        "last",
        "last_assessed_ts",
        "lineage",
        "next_due",
        "opened_at",
        "overrides",
        "position_id",
        "size",
        "ts",
        "unrealized_pnl",
    )

    def __init__(self, position_id: str) -> None:
        self.position_id = position_id
        self.asset = ""
        self.size = 0.0
        self.entry_price = 0.0
        self.ts = -1
        self.opened_at: int | None = None
        self.age_at_ts = 0.0
        self.unrealized_pnl: float | None = None
        self.config: RiskConfig | None = None  # None = the engine-wide config
        self.overrides: dict[str, object] | None = None
        self.lineage: Lineage = NO_LINEAGE
        self.last: LastAction | None = None
        self.last_assessed_ts = -1
        self.next_due = -1  # event time of the next timer re-assessment; -1 = none

    def age_minutes(self, at_ms: int) -> float:
        """Age at event time `at_ms`: from opened_at, else age as of ts plus the time since."""
        if self.opened_at is not None:
            return max(0.0, (at_ms - self.opened_at) / 60_000)
        return max(0.0, self.age_at_ts + (at_ms - self.ts) / 60_000)


class Table:
    """Positions, markets, and the asset -> positions and partition -> positions indexes."""

    __slots__ = ("by_asset", "by_partition", "markets", "positions")

    def __init__(self) -> None:
        self.positions: dict[str, PositionState] = {}
        self.markets: dict[str, MarketState] = {}
        self.by_asset: dict[str, dict[str, None]] = {}  # ordered sets: deterministic order
        self.by_partition: dict[int, dict[str, None]] = {}

    def upsert(self, pos: PositionState, old_asset: str | None, old_partition: int | None) -> None:
        self.positions[pos.position_id] = pos
        if old_asset != pos.asset:
            if old_asset is not None:
                self._unindex(self.by_asset, old_asset, pos.position_id)
            self.by_asset.setdefault(pos.asset, {})[pos.position_id] = None
        partition = pos.lineage.partition
        if old_partition != partition:
            if old_partition is not None:
                self._unindex(self.by_partition, old_partition, pos.position_id)
            self.by_partition.setdefault(partition, {})[pos.position_id] = None

    def remove(self, position_id: str) -> PositionState | None:
        pos = self.positions.pop(position_id, None)
        if pos is not None:
            self._unindex(self.by_asset, pos.asset, position_id)
            self._unindex(self.by_partition, pos.lineage.partition, position_id)
        return pos

    @staticmethod
    def _unindex(index: dict[K, dict[str, None]], key: K, position_id: str) -> None:
        members = index.get(key)
        if members is not None:
            members.pop(position_id, None)
            if not members:
                del index[key]
