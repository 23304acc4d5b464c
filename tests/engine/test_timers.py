"""Re-evaluation timers: one per position, due at its last assessment + re_evaluate_minutes,
fired in event time (the `now` the caller passes), never after the position is gone."""

from __future__ import annotations

import pytest

from stream_risk.engine import Engine, EngineConfig

from . import MIN, T0, actions, close, only, position, price_tick, tick

approx = pytest.approx


def started(engine: Engine | None = None) -> Engine:
    """The worked example assessed at T0 (score 48.82, next due T0 + 60 min)."""
    engine = engine or Engine()
    res = engine.step([tick(), position()], T0)
    assert only(res)["next_evaluation_ts"] == T0 + 60 * MIN
    return engine


def test_position_with_no_ticks_is_reassessed_exactly_at_its_due_times() -> None:
    engine = started()
    # Only the age grows: 30 + age/480 × 20 + 15 + 1.32. From age 360 the score is ≥ 60
    # (HEDGE_FULL) and the cadence drops from 60 to 15 minutes.
    expected = [
        # (minutes after T0, age score, total, action, re_evaluate_minutes)
        (60, 5.0, 51.32, "HEDGE_PARTIAL", 60),
        (120, 7.5, 53.82, "HEDGE_PARTIAL", 60),
        (180, 10.0, 56.32, "HEDGE_PARTIAL", 60),
        (240, 12.5, 58.82, "HEDGE_PARTIAL", 60),
        (300, 15.0, 61.32, "HEDGE_FULL", 15),
        (315, 15.625, 61.945, "HEDGE_FULL", 15),
        (330, 16.25, 62.57, "HEDGE_FULL", 15),
    ]
    for minutes, age_score, total, action, re_eval in expected:
        due = T0 + minutes * MIN
        assert engine.next_due() == due
        early = engine.fire_timers(due - 1)
        assert early.outputs == [] and early.assessments == 0
        res = engine.fire_timers(due)
        assert res.assessments == 1
        v = only(res)
        assert v["trigger"] == "timer"
        assert v["event_ts"] == due
        assert v["tick_ts"] == T0 and v["position_ts"] == T0
        assert v["risk_breakdown"]["position_age"] == approx(age_score)
        assert v["risk_score"] == approx(total)
        assert v["action"] == action
        assert v["re_evaluate_minutes"] == re_eval
        assert v["next_evaluation_ts"] == due + re_eval * MIN
        assert v["stale_market_data"] is True  # the only tick is minutes old by now
        # Fired once: firing again at the same time does nothing.
        assert engine.fire_timers(due).outputs == []
    assert engine.stats.assessments == 1 + len(expected)


