"""Two engines in one consumer group share the positions partitions, and hand them over."""

from __future__ import annotations

import time

import pytest

from stream_risk.kafka.app import StreamProcessor

from .engine_harness import (
    TopicReader,
    config,
    now_ms,
    pos,
    produce,
    running,
    tick,
    wait_for,
)

pytestmark = pytest.mark.broker

N = 60


def owned(proc: StreamProcessor) -> set[int]:
    return set(proc._live)


def ids(proc: StreamProcessor) -> set[str]:
    return {p["position_id"] for p in proc.positions()}


@pytest.mark.not_on_mock(
    "two members of one consumer group: after a rebalance the mock's group coordinator "
    "answers aiokafka's SyncGroup with INVALID_REQUEST (it is already in state Up) and "
    "aiokafka retries it until the join times out (D18)"
)
async def test_two_engines_split_the_partitions_and_hand_them_over(kafka_bootstrap: str) -> None:
    cfg = config(kafka_bootstrap)
    t0 = now_ms()
    market = {"volatility_1d": 0.03, "spot_spread_bps": 2}
    async with running(cfg) as a:
        await produce(
            kafka_bootstrap,
            cfg.positions_topic,
            [pos(f"p{i}", "ETH", 10 + i, 2500, t0) for i in range(N)],
        )
        await produce(kafka_bootstrap, cfg.ticks_topic, [tick("ETH", t0, 2400, **market)])
        await wait_for(
            lambda: (
                len(ids(a)) == N and all(p["next_evaluation_ts"] is not None for p in a.positions())
            ),
            "engine A holds and has assessed every position",
            a,
        )
        timers_before = {p["position_id"]: p["next_evaluation_ts"] for p in a.positions()}

        async with running(cfg) as b:
            # The group splits the six partitions 3 + 3; each position has exactly one owner.
            await wait_for(
                lambda: len(owned(a)) == 3 and len(owned(b)) == 3 and not a._pending,
                "a 3 + 3 split",
                b,
            )
            assert owned(a) | owned(b) == set(range(6))
            assert not owned(a) & owned(b)
            assert not ids(a) & ids(b)
            assert ids(a) | ids(b) == {f"p{i}" for i in range(N)}
            # B rebuilt its half with the timers the actions recorded: unchanged positions
            # were not re-assessed, so their next evaluation is the one A scheduled.
            for p in b.positions():
                assert p["next_evaluation_ts"] == timers_before[p["position_id"]]
            # A tick reaches every position, whoever owns it.
            async with TopicReader(kafka_bootstrap, cfg.actions_topic) as actions:
                await actions.until(lambda rs: len(rs) >= N, "first actions")
                before = len(actions.records)
                await produce(
                    kafka_bootstrap,
                    cfg.ticks_topic,
                    [tick("ETH", now_ms(), 2000, volatility_1d=0.09, spot_spread_bps=2)],
                )
                await actions.until(lambda rs: len(rs) >= before + N, "an action per position")
                fresh = actions.records[before:]
                assert {r.key.decode() for r in fresh} == {f"p{i}" for i in range(N)}
        # B stopped: A takes its partitions back, rebuilds them, and holds everything again.
        t_stop = time.monotonic()
        await wait_for(lambda: len(owned(a)) == 6 and not a._pending, "A owns all six", a)
        await wait_for(lambda: len(ids(a)) == N, "A holds every position again", a)
        assert time.monotonic() - t_stop < 20
        assert a.is_ready()[0]
        # Timers came back with the positions (from the actions B published).
        assert all(p["next_evaluation_ts"] is not None for p in a.positions())
        # B again: the partitions move back, and every position still has exactly one owner.
        async with running(cfg) as b2:
            await wait_for(
                lambda: len(owned(a)) == 3 and len(owned(b2)) == 3 and not a._pending,
                "a 3 + 3 split again",
                b2,
            )
            assert not ids(a) & ids(b2)
            assert ids(a) | ids(b2) == {f"p{i}" for i in range(N)}
