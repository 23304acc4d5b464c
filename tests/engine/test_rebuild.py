"""The rebuild path: `load` the positions changelog, `restore` the last published actions,
`settle` a partition; `drop_partition` on revocation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_risk.engine import Engine, PositionEvent

from . import MIN, T0, close, index_of, only, position, tick, tombstones

approx = pytest.approx


def published(events: list[PositionEvent], now: int = T0) -> dict[str, dict[str, Any]]:
    """What an earlier instance published for these positions (as read back)."""
    engine = Engine()
    res = engine.step([tick(), *events], now)
    out: dict[str, dict[str, Any]] = {}
    for o in res.outputs:
        assert o.value is not None
        out[o.position_id] = o.value
    return out


def test_load_keeps_the_latest_version_and_assesses_nothing() -> None:
    engine = Engine()
    engine.step([tick()], T0)
    rejected = engine.load(
        [
            position("p1", size=1.0, ts=T0 - 3000),
            position("p1", size=3.0, ts=T0 - 1000),
            position("p1", size=2.0, ts=T0 - 2000),  # an older version read late
            position("p2", ts=T0 - 3000),
            close("p2"),
            position("p3", ts=T0 - 3000),
            close("p3"),
            position("p3", size=5.0, ts=T0 - 500),  # closed, then reopened
        ]
    )
    assert rejected == []
    assert set(engine.table.positions) == {"p1", "p3"}
    assert engine.table.positions["p1"].size == 3.0
    assert engine.table.positions["p3"].size == 5.0
    assert index_of(engine) == {"BTC": {"p1", "p3"}}
    assert engine.stats.assessments == 0
    assert engine.stats.tombstones == 0  # a close read during a rebuild publishes nothing
    assert engine.next_due() is None


def test_load_returns_what_it_rejected() -> None:
    engine = Engine()
    rejected = engine.load([position("p1", key="k1", offset=3), position("p2")])
    assert [r.lineage.offset for r in rejected] == [3]
    assert set(engine.table.positions) == {"p2"}


def test_load_does_not_apply_the_future_guard() -> None:
    engine = Engine()
    engine.load([position(ts=T0 + 10**9)])
    assert "p1" in engine.table.positions


def test_settle_keeps_an_action_made_from_the_same_versions_and_its_timer() -> None:
    before = published([position(partition=3)])["p1"]

    engine = Engine()
    engine.step([tick()], T0 + 1000)
    engine.load([position(partition=3)])
    engine.restore(3, "p1", before)
    res = engine.settle(3, T0 + 1000)

    assert res.outputs == [] and res.assessments == 0
    assert engine.next_due() == T0 + 60 * MIN  # the restored next_evaluation_ts
    row = engine.snapshot()[0]
    assert row["latest_action"] == before
    # The timer fires as it would have on the instance that published.
    v = only(engine.fire_timers(T0 + 60 * MIN))
    assert v["trigger"] == "timer" and v["event_ts"] == T0 + 60 * MIN
    assert v["risk_score"] == approx(51.32)


def test_a_timer_resumed_on_another_instance_gives_the_same_bytes() -> None:
    live = Engine()
    first = live.step([tick(), position(partition=1)], T0)
    value = only(first)

    rebuilt = Engine()
    rebuilt.step([tick()], T0 + 5000)
    rebuilt.load([position(partition=1)])
    rebuilt.restore(1, "p1", value)
    assert rebuilt.settle(1, T0 + 5000).outputs == []

    for k in (1, 2):
        a = live.fire_timers(T0 + k * 60 * MIN)
        b = rebuilt.fire_timers(T0 + k * 60 * MIN)
        assert [o.data for o in a.outputs] == [o.data for o in b.outputs]
        assert len(a.outputs) == 1


def test_settle_reassesses_a_position_updated_while_down() -> None:
    before = published([position(partition=3)])["p1"]

    engine = Engine()
    engine.step([tick()], T0 + 1000)
    engine.load([position(partition=3), position(size=20.0, ts=T0 + 1000, partition=3)])
    engine.restore(3, "p1", before)
    res = engine.settle(3, T0 + 1000)

    assert res.assessments == 1
    v = only(res)  # 48.82 → 50.14 (liquidity 2.64): published
    assert v["risk_score"] == approx(50.14)
    assert v["position_ts"] == T0 + 1000
    assert v["trigger"] == "position"
    assert engine.next_due() == T0 + 1000 + 60 * MIN


def test_settle_reassesses_when_a_newer_tick_arrived_and_compares_with_the_restored() -> None:
    before = published([position(partition=3)])["p1"]

    engine = Engine()
    engine.step([tick(ts=T0 + MIN)], T0 + MIN)  # same values, a newer tick
    engine.load([position(partition=3)])
    engine.restore(3, "p1", before)
    res = engine.settle(3, T0 + MIN)

    # Assessed at T0 + 1 min (48.82 + 1/24): within a point of what was published,
    # same action and instrument: nothing to publish, but the timer moves.
    assert res.assessments == 1
    assert res.outputs == []
    assert engine.stats.suppressed == 1
    assert engine.next_due() == T0 + 61 * MIN


def test_settle_assesses_and_publishes_a_position_with_no_restored_action() -> None:
    engine = Engine()
    engine.step([tick()], T0)
    engine.load([position(partition=2)])
    v = only(engine.settle(2, T0))
    assert v["risk_score"] == approx(48.82)
    assert engine.next_due() == T0 + 60 * MIN


def test_settle_leaves_a_position_with_no_market_waiting() -> None:
    engine = Engine()
    engine.load([position(asset="ETH", partition=2)])
    res = engine.settle(2, T0)
    assert res.outputs == [] and res.assessments == 0
    v = only(engine.step([tick("ETH", price=3_000.0)], T0))
    assert v["trigger"] == "tick"


def test_settle_tombstones_a_restored_action_whose_position_is_gone() -> None:
    before = published([position("p1", partition=4), position("p2", partition=4)])

    engine = Engine()
    engine.step([tick()], T0)
    engine.load([position("p1", partition=4), position("p2", partition=4), close("p2")])
    engine.restore(4, "p1", before["p1"])
    engine.restore(4, "p2", before["p2"])
    res = engine.settle(4, T0)

    assert tombstones(res) == ["p2"]
    assert res.assessments == 0
    assert engine.stats.tombstones == 1
    assert set(engine.table.positions) == {"p1"}


def test_a_tombstone_read_back_forgets_the_restored_action() -> None:
    before = published([position(partition=4)])["p1"]

    engine = Engine()
    engine.restore(4, "p1", before)
    engine.restore(4, "p1", None)  # it was already tombstoned on risk-actions
    assert engine.settle(4, T0).outputs == []


def test_settle_fires_a_restored_timer_that_fell_due_while_down() -> None:
    before = published([position(partition=3)])["p1"]

    engine = Engine()
    engine.step([tick()], T0)  # the same tick version as the restored action
    engine.load([position(partition=3)])
    engine.restore(3, "p1", before)
    res = engine.settle(3, T0 + 61 * MIN)

    v = only(res)
    assert v["trigger"] == "timer"
    assert v["event_ts"] == T0 + 60 * MIN
    assert v["risk_score"] == approx(51.32)


def test_settle_only_touches_its_own_partition() -> None:
    engine = Engine()
    engine.step([tick()], T0)
    engine.load([position("a", partition=1), position("b", partition=2)])
    res = engine.settle(1, T0)
    assert [o.position_id for o in res.outputs] == ["a"]
    res = engine.settle(2, T0)
    assert [o.position_id for o in res.outputs] == ["b"]


def test_drop_partition_forgets_its_positions_and_their_timers() -> None:
    engine = Engine()
    engine.step(
        [
            tick(),
            position("a", partition=1),
            position("b", partition=1, size=0.0),
            position("c", partition=2),
        ],
        T0,
    )
    assert engine.drop_partition(1) == 2
    assert set(engine.table.positions) == {"c"}
    assert index_of(engine) == {"BTC": {"c"}}
    assert set(engine.table.by_partition) == {2}
    res = engine.fire_timers(T0 + 1000 * MIN)
    assert {o.position_id for o in res.outputs} == {"c"}
    assert res.assessments == 1
    assert engine.drop_partition(1) == 0


def test_drop_partition_forgets_restored_actions_not_yet_settled() -> None:
    before = published([position(partition=5)])["p1"]
    engine = Engine()
    engine.restore(5, "p1", before)
    engine.drop_partition(5)
    assert engine.settle(5, T0).outputs == []


def test_a_partition_reassigned_after_a_drop_rebuilds_cleanly() -> None:
    engine = Engine()
    engine.step([tick(), position(partition=1)], T0)
    engine.drop_partition(1)
    engine.load([position(partition=1)])
    v = only(engine.settle(1, T0))  # nothing restored: assessed and published again
    assert v["next_evaluation_ts"] == T0 + 60 * MIN
    assert len(engine.fire_timers(T0 + 60 * MIN).outputs) == 1  # once, not twice


class _PlainLoad(Engine):
    """`load` as the live path's rule for every record (what the inline load replaces)."""

    def load(self, events: Any, now_ms: int | None = None) -> list[Any]:
        from stream_risk.engine import StepResult

        res = StepResult()
        for ev in events:
            self._apply_position(ev, now_ms, {}, res, rebuilding=True)
        return res.rejected


