"""The one stop event every part of a run watches (`asyncio.Event`): a sleep it cuts short,
and the signals (SIGINT, SIGTERM) that set it. Shared by the demo's run and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable


async def wait_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def add_stop_signals(
    loop: asyncio.AbstractEventLoop,
    on_signal: Callable[[], None],
    installed: list[signal.Signals],
) -> None:
    """SIGINT and SIGTERM call `on_signal`, where the loop takes signal handlers (again after
    someone removed them); each one installed is in `installed`, once."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            if sig not in installed:
                installed.append(sig)


def remove_stop_signals(loop: asyncio.AbstractEventLoop, installed: list[signal.Signals]) -> None:
    for sig in installed:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
