"""Exposure from the table's running sums (engine/exposure.py): counts, notionals and the
P&L under the four moves, unhedged and hedged at each position's latest advised fraction,
equal to a from-scratch sum over the positions after every kind of change."""

from __future__ import annotations

import random
from typing import Any

from pytest import approx

from stream_risk.engine import Engine, EngineConfig, Event

from . import MIN, T0, close, position, tick

MOVES = {"down_5pct": -0.05, "down_2pct": -0.02, "up_2pct": 0.02, "up_5pct": 0.05}


def engine_all() -> Engine:
    return Engine(EngineConfig(emit="all"))


def test_a_two_sided_asset_by_hand() -> None:
    engine = engine_all()
    engine.step(
        [
            tick("BTC", price=44_000.0),
            position("p1", "BTC", 10.0),
            position("p2", "BTC", -4.0, 43_000.0),
            position("p3", "ETH", 50.0, 3_000.0),  # no ETH market yet: counted, not priced
        ],
        T0,
    )
    rows = {r["position_id"]: r for r in engine.snapshot()}
    h1 = rows["p1"]["latest_action"]["hedge_pct"]
    h2 = rows["p2"]["latest_action"]["hedge_pct"]
    view = engine.book_exposure()
    btc = view["assets"]["BTC"]
    assert (btc["positions"], btc["long"], btc["short"]) == (2, 1, 1)
    assert btc["net_notional_usd"] == approx(6 * 44_000.0)
    assert btc["gross_notional_usd"] == approx(14 * 44_000.0)
    hedged_net = (10 * (1 - h1) - 4 * (1 - h2)) * 44_000.0
    for name, m in MOVES.items():
        assert btc["pnl_" + name] == approx(6 * 44_000.0 * m)
        assert btc["hedged_pnl_" + name] == approx(hedged_net * m)
    eth = view["assets"]["ETH"]
    assert (eth["positions"], eth["long"], eth["short"], eth["price"]) == (1, 1, 0, None)
    assert eth["net_notional_usd"] == 0.0 and eth["hedged_pnl_down_5pct"] == 0.0
    book = view["book"]
    assert (book["positions"], book["long"], book["short"]) == (3, 2, 1)
    assert book["hedged_pnl_up_5pct"] == approx(hedged_net * 0.05)


def from_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    """The same figures summed position by position from the rows (independent of the
    running sums): each position at its asset's latest price, hedged at its latest
    action's fraction."""
    prices = {a: m.current_price for a, m in engine.table.markets.items() if m.ts >= 0}
    out: dict[str, dict[str, Any]] = {}
    for r in engine.snapshot():
        e = out.setdefault(
            r["asset"],
            {"positions": 0, "long": 0, "short": 0, "net": 0.0, "gross": 0.0, "hedged": 0.0},
        )
        size = r["size"]
        e["positions"] += 1
        e["long"] += size > 0
        e["short"] += size < 0
        price = prices.get(r["asset"])
        if price is None:
            continue
        action = r["latest_action"]
        h = 0.0 if action is None else action["hedge_pct"]
        e["net"] += size * price
        e["gross"] += abs(size) * price
        e["hedged"] += size * (1 - h) * price
    return out


def check(engine: Engine) -> None:
    want = from_rows(engine)
    got = engine.book_exposure()["assets"]
    assert set(got) == set(want)
    for asset, w in want.items():
        g = got[asset]
        assert (g["positions"], g["long"], g["short"]) == (w["positions"], w["long"], w["short"])
        assert g["net_notional_usd"] == approx(w["net"], rel=1e-9, abs=1e-6)
        assert g["gross_notional_usd"] == approx(w["gross"], rel=1e-9, abs=1e-6)
        for name, m in MOVES.items():
            assert g["hedged_pnl_" + name] == approx(w["hedged"] * m, rel=1e-9, abs=1e-6)


def test_the_sums_follow_opens_resizes_flips_moves_closes_ticks_and_a_rebuild() -> None:
    rng = random.Random(13)
    engine = engine_all()
    assets = ["BTC", "ETH", "SOL"]
    prices = {"BTC": 44_000.0, "ETH": 3_000.0, "SOL": 150.0}
    engine.step([tick(a, price=p) for a, p in prices.items() if a != "SOL"], T0)
    held: dict[str, tuple[str, float]] = {}
    for i in range(1, 400):
        now = T0 + i * MIN
        events: list[Event] = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            pid = f"p{rng.randint(1, 25)}"
            if kind < 0.15 and pid in held:
                events.append(close(pid))
                del held[pid]
            elif kind < 0.3:
                asset = rng.choice(assets)
                prices[asset] *= 1 + rng.uniform(-0.08, 0.08)
                events.append(tick(asset, ts=now, price=prices[asset], vol=rng.uniform(0.01, 0.2)))
            else:
                asset = held[pid][0] if pid in held and rng.random() < 0.8 else rng.choice(assets)
                size = rng.choice([-1, 1]) * rng.uniform(0.1, 500) if rng.random() < 0.9 else 0.0
                events.append(position(pid, asset, size, prices[asset] * 1.01, ts=now))
                held[pid] = (asset, size)
        engine.step(events, now)
        check(engine)
    # A restart: the positions loaded and their last actions read back, then settled.
    now = T0 + 400 * MIN
    rebuilt = engine_all()
    rebuilt.step([tick(a, ts=now, price=prices[a]) for a in assets], now)
    rebuilt.load(
        [
            position(pid, asset, size, prices[asset] * 1.01, ts=now - MIN)
            for pid, (asset, size) in held.items()
        ],
        now,
    )
    for row in engine.snapshot():
        rebuilt.restore(0, row["position_id"], row["latest_action"])
    rebuilt.settle(0, now)
    check(rebuilt)
