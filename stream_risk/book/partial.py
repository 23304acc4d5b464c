"""A positions partition's contribution to an asset (stage 1 of the aggregation, D17).

Each instance owns some `positions` partitions; for each (asset, partition) it holds
positions of, it keeps running sums over those positions (`Table.parts`) and publishes
them, when they change, to the internal compacted topic `risk-book-partials`, keyed
`<partition>:<asset>` and sent to the partition of the asset (Kafka's murmur2 of the asset,
as a record keyed by the asset would go), so that an asset's contributions meet in one
partition. The latest record per key is the contribution: a new owner of a positions
partition publishes the same keys again; an empty contribution is a tombstone.

Everything a book-level figure needs is a sum over the positions, so a contribution is a
handful of sums, not a list of positions, and it does not change with the price: it is
re-published when a position or the hedge fraction of its latest action changes, not on
every tick (the notional is price × these sizes, priced by whoever reads them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

#: Field order of a `Partial` as sent (a JSON object, self-describing).
FIELDS = (
    "positions",
    "longs",
    "shorts",
    "net_size",
    "gross_size",
    "long_hedged",
    "short_hedged",
    "entry_weight",
    "entry_signed",
    "origin_weight",
)


class Partial(NamedTuple):
    """Sums over a set of positions of one asset (q: size, h: the hedge fraction of the
    position's latest action, 0 without one; e: entry price; o: the epoch ms the position's
    age counts from, `opened_at` or `ts − age_minutes`)."""

    positions: int = 0
    longs: int = 0
    shorts: int = 0
    net_size: float = 0.0  # Σ q
    gross_size: float = 0.0  # Σ |q|
    long_hedged: float = 0.0  # Σ over longs of q·h: what the longs' own hedges sell
    short_hedged: float = 0.0  # Σ over shorts of |q|·h: what the shorts' own hedges buy
    entry_weight: float = 0.0  # Σ |q|·e
    entry_signed: float = 0.0  # Σ q·e
    origin_weight: float = 0.0  # Σ |q|·o

    @property
    def empty(self) -> bool:
        return self.positions <= 0

    @property
    def hedged_size(self) -> float:
        """Σ q·h: the net size the positions' own hedges take off."""
        return self.long_hedged - self.short_hedged

    @property
    def vwap_entry(self) -> float:
        """Entry price of the open positions weighted by size: Σ |q|·e / Σ |q| (0 when flat)."""
        return self.entry_weight / self.gross_size if self.gross_size > 0 else 0.0

    def age_minutes(self, at_ms: int) -> float:
        """Size-weighted (at one price per asset, notional-weighted) age at `at_ms`:
        Σ |q|·age / Σ |q| = (at − Σ |q|·o / Σ |q|) / 60,000, never below 0."""
        if self.gross_size <= 0:
            return 0.0
        return max(0.0, (at_ms - self.origin_weight / self.gross_size) / 60_000)

    def unrealized_pnl(self, price: float) -> float:
        """Σ q·(price − e) = price·Σ q − Σ q·e."""
        return price * self.net_size - self.entry_signed

    def to_json(self) -> bytes:
        return orjson.dumps(dict(zip(FIELDS, self, strict=True)))

    @classmethod
    def from_json(cls, value: bytes) -> Partial:
        """Raises ValueError (orjson's, or a missing / mistyped field) on a bad record."""
        d = orjson.loads(value)
        if not isinstance(d, dict):
            raise ValueError("a contribution is a JSON object")
        try:
            return cls(
                int(d["positions"]),
                int(d["longs"]),
                int(d["shorts"]),
                *(float(d[f]) for f in FIELDS[3:]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"contribution field missing or not a number: {exc}") from exc

    @classmethod
    def of(cls, sums: list[float]) -> Partial:
        """From `Table.parts`' list (the same order as `FIELDS`)."""
        return cls(round(sums[0]), round(sums[1]), round(sums[2]), *sums[3:])


def total(parts: Iterable[Partial]) -> Partial:
    """The sum of contributions (an asset's over its positions partitions)."""
    acc = [0.0] * len(FIELDS)
    for p in parts:
        for i, v in enumerate(p):
            acc[i] += v
    return Partial(int(acc[0]), int(acc[1]), int(acc[2]), *acc[3:])


def partial_key(asset: str, partition: int) -> bytes:
    """`<partition>:<asset>` (the partition is a number: the first ':' splits it)."""
    return f"{partition}:{asset}".encode()


def parse_partial_key(key: bytes) -> tuple[str, int]:
    """(asset, positions partition) of a contribution's key; ValueError when it is not one."""
    text = key.decode()
    head, sep, asset = text.partition(":")
    if not sep or not asset:
        raise ValueError(f"key {text!r} is not <partition>:<asset>")
    return asset, int(head)


def as_dict(p: Partial) -> dict[str, Any]:
    return dict(zip(FIELDS, p, strict=True))
