"""The fast path gives the scalar path's output byte for byte (and the same engine counters),
on varied histories: several assets, gaps (timers), position updates, closes, asset changes,
per-position config, vol warm-up, duplicate ticks, dense stretches (scalar bursts), and the
fall-back case."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_risk.assessor import ACTIONS, assess
from stream_risk.config import DEFAULT_CONFIG, RiskConfig, RiskConfigPatch
from stream_risk.engine import Engine, EngineConfig
from stream_risk.models import PositionMessage
from stream_risk.replay import fastpath
from stream_risk.replay.fast_assess import INSTRUMENTS, assess_arrays
from stream_risk.replay.fastpath import run_fast
from stream_risk.replay.positions import PositionRecord
from stream_risk.replay.runner import ActionLog, Timeline, run_scalar
from stream_risk.replay.ticks import Ticks, ffill

from . import MIN, T0


# ---------------------------------------------------------------------- assess_arrays
def random_markets(rng: np.random.Generator, n: int) -> dict[str, Any]:
    vol = rng.choice([0.0, 0.04, 0.05, 0.08, 0.2], n)
    vol = np.where(rng.random(n) < 0.6, rng.uniform(0, 0.15, n), vol)
    return {
        "age_minutes": np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0, 900, n)),
        "price": 10 ** rng.uniform(-2, 5, n),
        "vol": vol,
        "spread": np.where(rng.random(n) < 0.1, rng.uniform(40, 120, n), rng.uniform(0, 8, n)),
        "funding": rng.choice([0.0, 0.02, -0.02, 0.3, -0.3, 3.0], n),
        "bid": 10 ** rng.uniform(4, 8, n),
        "ask": 10 ** rng.uniform(4, 8, n),
    }


@pytest.mark.parametrize("size", [12.5, -7.25, 0.0, 1e-3, -4e4])
@pytest.mark.parametrize(
    "cfg",
    [DEFAULT_CONFIG, RiskConfig(max_loss_pct=0.03, max_hedge_cost_bps=20, reduce_pct=0.0)],
)
def test_assess_arrays_equals_the_assessor_to_the_last_bit(size: float, cfg: RiskConfig) -> None:
    rng = np.random.default_rng(abs(hash((size, cfg.max_loss_pct))) % 2**32)
    m = random_markets(rng, 3000)
    arr = assess_arrays(
        size,
        m["age_minutes"],
        m["price"],
        m["vol"],
        m["spread"],
        m["funding"],
        m["bid"],
        m["ask"],
        cfg,
    )
    for i in range(3000):
        a = assess(
            size,
            100.0,
            float(m["age_minutes"][i]),
            None,
            float(m["price"][i]),
            float(m["vol"][i]),
            float(m["spread"][i]),
            float(m["funding"][i]),
            float(m["bid"][i]),
            float(m["ask"][i]),
            cfg,
        )
        assert float(arr.score[i]) == a.risk_score  # exact, not approx
        assert ACTIONS[int(arr.action[i])] == a.action
        assert float(arr.hedge_pct[i]) == a.hedge_pct
        assert INSTRUMENTS[int(arr.instrument[i])] == a.instrument
        assert int(arr.re_eval[i]) == a.re_evaluate_minutes
        assert float(arr.bps[i]) == a.full_hedge_bps


# ---------------------------------------------------------------------- histories
ASSETS = ("BTC", "ETH", "SOL")


def history(seed: int, n: int = 1500, gaps: float = 0.03, calm: bool = False) -> Timeline:
    """A seeded random history (see the module doc for what it mixes)."""
    rng = np.random.default_rng(seed)
    t = T0
    price = {a: 100.0 * (i + 1) for i, a in enumerate(ASSETS)}
    vol = {a: 0.03 for a in ASSETS}
    rows: list[tuple[int, int, float, float, float, float]] = []
    for _ in range(n):
        gap = int(rng.choice([0, 1000, MIN, MIN]))
        if rng.random() < gaps:
            gap = int(rng.integers(20, 400)) * MIN  # quiet: timers fire
        t += gap
        c = int(rng.integers(len(ASSETS)))
        a = ASSETS[c]
        price[a] *= float(np.exp(rng.normal(0, 0.004 if calm else 0.01)))
        if not calm and rng.random() < 0.05:
            vol[a] = float(rng.uniform(0.0, 0.12))
        v = vol[a] if rng.random() < 0.9 else np.nan
        spread = 3.0 if rng.random() < 0.97 else 80.0
        funding = float(rng.choice([0.0, 0.05, -0.05]))
        rows.append((c, t, price[a], v, spread, funding))
        if rng.random() < 0.01:
            rows.append(rows[-1])  # a duplicate delivery
    code = np.array([r[0] for r in rows], dtype=np.int32)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    vol_col = np.array([r[3] for r in rows])
    for c in range(len(ASSETS)):  # carry forward, as the loader does
        m = code == c
        starts = np.zeros(int(m.sum()), dtype=bool)
        starts[:1] = True
        vol_col[m] = ffill(vol_col[m], starts)
    vol_col[: int(rng.integers(0, 12))] = np.nan  # warm-up: markets incomplete at first
    depth = np.full(len(rows), 5e6)
    ticks = Ticks(
        "mem",
        list(ASSETS),
        code,
        ts,
        np.array([r[2] for r in rows]),
        vol_col,
        np.array([r[4] for r in rows]),
        np.array([r[5] for r in rows]),
        depth,
        depth * 2,
    )
    t_end = int(ts[-1])
    recs = []
    for j in range(int(rng.integers(3, 14))):
        pid = f"p{j % 5}"
        asset = ASSETS[int(rng.integers(len(ASSETS)))]
        at = int(rng.integers(T0 - MIN, t_end))
        if rng.random() < 0.15:
            recs.append(PositionRecord(pid, asset, at, None))
            continue
        cfg = (
            RiskConfigPatch(max_hold_minutes=120, max_hedge_cost_bps=30)
            if rng.random() < 0.3
            else None
        )
        msg = PositionMessage(
            position_id=pid,
            asset=asset,
            size=float(rng.choice([10, -3, 0, 0.5, 400])),
            entry_price=100.0,
            ts=at,
            age_minutes=float(rng.uniform(0, 300)),
            config=cfg,
            opened_at=at - 5 * MIN if rng.random() < 0.3 else None,
        )
        recs.append(PositionRecord(pid, asset, at, msg))
    return Timeline(ticks, recs, until=t_end + int(rng.integers(0, 600)) * MIN)


class Counting:
    """An ActionLog that also counts the calls into it (how many times the engine ran)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.log = ActionLog(self.buf)
        self.calls = 0

    def __call__(self, now: int, res: Any, engine: Engine) -> None:
        self.calls += 1
        self.log(now, res, engine)


