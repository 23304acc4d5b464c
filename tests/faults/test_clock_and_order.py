"""Promise 5 (issue 8), clock and order: ticks and position updates from the future,
duplicate ticks and positions, out-of-order ticks and position updates. Newer state is
never overwritten by older (nor by a refused record), live or after a restart, and the
metrics count each case exactly as many times as it was sent (DESIGN §3, D3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from .stream import StreamShape, SyntheticStream
from .support import (
    EngineProcess,
    PositionView,
    Producer,
    Topics,
    headers_of,
    latest_by_key,
    now_ms,
    read_all,
    report,
)

pytestmark = pytest.mark.broker

FUTURE_MS = 10 * 60_000  # beyond the 5-minute max_future_ms (D3)
N_FUTURE_TICKS = 7
N_FUTURE_POSITIONS = 4
N_DUP_TICKS = 9
N_DUP_POSITIONS = 3
N_OLD_TICKS = 6
N_OLD_POSITIONS = 5


class Scenario:
    """What is sent, what the engine must end up holding, and how much of each case."""

    def __init__(self, stream: SyntheticStream) -> None:
        self.stream = stream
        self.a_future, self.b_dup, self.c_old, self.d_same_ts = stream.assets[:4]
        self.future_offsets: list[tuple[str, int, int]] = []

    def _tick(self, asset: str, **kw: Any) -> tuple[bytes, bytes]:
        return asset.encode(), orjson.dumps({"asset": asset, **kw})

    async def send(self, producer: Producer, topics: Topics) -> None:
        s = self.stream
        book = s.book
        now = now_ms()
        # Ticks from the future: refused (DLQ), counted; the market stays as it was.
        future = [
            self._tick(self.a_future, ts=now + FUTURE_MS + i, current_price=1e6)
            for i in range(N_FUTURE_TICKS)
        ]
        for md in await producer.send_many(topics.ticks, future):
            self.future_offsets.append((md.topic, md.partition, md.offset))
        # Duplicate ticks: the latest tick of an asset again, byte for byte.
        m = book.markets[self.b_dup]
        dup = self._tick(
            self.b_dup,
            ts=m.ts,
            current_price=m.price,
            volatility_1d=m.vol,
            spot_spread_bps=m.spread,
            perp_funding_rate=m.funding,
            bid_depth_usd=m.bid,
            ask_depth_usd=m.ask,
        )
        await producer.send_many(topics.ticks, [dup] * N_DUP_TICKS)
        # Out-of-order ticks: older than the one held, a different price: ignored.
        c = book.markets[self.c_old]
        old = [
            self._tick(self.c_old, ts=c.ts - 1 - i, current_price=c.price * 3)
            for i in range(N_OLD_TICKS)
        ]
        await producer.send_many(topics.ticks, old)
        # Same ts, different content: applied (D3).
        d = book.markets[self.d_same_ts]
        same = {"asset": self.d_same_ts, "ts": d.ts, "current_price": round(d.price * 1.5, 6)}
        await producer.send_many(topics.ticks, [(self.d_same_ts.encode(), orjson.dumps(same))])
        d.apply(same)

        # Positions: a newer version, then older ones; duplicates; future versions.
        pids = s.pids
        newer = []
        for pid in pids[:N_OLD_POSITIONS]:
            pos = book.positions[pid]
            assert pos is not None
            pos.size = round(pos.size * 2, 6)
            pos.ts = s._ts(pid)
            newer.append((pid.encode(), orjson.dumps(pos.body(pid))))
        await producer.send_many(topics.positions, newer)
        older = []
        for pid in pids[:N_OLD_POSITIONS]:
            pos = book.positions[pid]
            assert pos is not None
            stale = PositionView(pos.asset, -pos.size * 7, pos.entry, pos.ts - 5_000, 1.0)
            older.append((pid.encode(), orjson.dumps(stale.body(pid))))
        await producer.send_many(topics.positions, older)
        dpid = pids[N_OLD_POSITIONS]
        dpos = book.positions[dpid]
        assert dpos is not None
        await producer.send_many(
            topics.positions, [(dpid.encode(), orjson.dumps(dpos.body(dpid)))] * N_DUP_POSITIONS
        )
        fut = []
        self.future_pids = set(pids[N_OLD_POSITIONS + 1 : N_OLD_POSITIONS + 1 + N_FUTURE_POSITIONS])
        for pid in pids[N_OLD_POSITIONS + 1 : N_OLD_POSITIONS + 1 + N_FUTURE_POSITIONS]:
            pos = book.positions[pid]
            assert pos is not None
            f = PositionView(pos.asset, pos.size * 100, pos.entry, now + FUTURE_MS, 1.0)
            fut.append((pid.encode(), orjson.dumps(f.body(pid))))
        for md in await producer.send_many(topics.positions, fut):
            self.future_offsets.append((md.topic, md.partition, md.offset))

    def table_problems(self, rows: list[dict[str, Any]]) -> dict[str, str]:
        """Where the engine's table differs from the newest accepted version of everything."""
        book = self.stream.book
        wrong = {}
        for r in rows:
            pos = book.positions[r["position_id"]]
            assert pos is not None
            m = book.markets[pos.asset]
            if (r["size"], r["position_ts"], r["tick_ts"]) != (pos.size, pos.ts, m.ts):
                wrong[r["position_id"]] = (
                    f"holds size {r['size']} ts {r['position_ts']} tick {r['tick_ts']}; "
                    f"newest is size {pos.size} ts {pos.ts} tick {m.ts}"
                )
        assert len(rows) == len(book.positions)
        return wrong

    def check_table(self, rows: list[dict[str, Any]]) -> None:
        wrong = self.table_problems(rows)
        assert not wrong, "\n".join(f"{k}: {v}" for k, v in list(wrong.items())[:10])