def test_replay_driven_by_next_due_visits_every_due_time_in_order() -> None:
    engine = started()
    engine.step([tick("ETH", price=3_000.0), position("p2", asset="ETH", size=0.0)], T0)
    # p1 every 60 minutes (then 15 from T0+300), the flat p2 every 240.
    seen: list[tuple[str, int]] = []
    horizon = T0 + 480 * MIN
    while (due := engine.next_due()) is not None and due <= horizon:
        for v in actions(engine.fire_timers(due)):
            seen.append((v["position_id"], (v["event_ts"] - T0) // MIN))
    p1 = [m for pid, m in seen if pid == "p1"]
    p2 = [m for pid, m in seen if pid == "p2"]
    assert p1 == [60, 120, 180, 240, 300, *range(315, 481, 15)]
    assert p2 == [240, 480]
    assert [m for _, m in seen] == sorted(m for _, m in seen)


def test_a_tick_reassesses_and_moves_the_timer() -> None:
    engine = started()
    res = engine.step([price_tick(ts=T0 + 30 * MIN)], T0 + 30 * MIN)
    assert res.assessments == 1
    # Age 90 at T0+30: 30 + 3.75 + 15 + 1.32 = 50.07 → still 60 minutes.
    assert engine.table.positions["p1"].next_due == T0 + 90 * MIN
    assert engine.fire_timers(T0 + 60 * MIN).outputs == []
    v = only(engine.fire_timers(T0 + 90 * MIN))
    assert v["event_ts"] == T0 + 90 * MIN
    assert v["risk_score"] == approx(30 + 150 / 480 * 20 + 15 + 1.32)  # age 150


def test_a_suppressed_assessment_still_moves_the_timer() -> None:
    engine = started()
    # Same market, one minute later: nothing material changed, nothing published.
    res = engine.step([price_tick(ts=T0 + MIN)], T0 + MIN)
    assert res.assessments == 1 and res.outputs == []
    assert engine.stats.suppressed == 1
    assert engine.next_due() == T0 + 61 * MIN


def test_step_fires_due_timers_after_applying_its_batch() -> None:
    engine = started()
    engine.step([position("p2", asset="ETH")], T0)  # waits: no ETH market
    res = engine.step([], T0 + 60 * MIN)
    assert only(res)["trigger"] == "timer"


def test_a_position_reassessed_by_its_batch_is_not_also_fired_by_its_old_timer() -> None:
    engine = started()
    # The batch arrives after the due time, carrying a tick of the position's asset.
    res = engine.step([price_tick(ts=T0 + 61 * MIN)], T0 + 61 * MIN)
    assert res.assessments == 1
    v = only(res)
    assert v["trigger"] == "tick"
    assert v["next_evaluation_ts"] == T0 + 121 * MIN


def test_timer_fires_once_when_reassessed_at_the_same_event_ts() -> None:
    """Regression: two assessments with the same event_ts scheduled the same due twice,
    and the timer then fired (and published) twice."""
    engine = Engine()
    engine.step([tick(), position(ts=T0 - 2000)], T0)
    # A newer version of the position, still older than the tick: event_ts stays T0.
    res = engine.step([position(ts=T0 - 1000, entry=45_001.0)], T0)
    assert res.assessments == 1
    assert engine.stats.out_of_order_positions == 0
    assert engine.table.positions["p1"].next_due == T0 + 60 * MIN
    res = engine.fire_timers(T0 + 60 * MIN)
    assert res.assessments == 1
    assert len(res.outputs) == 1
    assert engine.fire_timers(T0 + 120 * MIN).assessments == 1


def test_timer_publishes_even_when_nothing_changed() -> None:
    engine = Engine()  # emit "changed"
    engine.step([tick(), position(size=0.0)], T0)
    for k in (1, 2, 3):
        v = only(engine.fire_timers(T0 + k * 240 * MIN))
        assert (v["action"], v["risk_score"], v["trigger"]) == ("HOLD", 0.0, "timer")
    assert engine.stats.suppressed == 0


def test_no_timer_fires_for_a_closed_position() -> None:
    engine = started()
    res = engine.step([close()], T0 + MIN)
    assert [o.value for o in res.outputs] == [None]
    assert engine.next_due() is None
    assert engine.fire_timers(T0 + 10_000 * MIN).outputs == []
    assert engine.stats.assessments == 1


def test_reopened_position_does_not_inherit_the_old_timer() -> None:
    engine = started()
    engine.step([close()], T0 + MIN)
    # Reopened 10 minutes later with the same numbers: the first assessment publishes,
    # due 60 minutes after its own event_ts, not at the closed one's T0 + 60.
    res = engine.step([position(ts=T0 + 10 * MIN, age=0.0)], T0 + 10 * MIN)
    assert only(res)["next_evaluation_ts"] == T0 + 70 * MIN  # 30+0+15+1.32=46.32 → 60
    assert engine.fire_timers(T0 + 60 * MIN).outputs == []
    assert only(engine.fire_timers(T0 + 70 * MIN))["event_ts"] == T0 + 70 * MIN


def test_timer_of_a_position_moved_to_an_asset_without_market_publishes_nothing() -> None:
    engine = started()
    res = engine.step([position(asset="ETH", ts=T0 + MIN)], T0 + MIN)
    assert res.outputs == [] and res.assessments == 0
    res = engine.fire_timers(T0 + 60 * MIN)
    assert res.outputs == [] and res.assessments == 0
    assert engine.next_due() is None
    # Assessed again on ETH's first tick.
    res = engine.step([tick("ETH", T0 + 61 * MIN, 3_000.0)], T0 + 61 * MIN)
    assert only(res)["asset"] == "ETH"


def test_next_due_is_the_earliest_live_timer() -> None:
    engine = started()
    engine.step([position("p2", size=0.0)], T0)  # flat: 240 minutes
    assert engine.next_due() == T0 + 60 * MIN
    engine.step([close("p1")], T0)
    assert engine.next_due() == T0 + 240 * MIN


def test_timers_can_stay_pending_when_time_stands_still() -> None:
    engine = Engine(EngineConfig(emit="all"))
    engine.step([tick(), position()], T0)
    for _ in range(5):
        assert engine.fire_timers(T0 + 59 * MIN).outputs == []
    assert engine.next_due() == T0 + 60 * MIN


def test_a_long_overdue_timer_fires_once_as_of_now_less_the_lateness_bound() -> None:
    engine = started()
    # The process was away for 10 hours: the 60-minute timer missed ten periods. One
    # re-assessment, as of now − 60 s (max_timer_lateness_ms), not ten old-dated ones.
    now = T0 + 600 * MIN
    res = engine.fire_timers(now)
    assert res.assessments == 1
    v = only(res)
    assert v["trigger"] == "timer"
    as_of = now - 60_000
    assert v["event_ts"] == as_of
    # Age 60 + (as_of − T0) minutes, capped at 20 points: 30 + 20 + 15 + 1.32 = 66.32.
    assert v["risk_breakdown"]["position_age"] == 20.0
    assert v["risk_score"] == pytest.approx(30 + 20 + 15 + 1.32, rel=1e-9)
    # Score ≥ 60: the next one is due 15 minutes after it, and nothing else is due now.
    assert v["next_evaluation_ts"] == as_of + 15 * MIN
    assert engine.fire_timers(now).assessments == 0
    assert engine.next_due() == as_of + 15 * MIN


class _Pos:
    """A position as the timers see it."""

    def __init__(self, pid: str) -> None:
        self.position_id = pid
        self.next_due = -1
        self.timer_seq = -1
        self.timer_entry: tuple[int, int, str] | None = None


@pytest.mark.parametrize("seed", range(40))
def test_lazy_rescheduling_fires_as_one_entry_per_schedule_would(seed: int) -> None:
    """Timers push nothing when a timer moves later; the firing order must still be the
    order of (due, order of scheduling) over the timers current when they come due."""
    import random

    from stream_risk.engine.timers import Timers

    rnd = random.Random(seed)
    timers = Timers()
    positions: dict[str, _Pos] = {}
    # The reference: each id's current (due, order scheduled), kept apart from the timers.
    current: dict[str, tuple[int, int]] = {}
    order = 0
    now = 0
    for _ in range(400):
        r = rnd.random()
        pid = f"p{rnd.randrange(12)}"
        if r < 0.55:
            pos = positions.setdefault(pid, _Pos(pid))
            due = now + rnd.choice((1, 2, 3, 5, 8, 13)) * 10
            order += 1
            timers.schedule(pos, due)
            current[pid] = (due, order)
        elif r < 0.65 and pid in positions:
            positions[pid].next_due = -1  # cancelled (as the engine does)
            current.pop(pid, None)
        elif r < 0.72 and pid in positions:
            del positions[pid]  # closed: a new position may take the id again
            current.pop(pid, None)
        elif r < 0.8:
            expected = min((d for d, _ in current.values()), default=None)
            assert timers.next_due(positions.get) == expected
        else:
            now += rnd.choice((5, 10, 30))
            want = sorted((d, o, p) for p, (d, o) in current.items() if d <= now)
            got = timers.pop_due(now, positions.get)
            assert got == [(d, p) for d, _, p in want]
            for _, _, p in want:
                positions[p].next_due = -1  # fired: its assessment reschedules it, or not
                del current[p]
        if rnd.random() < 0.05:
            timers.compact(positions.get)
        # About one entry per position: never more than one per schedule.
        assert len(timers) <= order