def both(tl: Timeline, emit: str = "changed") -> tuple[Any, Any]:
    out = []
    for fast in (False, True):
        # Synthetic columns: NaN vol is "not known yet" (no estimate; tested below).
        engine = Engine(EngineConfig(emit=emit, vol=None))  # type: ignore[arg-type]
        sink = Counting()
        if fast:
            run_fast(tl, engine, sink)
        else:
            run_scalar(tl, [engine], [sink])
        out.append((sink.buf.getvalue(), engine.stats.as_dict(), sink.calls))
    return out[0], out[1]


@pytest.mark.parametrize("seed", range(24))
def test_fast_equals_scalar_byte_for_byte(seed: int) -> None:
    tl = history(seed, gaps=0.0 if seed % 3 == 0 else 0.03, calm=seed % 2 == 1)
    (s_bytes, s_stats, s_calls), (f_bytes, f_stats, f_calls) = both(tl)
    assert s_bytes.count(b"\n") > 20
    assert f_bytes == s_bytes
    assert f_stats == s_stats
    assert f_calls < s_calls  # and it did skip work


@pytest.mark.parametrize("seed", range(8))
def test_dense_stretches_run_as_scalar_bursts_with_the_same_output(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastpath, "_DENSE_POINTS", 4)
    monkeypatch.setattr(fastpath, "_BURST", 13)
    bursts = [0]
    original = fastpath._FastRun._burst

    def spy(self: Any, *args: Any) -> int:
        bursts[0] += 1
        return original(self, *args)

    monkeypatch.setattr(fastpath._FastRun, "_burst", spy)
    tl = history(100 + seed)
    (s_bytes, s_stats, _), (f_bytes, f_stats, _) = both(tl)
    assert bursts[0] > 0
    assert f_bytes == s_bytes and f_stats == s_stats


