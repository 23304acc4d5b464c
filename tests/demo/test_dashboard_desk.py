"""The desk's controls on the dashboard, in a real headless chromium 1400 px wide (issue 16,
part 3). Over a real `Engine` (no broker): the page fits without scrolling sideways; the
positions table has entry, mark and unrealised P&L; a risk-config limit below an asset's
net notional marks its card breached, with the limit drawn as a line on its bar, and
raising the limit lifts it; the latest alerts show as lines; the book card shows the book's
hedged P&L; one status element says one thing at a time ("reconnecting…" never beside
"engine ready"). Then the whole path on a real broker: the limit published on risk-config,
the alerts read back from risk-alerts.

Numbers by hand: BTC at 44,000: b1 +10 @ 45,000 hedged 50 %, b2 −4 @ 43,000 hedged 100 %:
net 6 BTC = $264,000; hedged, 10 × (1 − 0.5) + −4 × (1 − 1) = 5 BTC left = $220,000. ETH
at 2,000: e1 +5 @ 2,100 held: $10,000. P&L at −5 %: BTC −$13,200 as held, −$11,000
hedged; the book −$13,700 as held, −$11,500 hedged."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from kafka.engine_harness import BTC_MARKET, now_ms, produce, running
from kafka.engine_harness import config as kafka_config
from kafka.engine_harness import pos as kafka_pos
from kafka.engine_harness import tick as kafka_tick
from kafka.test_risk_config import send_config
from sidecar.test_positions_api import FULL, HOLD, PARTIAL, T0, configured, tick

from stream_risk.engine import ConfigEvent, Engine, Lineage
from stream_risk.sidecar import create_app
from stream_risk.state import EngineState

from .cdp import Chromium

pytestmark = pytest.mark.timeout(120)

CARD = "document.querySelector('#exposure .xcard[data-asset=\"{}\"]')"
STATUS = "document.getElementById('status')"
#: Nothing wider than the window, and the table does not scroll inside its box either.
FITS = (
    "document.documentElement.scrollWidth <= 1400 && "
    "document.querySelector('.table-wrap').scrollWidth <= "
    "document.querySelector('.table-wrap').clientWidth && "
    "[...document.querySelectorAll('#exposure .xcard, #exposure .xcard *')]"
    ".every(el => el.scrollWidth <= el.clientWidth + 1"
    " || getComputedStyle(el).display === 'inline')"
)


class WithAlerts(EngineState):
    """The engine's state with the alerts a processor would add (`risk-alerts`)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.recent: list[dict[str, Any]] = []

    def exposure_view(self) -> dict[str, Any]:
        view = super().exposure_view()
        active: dict[str, dict[str, Any]] = {}
        for a in self.recent:
            if a["state"] == "fired":
                active[a["key"]] = a
            else:
                active.pop(a["key"], None)
        view["alerts_active"] = [
            {"key": k, "kind": a["kind"], "details": a["details"]} for k, a in active.items()
        ]
        view["alerts_recent"] = list(self.recent)
        return view


def limit_alert(state: str, ts: int) -> dict[str, Any]:
    details = {"scope": "asset:BTC", "limit": "max_net_notional_usd", "limit_usd": 200_000.0}
    if state == "fired":
        details["value_usd"] = 264_000.0
    key = "limit:asset:BTC:max_net_notional_usd"
    return {"key": key, "kind": "exposure_limit", "state": state, "details": details, "ts": ts}


def limit(engine: Engine, usd: float, offset: int) -> None:
    """A risk-config record `asset:BTC` {"max_net_notional_usd": usd}, as the engine
    reads it off the topic."""
    lin = Lineage("risk-config", 0, offset, T0)
    engine.step([ConfigEvent("asset:BTC", {"max_net_notional_usd": usd}, lin, "test")], T0)


async def text(browser: Chromium, expression: str) -> str:
    value: str = await browser.evaluate(f"({expression}).innerText")
    return " ".join(value.split())