def _table(engine: Engine) -> list[tuple[Any, ...]]:
    return [
        (
            pid,
            p.asset,
            p.size,
            p.entry_price,
            p.ts,
            p.opened_at,
            p.age_at_ts,
            p.unrealized_pnl,
            p.config,
            p.overrides,
            p.config_version,
            p.partition,
            p.offset,
        )
        for pid, p in engine.table.positions.items()
    ]


def _indexes(engine: Engine) -> tuple[Any, ...]:
    """The table's indexes and per-asset sums, the sorted ones as lists."""
    t = engine.table
    return (
        {a: list(m) for a, m in t.by_asset.items()},
        {p: list(m) for p, m in t.by_partition.items()},
        t.sizes,
        list(t.ids),
        {a: list(ids) for a, ids in t.ids_by_asset.items()},
    )


@pytest.mark.parametrize("seed", range(30))
def test_the_inline_load_equals_the_live_rule_record_by_record(seed: int) -> None:
    import random

    rnd = random.Random(seed)
    events: list[PositionEvent] = []
    for off in range(120):
        pid = f"p{rnd.randrange(8)}"
        r = rnd.random()
        if r < 0.1:
            events.append(close(pid, partition=rnd.randrange(3), offset=off))
            continue
        events.append(
            position(
                pid,
                rnd.choice(("BTC", "ETH")),
                size=rnd.choice((1.0, 2.0, -3.0)),
                ts=T0 + rnd.choice((-2000, -1000, 0, 0, 10 * MIN)),  # some ahead of now
                age=rnd.choice((None, 30.0)),
                opened_at=rnd.choice((None, T0 - 90 * MIN)),
                config=rnd.choice((None, None, {"max_loss_pct": 0.03})),
                key=rnd.choice((None, None, None, "other")),
                partition=rnd.randrange(3),
                offset=off,
            )
        )
    now = rnd.choice((None, T0))
    fast, plain = Engine(), _PlainLoad()
    for e in (fast, plain):
        if seed % 3 == 0:  # a config scope in force: every record takes the full rule
            e.step([], T0)
            e.scopes["global"] = ({"max_hold_minutes": 240.0}, 1)
    got = [(r.reason, r.lineage) for r in fast.load(events, now)]
    want = [(r.reason, r.lineage) for r in plain.load(events, now)]
    assert got == want
    assert _table(fast) == _table(plain)
    assert index_of(fast) == index_of(plain)
    assert _indexes(fast) == _indexes(plain)
    assert fast.stats == plain.stats