def test_emit_all_is_the_scalar_schedule() -> None:
    tl = history(7, n=400)
    (s_bytes, s_stats, _), (f_bytes, f_stats, _) = both(tl, emit="all")
    assert f_bytes == s_bytes and f_stats == s_stats


def test_a_timer_left_due_by_a_waiting_position_falls_back_to_scalar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # p1 is re-assessed by a tick at T0+30 (due T0+90). At exactly T0+90 it moves to ETH,
    # which has no market until T0+100: it waits, and its due timer is deferred (fired at
    # the next event time, by the scalar schedule, where it waits again).
    code = np.array([0, 0, 1, 0], dtype=np.int32)
    ts = np.array([T0, T0 + 30 * MIN, T0 + 100 * MIN, T0 + 120 * MIN], dtype=np.int64)
    ones = np.ones(4)
    ticks = Ticks(
        "mem",
        ["BTC", "ETH"],
        code,
        ts,
        np.array([100.0, 100.0, 50.0, 101.0]),
        ones * 0.05,
        ones * 3.0,
        ones * 0.0,
        ones * 5e6,
        ones * 5e6,
    )
    msg = PositionMessage(
        position_id="p1", asset="BTC", size=10, entry_price=100, ts=T0, age_minutes=60
    )
    moved = msg.model_copy(update={"asset": "ETH", "ts": T0 + 90 * MIN})
    recs = [PositionRecord("p1", "BTC", T0, msg), PositionRecord("p1", "ETH", T0 + 90 * MIN, moved)]
    tl = Timeline(ticks, recs, until=T0 + 600 * MIN)
    fell_back = [0]
    original = fastpath._FastRun._scalar_after

    def spy(self: Any, after: int) -> None:
        fell_back[0] += 1
        original(self, after)

    monkeypatch.setattr(fastpath._FastRun, "_scalar_after", spy)
    (s_bytes, s_stats, _), (f_bytes, f_stats, _) = both(tl)
    assert fell_back[0] == 1
    assert f_bytes == s_bytes and f_stats == s_stats
    assert s_stats["waiting"] == 2  # at the move, and when the deferred timer fired
    assert s_bytes.count(b"\n") >= 3