async def _setup(
    bootstrap: str, tmp_path: Path
) -> tuple[Topics, SyntheticStream, EngineProcess, Scenario]:
    topics = Topics.new()
    await topics.create(bootstrap)
    stream = SyntheticStream(StreamShape(positions=40, assets=4, ticks=0, seed=5), topics)
    engine = EngineProcess(bootstrap, topics, tmp_path, name="engine").start()
    await engine.wait_ready()
    async with Producer(bootstrap) as producer:
        await stream.open_book(producer)
    await engine.wait_caught_up(timeout=30)
    scenario = Scenario(stream)
    async with Producer(bootstrap) as producer:
        await scenario.send(producer, topics)
    await engine.wait_caught_up(timeout=30)
    return topics, stream, engine, scenario


async def test_newer_state_wins_and_every_case_is_counted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Live, then after a restart (the rebuild reads every version of every position)."""
    topics, stream, engine, scenario = await _setup(kafka_bootstrap, tmp_path)
    again = EngineProcess(kafka_bootstrap, topics, tmp_path, name="engine-again")
    try:
        scenario.check_table(await engine.positions())
        m = await engine.metrics()
        counted = {
            "future": m.total("stream_risk_out_of_order_total", kind="future"),
            "old_ticks": m.total("stream_risk_out_of_order_total", kind="tick"),
            "old_positions": m.total("stream_risk_out_of_order_total", kind="position"),
            "dup_ticks": m.total("stream_risk_duplicates_total", kind="tick"),
            "dup_positions": m.total("stream_risk_duplicates_total", kind="position"),
        }
        assert counted == {
            "future": N_FUTURE_TICKS + N_FUTURE_POSITIONS,
            "old_ticks": N_OLD_TICKS,
            "old_positions": N_OLD_POSITIONS,
            "dup_ticks": N_DUP_TICKS,
            "dup_positions": N_DUP_POSITIONS,
        }
        # Future records are dead-lettered, saying why; nothing else is.
        dlq = await read_all(kafka_bootstrap, topics.dlq)
        got = {
            (h["source_topic"], int(h["source_partition"]), int(h["source_offset"])): h
            for h in map(headers_of, dlq)
        }
        assert set(got) == set(scenario.future_offsets)
        assert all("ahead of now" in h["error"] for h in got.values())
        # And every action on the topic agrees with the newest state.
        latest = latest_by_key(await read_all(kafka_bootstrap, topics.actions))
        counts = stream.book.check_latest(latest)
        report("clock and order", **counted, dlq=len(dlq), **counts)

        # An out-of-order update that is also invalid (a config override breaking a
        # cross-field rule) is bad input: it belongs in the DLQ, like every invalid record.
        pid = stream.pids[-1]
        pos = stream.book.positions[pid]
        assert pos is not None
        bad_config = {"fast_re_eval_score": 10, "medium_re_eval_score": 50}
        stale = {**pos.body(pid), "ts": pos.ts - 1, "config": bad_config}
        async with Producer(kafka_bootstrap) as producer:
            (md,) = await producer.send_many(
                topics.positions, [(pid.encode(), orjson.dumps(stale))]
            )
        await engine.wait_caught_up(timeout=30)
        dlq = await read_all(kafka_bootstrap, topics.dlq)
        sources = {
            (h["source_topic"], int(h["source_partition"]), int(h["source_offset"]))
            for h in map(headers_of, dlq)
        }
        assert (md.topic, md.partition, md.offset) in sources, (
            "a stale position update with an invalid config override must be dead-lettered, "
            "not dropped as out of order"
        )

        # Restart: the rebuild reads every version; the newest accepted one must win again.
        assert engine.terminate() == 0
        again.start()
        await again.wait_ready()
        await again.wait_caught_up(timeout=30)
        wrong = scenario.table_problems(await again.positions())
        # Updates refused live for a future ts must be refused by the rebuild too.
        assert not wrong, f"after a restart: {wrong}"
        assert again.terminate() == 0
    finally:
        engine.cleanup()
        again.cleanup()
