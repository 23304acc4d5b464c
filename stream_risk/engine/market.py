"""An asset's latest market (`MarketState`) and its versions (`MarketSnapshot`, one per tick,
what the actions made on that tick reference); the engine's market defaults; `PriceHistory`,
what a catch-up feeds the vol estimate from."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from stream_risk.engine.estimates import MARKET_INPUTS, MarketDefaults, VolEstimator, VolState
from stream_risk.engine.events import NO_LINEAGE, Lineage
from stream_risk.models import MarketTick

#: history(after, upto): (ts, price) of an asset's ticks with after < ts <= upto, in order.
PriceHistory = Callable[[int, int], Iterable[tuple[int, float]]]

#: The engine's defaults (EngineConfig): DESIGN §1's funding and depths, a 2 bps spread,
#: vol estimated over 60 returns from 20 on (docs/design.md D12).
DEFAULT_MARKET = MarketDefaults()
DEFAULT_VOL = VolEstimator()


class MarketState:
    """Latest market of one asset. A field a tick leaves out keeps its last value; a field
    the feed has never given takes its default (`MarketDefaults`), and `volatility_1d`
    comes from the estimator (`VolState`) until the feed gives one (a field the feed gives
    always wins). `estimated()` names what the feed did not give."""

    __slots__ = (
        "_snap",
        "ask_depth_usd",
        "asset",
        "bid_depth_usd",
        "current_price",
        "given",
        "lineage",
        "perp_funding_rate",
        "spot_spread_bps",
        "ts",
        "vol_state",
        "volatility_1d",
    )

    def __init__(
        self,
        asset: str,
        defaults: MarketDefaults = DEFAULT_MARKET,
        vol: VolEstimator | None = DEFAULT_VOL,
    ) -> None:
        self.asset = asset
        self.ts = -1
        self.current_price = 0.0
        self.volatility_1d: float | None = None
        self.spot_spread_bps: float | None = defaults.spot_spread_bps
        self.perp_funding_rate = defaults.perp_funding_rate
        self.bid_depth_usd = defaults.bid_depth_usd
        self.ask_depth_usd = defaults.ask_depth_usd
        #: Bits of MARKET_INPUTS the feed has given (by position: vol = 1, spread = 2, ...).
        self.given = 0
        #: The vol estimate while the feed has given none (None: estimation off).
        self.vol_state: VolState | None = None if vol is None else vol.state()
        self.lineage: Lineage = NO_LINEAGE
        self._snap: MarketSnapshot | None = None

    def snapshot(self) -> MarketSnapshot:
        """This market version (as of its latest tick) as an immutable `MarketSnapshot`:
        made once per tick and shared by every action made on it. Call when `complete`."""
        snap = self._snap
        if snap is None:
            snap = self._snap = MarketSnapshot(self)
        return snap

    def decision_refs(self) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """(`inputs.market`, `lineage.tick`, `estimated_inputs`) of the actions made on this
        market version: built once per tick, shared by the records of every position on
        the asset (read only: records are serialised, never mutated)."""
        return self.snapshot().refs

    def estimated(self) -> list[str]:
        """The market inputs the feed has not given (estimated or defaulted), in order."""
        given = self.given
        return [name for i, name in enumerate(MARKET_INPUTS) if not given >> i & 1]

    def invalidate(self) -> None:
        """Forget `snapshot()`: call after setting fields other than by `apply`."""
        self._snap = None

    def apply(self, tick: MarketTick, lineage: Lineage) -> None:
        self._snap = None
        self.ts = tick.ts
        self.current_price = tick.current_price
        if tick.volatility_1d is not None:
            self.volatility_1d = tick.volatility_1d
            self.given |= 1
            self.vol_state = None  # the feed's vol wins from now on
        elif self.vol_state is not None:
            self.volatility_1d = self.vol_state.update(tick.ts, tick.current_price)
        if tick.spot_spread_bps is not None:
            self.spot_spread_bps = tick.spot_spread_bps
            self.given |= 2
        if tick.perp_funding_rate is not None:
            self.perp_funding_rate = tick.perp_funding_rate
            self.given |= 4
        if tick.bid_depth_usd is not None:
            self.bid_depth_usd = tick.bid_depth_usd
            self.given |= 8
        if tick.ask_depth_usd is not None:
            self.ask_depth_usd = tick.ask_depth_usd
            self.given |= 16
        self.lineage = lineage

    def set_as_of(
        self,
        ts: int,
        current_price: float,
        volatility_1d: float | None,
        spot_spread_bps: float,
        perp_funding_rate: float,
        bid_depth_usd: float,
        ask_depth_usd: float,
        given: int,
        history: PriceHistory | None = None,
    ) -> None:
        """Set this market as after a run of ticks ending at `ts` that were not applied one
        by one (`Engine.apply_market`): the values as of the last of them (`volatility_1d`
        None: keep the current one), `given` the MARKET_INPUTS bits the feed has given by
        then. The vol estimate, while the feed gives none, is fed the asset's ticks since
        its own latest, from `history(after, upto)`: (ts, price) of the ticks in
        (after, upto], in order (what `apply` would have fed it, tick by tick)."""
        est = self.vol_state
        if est is not None:
            if given & 1:
                self.vol_state = None  # the feed's vol wins from its first value on
            elif history is not None:
                update = est.update
                for ts_i, p_i in history(est.t, ts):
                    update(ts_i, p_i)
        self.given = given
        self.ts = ts
        self.current_price = current_price
        if volatility_1d is not None:
            self.volatility_1d = volatility_1d
        self.spot_spread_bps = spot_spread_bps
        self.perp_funding_rate = perp_funding_rate
        self.bid_depth_usd = bid_depth_usd
        self.ask_depth_usd = ask_depth_usd
        self.lineage = NO_LINEAGE
        self._snap = None

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

    def waiting(self) -> dict[str, Any] | None:
        """What an assessment on this market waits for, for people: None when complete."""
        missing = self.missing()
        if not missing:
            return None
        out: dict[str, Any] = {"missing": missing}
        est = self.vol_state
        if "volatility_1d" in missing and est is not None:
            out["volatility_1d"] = (
                f"estimating from prices: {est.n} of {est.n + est.needed} returns so far; "
                "or send volatility_1d on market-ticks"
            )
        if "volatility_1d" in missing and est is None:
            out["volatility_1d"] = "send volatility_1d on market-ticks (estimation is off)"
        if "spot_spread_bps" in missing:
            out["spot_spread_bps"] = "send spot_spread_bps on market-ticks, or set a default spread"
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
            "estimated_inputs": self.estimated(),
        }


class MarketSnapshot:
    """One version of an asset's market (as of one tick), immutable: the market inputs of
    every action made on it. `MarketState.snapshot()` makes one per tick and every action
    made on that tick references it (a later tick makes a new one: an action keeps the
    market it was made on). `refs`: the record's `inputs.market`, `lineage.tick` and
    `estimated_inputs`, built once and shared by the records made on this tick (read
    only: the core serialises them, never mutates them)."""

    __slots__ = (
        "ask",
        "bid",
        "estimated",
        "funding",
        "lineage",
        "price",
        "refs",
        "spread",
        "ts",
        "vol",
    )

    def __init__(self, m: MarketState) -> None:
        vol, spread = m.volatility_1d, m.spot_spread_bps
        assert vol is not None and spread is not None  # made of a complete market only
        self.ts = m.ts
        self.price = m.current_price
        self.vol = vol
        self.spread = spread
        self.funding = m.perp_funding_rate
        self.bid = m.bid_depth_usd
        self.ask = m.ask_depth_usd
        self.lineage = lin = m.lineage
        self.estimated = m.estimated()
        self.refs: tuple[dict[str, Any], dict[str, Any], list[str]] = (
            {
                "current_price": self.price,
                "volatility_1d": vol,
                "spot_spread_bps": spread,
                "perp_funding_rate": self.funding,
                "bid_depth_usd": self.bid,
                "ask_depth_usd": self.ask,
            },
            {"topic": lin.topic, "partition": lin.partition, "offset": lin.offset},
            self.estimated,
        )