# ---------------------------------------------------------------------- property
TICK = st.tuples(
    st.integers(0, 1),  # asset
    st.sampled_from([0, 1000, MIN, MIN, 17 * MIN, 61 * MIN, 300 * MIN]),  # gap before it
    st.floats(-0.03, 0.03),  # log return
    st.sampled_from([None, 0.01, 0.045, 0.09]),  # a new vol, or carry
)
POSITION = st.tuples(
    st.integers(0, 2),  # id
    st.integers(0, 1),  # asset
    st.floats(0, 1),  # when, as a fraction of the span
    st.sampled_from([0.0, 5.0, -2.0, 300.0, None]),  # size (None = close)
    st.booleans(),  # a per-position config
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TICK, min_size=1, max_size=120), st.lists(POSITION, max_size=8))
def test_property_fast_equals_scalar(ticks: list[Any], positions: list[Any]) -> None:
    t = T0
    price = [100.0, 20.0]
    vol: list[float | None] = [None, 0.03]
    rows = []
    for asset, gap, ret, new_vol in ticks:
        t += gap
        price[asset] *= float(np.exp(ret))
        if new_vol is not None:
            vol[asset] = new_vol
        rows.append((asset, t, price[asset], vol[asset]))
    n = len(rows)
    ones = np.ones(n)
    vol_col = np.array([np.nan if r[3] is None else r[3] for r in rows])
    data = Ticks(
        "mem",
        ["A", "B"],
        np.array([r[0] for r in rows], dtype=np.int32),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows]),
        vol_col,
        ones * 4.0,
        ones * 0.05,
        ones * 1e6,
        ones * 1e6,
    )
    span = max(1, t - T0)
    recs = []
    for pid, asset, when, size, cfg in positions:
        at = T0 + int(when * span)
        name = "AB"[asset]
        if size is None:
            recs.append(PositionRecord(f"p{pid}", name, at, None))
            continue
        msg = PositionMessage(
            position_id=f"p{pid}",
            asset=name,
            size=size,
            entry_price=50.0,
            ts=at,
            age_minutes=30.0,
            config=RiskConfigPatch(max_hold_minutes=60) if cfg else None,
        )
        recs.append(PositionRecord(f"p{pid}", name, at, msg))
    tl = Timeline(data, recs, until=t + 500 * MIN)
    (s_bytes, s_stats, _), (f_bytes, f_stats, _) = both(tl)
    assert f_bytes == s_bytes
    assert f_stats == s_stats


@pytest.mark.parametrize("seed", range(4))
def test_fast_equals_scalar_with_the_engine_estimating_vol(seed: int, tmp_path: Any) -> None:
    """A price-only feed (irregular gaps, duplicates, a late first vol on one asset): the
    engine estimates vol itself on both paths; the fast path keeps its estimate in step
    (`AssetTicks.set_market`) and publishes the same bytes, estimated_inputs included."""
    from stream_risk.engine.estimates import VolEstimator
    from stream_risk.replay.positions import positions_from_specs
    from stream_risk.replay.ticks import load_ticks

    from . import write_jsonl

    rng = np.random.default_rng(100 + seed)
    t = T0
    price = {"BTC": 40_000.0, "ETH": 2_000.0}
    rows: list[dict[str, Any]] = []
    for i in range(1500):
        t += int(rng.choice([0, 1000, 20_000, MIN, 5 * MIN]))
        a = "BTC" if rng.random() < 0.6 else "ETH"
        price[a] *= float(np.exp(rng.normal(0, 0.003)))
        row: dict[str, Any] = {"asset": a, "ts": t, "current_price": price[a]}
        if a == "ETH" and i > 900:
            row["volatility_1d"] = 0.04  # the feed starts giving vol: it wins from here
        rows.append(row)
        if rng.random() < 0.01:
            rows.append(dict(row))  # a duplicate delivery
    path = write_jsonl(tmp_path / "ticks.jsonl", rows)
    est = VolEstimator(window=30, min_obs=10)
    ticks = load_ticks(path, vol=est)
    specs = ["b1=BTC:3@40000", "b2=BTC:-1.5@41000", "e1=ETH:40@2000"]
    tl = Timeline(ticks, positions_from_specs(specs, ticks), 0)
    out = []
    for fast in (False, True):
        engine = Engine(EngineConfig(vol=est))
        sink = Counting()
        (run_fast if fast else lambda tl, e, s: run_scalar(tl, [e], [s]))(tl, engine, sink)
        out.append((sink.buf.getvalue(), engine.stats.as_dict()))
    assert out[1] == out[0]
    lines = out[0][0].splitlines()
    assert len(lines) > 20
    import orjson

    acts = [orjson.loads(x) for x in lines]
    assert {tuple(a["estimated_inputs"]) for a in acts if a["asset"] == "BTC"} == {
        ("volatility_1d", "spot_spread_bps", "perp_funding_rate", "bid_depth_usd", "ask_depth_usd")
    }
    eth = [a["estimated_inputs"] for a in acts if a["asset"] == "ETH"]
    assert "volatility_1d" not in eth[-1]