class _Rec:
    """A `risk-actions` record as aiokafka gives it (key and value bytes)."""

    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self.key = key
        self.value = value


def test_restore_batch_gives_the_table_the_records_one_by_one_give() -> None:
    from stream_risk.kafka.codec import decode_action

    first = published([position("p1", partition=2), position("p2", size=-4.0, partition=2)])
    b1 = orjson.dumps(first["p1"])
    # p2 as another producer might have written it: the same object, other whitespace.
    b2 = b"{ " + orjson.dumps(first["p2"])[1:]
    records = [
        _Rec(b"p1", b"not json"),  # unreadable: nothing restored
        _Rec(b"p2", b2),
        _Rec(None, b1),  # no key: skipped
        _Rec(b"p3", b1),
        _Rec(b"p3", None),  # closed since
        _Rec(b"p1", b1),
    ]
    one, batch = Engine(), Engine()
    for e in (one, batch):
        e.step([tick()], T0 + 1000)
        e.load([position("p1", partition=2), position("p2", size=-4.0, partition=2)])
    for r in records:
        if r.key is not None:
            one.restore(2, r.key.decode(), decode_action(r.value))
    batch.restore_batch(2, records)
    a, b = one.settle(2, T0 + 1000), batch.settle(2, T0 + 1000)
    assert a.outputs == b.outputs == []  # both kept as published: nothing to say
    for e in (one, batch):
        last1 = e.table.positions["p1"].last
        last2 = e.table.positions["p2"].last
        assert last1 is not None and last2 is not None
        # The bytes as read, not encoded again.
        assert last1.value == b1 and last2.value == b2
        assert (last1.action, last1.hedge_pct, last1.instrument) == (
            "HEDGE_PARTIAL",
            0.5,
            "perp_short",
        )
        assert last1.risk_score == approx(48.82)
        assert last2.record() == first["p2"]
    assert one.next_due() == batch.next_due() == T0 + 60 * MIN