def cells(pid: str) -> str:
    return (
        f"[...document.querySelector('#rows tr[data-position-id=\"{pid}\"]').children]"
        ".map(td => td.innerText.split('\\n')[0].trim())"
    )


async def test_limits_breaches_columns_and_status_at_1400px() -> None:
    engine = Engine()
    engine.step(
        [
            tick("BTC", 44_000.0),
            tick("ETH", 2_000.0),
            configured("b1", "BTC", 10.0, 45_000.0, config=PARTIAL),
            configured("b2", "BTC", -4.0, 43_000.0, config=FULL),
            configured("e1", "ETH", 5.0, 2_100.0, config=HOLD),
        ],
        T0,
    )
    state = WithAlerts(engine)
    runner = web.AppRunner(create_app(state), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    btc = CARD.format("BTC")
    try:
        async with Chromium(1400, 900) as browser:
            await browser.navigate(url)
            await browser.wait_for(f"{btc} && {STATUS}.dataset.state === 'ready'", 10)
            assert await text(browser, STATUS) == "live · engine ready"
            # No limit yet: no limit bar, nothing breached.
            assert await browser.evaluate(f"{btc}.querySelector('.xlimit')") is None
            assert "No notional limits set" in await text(
                browser, "document.getElementById('desk')"
            )

            # The table: entry, mark and unrealised P&L (b1: 10 × (44,000 − 45,000)).
            await browser.wait_for(
                "!!document.querySelector('#rows tr[data-position-id=\"b1\"]')", 10
            )
            heads = await browser.evaluate(
                "[...document.querySelectorAll('#positions thead tr:last-child th')]"
                ".map(th => th.innerText.trim())"
            )
            assert heads[:6] == ["Position", "Size", "Entry", "Mark", "Notional", "Unreal. P&L"]
            row: list[Any] = await browser.evaluate(cells("b1"))
            assert row[:6] == ["b1", "10", "45,000.0", "44,000.0", "$440.0k", "−$10.0k"]
            assert (await browser.evaluate(cells("b2")))[5] == "−$4000"  # −4 × 1,000

            # The book's hedged P&L, as the engine gives it.
            book = await text(browser, CARD.format("Book") + ".querySelector('.xpnl')")
            assert book == "AS HELD HEDGED −5% −$13.7k −$11.5k +5% +$13.7k +$11.5k"
            assert await browser.evaluate(FITS) is True

            # A limit below BTC's net notional ($264k): breached, the line at the limit.
            limit(engine, 200_000.0, 0)
            fired_at = T0 + 3_723_000  # an hour, 2 min and 3 s after T0
            state.recent = [limit_alert("fired", fired_at)]
            await browser.wait_for(f"{btc}.dataset.breached === '1'", 10)
            assert await browser.evaluate(f"{btc}.classList.contains('breached')") is True
            mark = f"parseFloat({btc}.querySelector('.xlimit .mark').style.left)"
            fill = f"parseFloat({btc}.querySelector('.xlimit .fill').style.width)"
            # scale = max(264k, 200k) × 1.25 = 330k: the line at 200/330, the fill at 264/330.
            assert await browser.evaluate(mark) == pytest.approx(60.6, abs=0.05)
            assert await browser.evaluate(fill) == pytest.approx(80.0, abs=0.05)
            assert await text(browser, f"{btc}.querySelector('.xlimit-text')") == (
                "net ≤ $200.0k LIMIT BREACHED"
            )
            desk = await text(browser, "document.getElementById('desk')")
            assert "Limits: BTC net ≤ $200.0k" in desk
            assert "BREACH net notional limit BTC: $264.0k > $200.0k" in desk
            assert "1 active alert: net notional limit BTC" in desk
            await browser.wait_for("document.querySelectorAll('#alerts li').length === 1", 10)
            clock = await browser.evaluate(f"new Date({fired_at}).toTimeString().slice(0, 8)")
            assert await text(browser, "document.getElementById('alerts')") == (
                f"{clock} FIRED net notional limit BTC: $264.0k > $200.0k"
            )
            assert await browser.evaluate(f"{CARD.format('ETH')}.dataset.breached") is None
            assert await browser.evaluate(FITS) is True

            # Raised above it: lifted; the line moves to 1,000/1,250.
            limit(engine, 1_000_000.0, 1)
            state.recent.append(limit_alert("cleared", fired_at + 1000))
            await browser.wait_for(f"{btc} && !{btc}.dataset.breached", 10)
            assert await browser.evaluate(mark) == pytest.approx(80.0, abs=0.05)
            assert await browser.evaluate(fill) == pytest.approx(21.1, abs=0.05)  # 264/1,250
            assert await text(browser, f"{btc}.querySelector('.xlimit-text')") == (
                "net ≤ $1.00M within"
            )
            await browser.wait_for("document.querySelectorAll('#alerts li').length === 2", 10)
            lines = await browser.evaluate(
                "[...document.querySelectorAll('#alerts li')].map(li => li.innerText)"
            )
            assert lines[0].endswith(" CLEARED net notional limit BTC")  # newest first
            assert "no active alerts" in await text(browser, "document.getElementById('desk')")

            # The server goes: "reconnecting…" alone, never beside "engine ready".
            await runner.cleanup()
            await browser.wait_for(f"{STATUS}.dataset.state === 'reconnecting'", 10)
            assert await text(browser, STATUS) == "reconnecting…"
            assert (
                await browser.evaluate("document.querySelectorAll('.topbar .pill-ok').length") == 0
            )
            errors = [m for m in browser.console if m.startswith(("exception", "console.error"))]
            assert not errors
    finally:
        await runner.cleanup()


async def test_a_limit_published_on_risk_config_breaches_and_clears_on_the_page(
    kafka_bootstrap: str,
) -> None:
    """The whole path on a real broker: a limit record on risk-config, the engine, its
    alert on risk-alerts, GET /exposure, the page. BTC at 44,000, one position +10 @
    45,000: net $440,000. Limit $300,000: breached, FIRED; then $1,000,000: lifted,
    CLEARED."""
    cfg = kafka_config(kafka_bootstrap)
    t0 = now_ms()
    topic = cfg.config_topic
    btc = CARD.format("BTC")
    async with running(cfg) as proc:
        await produce(
            kafka_bootstrap, cfg.ticks_topic, [kafka_tick("BTC", t0, 44_000.0, **BTC_MARKET)]
        )
        await produce(
            kafka_bootstrap, cfg.positions_topic, [kafka_pos("b1", "BTC", 10, 45_000, t0)]
        )
        runner = web.AppRunner(create_app(proc), shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with Chromium(1400, 900) as browser:
                await browser.navigate(f"http://127.0.0.1:{runner.addresses[0][1]}/")
                await browser.wait_for(f"{btc} && !{btc}.querySelector('.xlimit')", 15)
                await send_config(kafka_bootstrap, topic, "asset:BTC",
                                  {"max_net_notional_usd": 300_000.0}, "desk")  # fmt: skip
                await browser.wait_for(f"{btc}.dataset.breached === '1'", 15)
                await browser.wait_for(
                    "document.getElementById('alerts').innerText.includes("
                    "'FIRED net notional limit BTC: $440.0k > $300.0k')",
                    15,
                )
                await send_config(kafka_bootstrap, topic, "asset:BTC",
                                  {"max_net_notional_usd": 1_000_000.0}, "desk")  # fmt: skip
                await browser.wait_for(f"{btc} && !{btc}.dataset.breached", 15)
                await browser.wait_for(
                    "document.querySelector('#alerts li').innerText"
                    ".endsWith('CLEARED net notional limit BTC')",
                    15,
                )
                assert await browser.evaluate(FITS) is True
        finally:
            await runner.cleanup()
