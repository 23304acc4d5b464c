"""A minimal Chrome DevTools Protocol client over aiohttp, for the real-browser tests.

    async with Chromium() as browser:
        await browser.navigate("http://127.0.0.1:8080/")
        rows = await browser.evaluate("document.querySelectorAll('tr').length")
        await browser.screenshot(Path("docs/dashboard.png"), 1600, 1000)

Runs Debian's `chromium` headless (`.ci/run` installs it where missing) in its own process
group with a throw-away profile, and drives it over the DevTools WebSocket. Why not
`--dump-dom --virtual-time-budget`: the page holds an open Server-Sent Events stream, and
virtual time does not advance while a fetch is pending, so that mode hangs until killed.

Also a script, to refresh the screenshot in the docs against a running demo:

    python tests/demo/cdp.py http://127.0.0.1:8080/ docs/dashboard.png [WIDTH HEIGHT WAIT_S]
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: The flags the tests run chromium with (no network beyond what the page asks for).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-allow-origins=*",
    "--hide-scrollbars",
)


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str:
    """The chromium executable, or a BrowserError saying how to install it."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError(
        "no chromium on PATH: install it (Debian/Ubuntu: apt-get install -y chromium; "
        ".ci/run does this) or set CHROMIUM=/path/to/chrome"
    )


class Chromium:
    """A headless chromium with one page, driven over CDP."""

    def __init__(self, width: int = 1600, height: int = 1000, start_timeout: float = 30.0) -> None:
        self.width = width
        self.height = height
        self.start_timeout = start_timeout
        self._profile = Path(tempfile.mkdtemp(prefix="stream-risk-chromium-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.console: list[str] = []  # console messages and exceptions of the page

    async def __aenter__(self) -> Chromium:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        binary = find_chromium()
        log = open(self._profile / "chromium.log", "wb")  # noqa: SIM115 - closed with the process
        self._proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self._proc.returncode}: {self._log()}")
            if time.monotonic() > deadline:
                raise BrowserError(f"chromium did not open its DevTools port: {self._log()}")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        target = None
        while target is None:
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            target = next((t for t in targets if t.get("type") == "page"), None)
            if target is None:
                if time.monotonic() > deadline:
                    raise BrowserError("chromium has no page target")
                await asyncio.sleep(0.05)
        self._ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _log(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self._profile / "chromium.log").read_text(errors="replace").splitlines()
            return "\n".join(line for line in lines[-15:] if "dbus" not in line)
        return "(no log)"

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = msg.json()
            fut = self._pending.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(data)
                continue
            method = data.get("method")
            params = data.get("params", {})
            if method == "Runtime.consoleAPICalled":
                args = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                self.console.append(f"console.{params.get('type')}: {' '.join(args)}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text")
                self.console.append(f"exception: {text}")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BrowserError("the DevTools connection closed"))

    async def send(self, method: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        """Call a CDP method; its `result` (raises BrowserError on a protocol error)."""
        if self._ws is None:
            raise BrowserError("not started")
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_json({"id": msg_id, "method": method, "params": params})
        data = await asyncio.wait_for(fut, timeout)
        if "error" in data:
            raise BrowserError(f"{method}: {data['error']}")
        result: dict[str, Any] = data.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression!r} threw: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    async def navigate(self, url: str, timeout: float = 20.0) -> None:
        """Open `url` and wait until the document has loaded."""
        await self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(BrowserError):
                state = await self.evaluate("document.readyState + ' ' + location.href")
                if state == f"complete {url}":
                    return
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not load within {timeout:g}s")
            await asyncio.sleep(0.05)

    async def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.evaluate(expression)
            if last:
                return last
            await asyncio.sleep(interval)
        raise BrowserError(f"{expression!r} still {last!r} after {timeout:g}s; {self.console}")

    async def screenshot(self, path: Path, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        res = await self.send("Page.captureScreenshot", **params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(res["data"]))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._session is not None:
            await self._session.close()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(self._profile, ignore_errors=True)


async def _screenshot(url: str, out: Path, width: int, height: int, wait_s: float) -> None:
    async with Chromium(width, height) as browser:
        await browser.navigate(url)
        await browser.wait_for("document.querySelectorAll('#rows tr[data-action]').length > 0")
        await asyncio.sleep(wait_s)  # let the feed fill and a few updates flash
        await browser.screenshot(out)
        print(f"wrote {out} ({width}x{height}); page console: {browser.console or 'clean'}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    w = int(sys.argv[3]) if len(sys.argv) > 3 else 1600
    h = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    wait = float(sys.argv[5]) if len(sys.argv) > 5 else 6.0
    asyncio.run(_screenshot(sys.argv[1], Path(sys.argv[2]), w, h, wait))