def test_decode_action_reads_the_fields_and_keeps_the_bytes() -> None:
    from stream_risk.kafka.codec import decode_action

    raw = (
        b'{"action": "REDUCE", "hedge_pct": 0.25, "risk_score": 36.5,'
        b' "suggested_hedge": {"instrument": "spot_sell"}, "stale_market_data": true,'
        b' "next_evaluation_ts": 7, "position_ts": 5, "tick_ts": 6,'
        b' "config_version": {"global": 3}}'
    )
    read = decode_action(raw)
    assert read is not None
    assert read.value is raw
    assert (read.action, read.hedge_pct, read.instrument, read.risk_score, read.stale) == (
        "REDUCE",
        0.25,
        "spot_sell",
        36.5,
        True,
    )
    assert (read.next_due, read.position_ts, read.tick_ts) == (7, 5, 6)
    assert read.config_version == {"global": 3}
    assert decode_action(None) is None
    assert decode_action(b"[1, 2]") is None
    assert decode_action(b'{"hedge_pct": "half"}') is None


class _PosRec:
    """A `positions` record as aiokafka gives it."""

    def __init__(self, offset: int, key: bytes | None, value: bytes | None, ts: int) -> None:
        self.topic = "positions"
        self.partition = 4
        self.offset = offset
        self.timestamp = ts
        self.key = key
        self.value = value


@pytest.mark.parametrize("seed", range(20))
def test_load_rows_gives_the_table_and_dead_letters_load_gives(seed: int) -> None:
    import random

    from stream_risk.kafka.codec import DeadLetter, decode_position, decode_position_rows

    rnd = random.Random(seed)
    records = []
    for off in range(150):
        pid = f"p{rnd.randrange(10)}"
        body: dict[str, Any] = {
            "position_id": pid,
            "asset": rnd.choice(("BTC", "ETH")),
            "size": rnd.choice((1.0, -2.5, 0.0)),
            "entry_price": rnd.choice((100.0, 101.5)),
            "ts": T0 + rnd.choice((-1000, 0, 0, 10 * MIN)),
            "age_minutes": 30.0,
        }
        r = rnd.random()
        if r < 0.05:
            body["config"] = {"max_loss_pct": 0.03}
        elif r < 0.1:
            body["size"] = "ten"  # invalid: a dead letter
        elif r < 0.13:
            del body["ts"]  # the record's timestamp stands in
        key: bytes | None = pid.encode()
        value: bytes | None = orjson.dumps(body)
        r = rnd.random()
        if r < 0.08:
            value = None  # a close
        elif r < 0.11:
            key = b"other"  # disagrees with the body
        elif r < 0.13:
            key = b"\xff"  # not UTF-8
        elif r < 0.15:
            value = b"{not json"
        # A record timestamp that is no clock now and then (the future guard uses `now`).
        records.append(_PosRec(off, key, value, rnd.choice((T0 - 500, T0 - 500, 1_000))))
    now = rnd.choice((None, T0))

    one, rows_engine, plain = Engine(), Engine(), _PlainLoad()
    if seed % 5 == 0:  # a config scope in force: every record takes the full rule
        for e in (one, rows_engine, plain):
            e.scopes["global"] = ({"max_hold_minutes": 240.0}, 1)
    dead_one: list[DeadLetter] = []
    events = []
    for rec in records:
        ev = decode_position(rec)
        if isinstance(ev, DeadLetter):
            dead_one.append(ev)
        else:
            events.append(ev)
    rej_one = one.load(events, now)
    rej_plain = plain.load(events, now)

    dead_rows: list[DeadLetter] = []
    rows = decode_position_rows(records, dead_rows)
    rej_rows = rows_engine.load_rows("positions", 4, rows, now)

    # The common records were decoded by the fast decode (no model made).
    assert any(type(msg).__name__ == "PositionFields" for _k, msg, _o, _t in rows)
    assert dead_rows == dead_one
    assert [(r.reason, r.lineage) for r in rej_rows] == [(r.reason, r.lineage) for r in rej_one]
    assert [(r.reason, r.lineage) for r in rej_rows] == [(r.reason, r.lineage) for r in rej_plain]
    # The batch load (sorted indexes made once, when read) and the record-by-record rule
    # (`upsert` per record) make the same table: positions, indexes, sums, stats.
    for other in (one, plain):
        assert _table(rows_engine) == _table(other)
        assert _indexes(rows_engine) == _indexes(other)
        assert rows_engine.stats == other.stats
    assert rows_engine._pos_topic == one._pos_topic
