"""Determinism: the same records with the same `now`s give byte-identical output (replay
and backtests depend on it)."""

from __future__ import annotations

import orjson

from stream_risk.engine import Engine, EngineConfig, Event

from . import MIN, T0, close, position, price_tick, tick


def scenario() -> list[tuple[list[Event], int]]:
    """(batch, now) pairs: a book of four positions, ticks, an update, a close, timers."""
    return [
        (
            [
                tick(),
                tick("ETH", price=3_000.0, funding=-0.05),
                position("p1"),
                position("p2", size=-3.0, config={"max_hold_minutes": 240}),
                position("p3", asset="ETH", size=100.0, entry=3_100.0),
                position("p4", asset="SOL"),  # waits: no SOL market yet
            ],
            T0,
        ),
        ([price_tick(ts=T0 + i, price=44_000.0 + 50 * i) for i in range(1, 200)], T0 + 200),
        ([position("p1", size=25.0, ts=T0 + MIN)], T0 + MIN),
        ([tick("SOL", T0 + 2 * MIN, 150.0)], T0 + 2 * MIN),
        ([close("p2")], T0 + 3 * MIN),
        ([], T0 + 90 * MIN),
        ([price_tick("ETH", T0 + 100 * MIN, 2_900.0)], T0 + 100 * MIN),
        ([], T0 + 400 * MIN),
    ]


def transcript(emit: str) -> list[tuple[str, bytes | None]]:
    engine = Engine(EngineConfig(emit=emit))  # type: ignore[arg-type]
    out: list[tuple[str, bytes | None]] = []
    for batch, now in scenario():
        res = engine.step(batch, now)
        out += [(o.position_id, o.data) for o in res.outputs]
        # Drive timers the way replay does: each at its own due time.
        while (due := engine.next_due()) is not None and due <= now + 30 * MIN:
            out += [(o.position_id, o.data) for o in engine.fire_timers(due).outputs]
    return out


def test_two_runs_give_byte_identical_outputs() -> None:
    for emit in ("changed", "all"):
        first = transcript(emit)
        assert len(first) > 10
        assert transcript(emit) == first
        assert transcript(emit) == first


def test_data_is_the_serialised_value() -> None:
    engine = Engine()
    res = engine.step([tick(), position()], T0)
    (out,) = res.outputs
    assert out.value is not None and out.data is not None
    assert orjson.loads(out.data) == out.value
    assert out.data == orjson.dumps(out.value)


def test_the_wall_clock_never_leaks_into_the_output() -> None:
    # Same records, `now` one ms apart: only the fields that carry `now` may differ.
    a = Engine().step([tick(), position()], T0).outputs[0].value
    b = Engine().step([tick(), position()], T0 + 1).outputs[0].value
    assert a is not None and b is not None
    diff = {k for k in a if a[k] != b[k]}
    assert diff == {"ts_ms", "assessed_at"}
