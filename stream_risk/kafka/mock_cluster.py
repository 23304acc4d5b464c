"""librdkafka's mock cluster, hosted in a process of its own (DESIGN §11, docs/design.md D18).

A second Kafka implementation on a machine without Docker or a JVM: the ``confluent-kafka``
wheel carries librdkafka, and librdkafka carries an in-memory Kafka cluster for its own
tests. It speaks the protocol on loopback, so aiokafka (and the engine) use it like any
broker, and unlike Tansu it supports the idempotent producer, transactions and
``read_committed``. It does not support CreateTopics (nor any admin request): topics are
made by the host, through librdkafka's C API (``rd_kafka_mock_topic_create``, which takes
the partition count), or by auto-creation on a metadata request (4 partitions).

Run it (a test fixture, a benchmark, by hand)::

    python -m stream_risk.kafka.mock_cluster [--brokers 1] [--info-file PATH]

It prints one JSON line, ``{"bootstrap": "127.0.0.1:PORT", "control": "http://127.0.0.1:PORT2",
"pid": N}`` (also written to ``--info-file``), then serves until SIGTERM/SIGINT. The control
endpoint (loopback HTTP, JSON bodies) makes what the Kafka protocol cannot:

- ``POST /topics`` ``{"topics": [{"name": "t", "partitions": 6, "replication_factor": 1}]}``
  -> ``{"created": [...], "existing": [...]}`` (an existing topic is left as it is);
- ``POST /brokers/<id>/down`` and ``/up``: the broker closes its connections and refuses
  new ones / accepts them again (a broker outage);
- ``POST /brokers/<id>/rtt`` ``{"ms": 50}``: added round-trip time on every response;
- ``POST /partitions/leader`` ``{"topic": "t", "partition": 0, "broker": 2}``: a leader
  election (-1: no leader);
- ``POST /groups/initial-rebalance-delay`` ``{"ms": 0}``;
- ``GET /``: the bootstrap and the cluster's brokers.

From Python, ``MockCluster`` starts and drives the host (``with MockCluster() as mock:``).
The cluster lives in the host's memory: stopping the host loses everything.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["MockCluster", "MockClusterError", "MockTopic", "load_librdkafka"]

#: librdkafka's default partition count for auto-created topics in the mock cluster.
AUTO_CREATE_PARTITIONS = 4
#: The mock's group coordinator waits this long for more members before the first
#: assignment (librdkafka's default is 3000 ms, Kafka's `group.initial.rebalance.delay.ms`);
#: the host sets it to this unless told otherwise.
DEFAULT_REBALANCE_DELAY_MS = 0
_ERR_TOPIC_ALREADY_EXISTS = 36


class MockClusterError(RuntimeError):
    """The mock cluster could not be started, reached, or refused a request."""


# ---------------------------------------------------------------------- librdkafka (ctypes)
def load_librdkafka() -> ctypes.CDLL:
    """The librdkafka shared library of the confluent-kafka wheel (or the system's)."""
    candidates: list[str] = []
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is not None and spec.origin is not None:
        site = Path(spec.origin).resolve().parent.parent
        candidates += [str(p) for p in sorted((site / "confluent_kafka.libs").glob("librdkafka*"))]
    found = ctypes.util.find_library("rdkafka")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "rd_kafka_mock_cluster_new"):
            return _declare(lib)
    raise MockClusterError(
        "librdkafka's mock cluster needs the confluent-kafka wheel (pip install confluent-kafka, "
        "part of stream-risk[dev]); looked in: " + (", ".join(candidates) or "nothing found")
    )


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    vp, cp, i32, i16 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int16
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "rd_kafka_version_str": (cp, []),
        "rd_kafka_conf_new": (vp, []),
        "rd_kafka_conf_set": (ctypes.c_int, [vp, cp, cp, cp, ctypes.c_size_t]),
        "rd_kafka_new": (vp, [ctypes.c_int, vp, cp, ctypes.c_size_t]),
        "rd_kafka_destroy": (None, [vp]),
        "rd_kafka_mock_cluster_new": (vp, [vp, ctypes.c_int]),
        "rd_kafka_mock_cluster_destroy": (None, [vp]),
        "rd_kafka_mock_cluster_bootstraps": (cp, [vp]),
        "rd_kafka_mock_topic_create": (ctypes.c_int, [vp, cp, ctypes.c_int, ctypes.c_int]),
        "rd_kafka_mock_broker_set_down": (ctypes.c_int, [vp, i32]),
        "rd_kafka_mock_broker_set_up": (ctypes.c_int, [vp, i32]),
        "rd_kafka_mock_broker_set_rtt": (ctypes.c_int, [vp, i32, ctypes.c_int]),
        "rd_kafka_mock_partition_set_leader": (ctypes.c_int, [vp, cp, i32, i32]),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [vp, i32]),
        "rd_kafka_err2str": (cp, [ctypes.c_int]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    del i16
    return lib


class _Cluster:
    """The mock cluster itself (in the host process): librdkafka through ctypes."""

    def __init__(self, brokers: int) -> None:
        lib = self.lib = load_librdkafka()
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        # A client handle that never connects anywhere: it only owns the cluster's thread.
        lib.rd_kafka_conf_set(conf, b"bootstrap.servers", b"", errstr, len(errstr))
        rk = lib.rd_kafka_new(0, conf, errstr, len(errstr))  # RD_KAFKA_PRODUCER
        if not rk:
            raise MockClusterError(f"rd_kafka_new failed: {errstr.value.decode()}")
        self.rk = rk
        self.mc = lib.rd_kafka_mock_cluster_new(rk, brokers)
        if not self.mc:
            raise MockClusterError("rd_kafka_mock_cluster_new failed")
        self.brokers = brokers
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self.mc).decode()
        self.version = lib.rd_kafka_version_str().decode()
        self._lock = threading.Lock()

    def _check(self, err: int, what: str) -> None:
        if err:
            raise MockClusterError(f"{what}: {self.lib.rd_kafka_err2str(err).decode()}")

    def create_topic(self, name: str, partitions: int, replication_factor: int) -> bool:
        """True if created, False if it existed."""
        with self._lock:
            err = self.lib.rd_kafka_mock_topic_create(
                self.mc, name.encode(), partitions, replication_factor
            )
        if err == _ERR_TOPIC_ALREADY_EXISTS:
            return False
        self._check(err, f"creating topic {name}")
        return True

    def broker(self, broker_id: int, state: str) -> None:
        fn = (
            self.lib.rd_kafka_mock_broker_set_down
            if state == "down"
            else self.lib.rd_kafka_mock_broker_set_up
        )
        self._check(fn(self.mc, broker_id), f"broker {broker_id} {state}")

    def rtt(self, broker_id: int, ms: int) -> None:
        self._check(self.lib.rd_kafka_mock_broker_set_rtt(self.mc, broker_id, ms), "rtt")

    def leader(self, topic: str, partition: int, broker_id: int) -> None:
        err = self.lib.rd_kafka_mock_partition_set_leader(
            self.mc, topic.encode(), partition, broker_id
        )
        self._check(err, f"leader of {topic}[{partition}]")

    def rebalance_delay(self, ms: int) -> None:
        self.lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self.mc, ms)

    def close(self) -> None:
        self.lib.rd_kafka_mock_cluster_destroy(self.mc)
        self.lib.rd_kafka_destroy(self.rk)


def _control_handler(cluster: _Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the owner reads the answers

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(
                200,
                {
                    "bootstrap": cluster.bootstrap,
                    "brokers": list(range(1, cluster.brokers + 1)),
                    "librdkafka": cluster.version,
                },
            )

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                self._reply(200, self._post(self.path.rstrip("/").split("/")[1:], body))
            except MockClusterError as exc:
                self._reply(409, {"error": str(exc)})
            except (KeyError, ValueError, TypeError) as exc:
                self._reply(400, {"error": f"bad request {self.path}: {exc!r}"})

        def _post(self, path: list[str], body: dict[str, Any]) -> dict[str, Any]:
            if path == ["topics"]:
                created: list[str] = []
                existing: list[str] = []
                for t in body["topics"]:
                    made = cluster.create_topic(
                        str(t["name"]), int(t["partitions"]), int(t.get("replication_factor", 1))
                    )
                    (created if made else existing).append(t["name"])
                return {"created": created, "existing": existing}
            if len(path) == 3 and path[0] == "brokers" and path[2] in ("down", "up"):
                cluster.broker(int(path[1]), path[2])
                return {"broker": int(path[1]), "state": path[2]}
            if len(path) == 3 and path[0] == "brokers" and path[2] == "rtt":
                cluster.rtt(int(path[1]), int(body["ms"]))
                return {"broker": int(path[1]), "rtt_ms": int(body["ms"])}
            if path == ["partitions", "leader"]:
                cluster.leader(str(body["topic"]), int(body["partition"]), int(body["broker"]))
                return {"ok": True}
            if path == ["groups", "initial-rebalance-delay"]:
                cluster.rebalance_delay(int(body["ms"]))
                return {"ok": True}
            raise ValueError("unknown path")

    return Handler


def serve(
    brokers: int = 1,
    info_file: str | None = None,
    rebalance_delay_ms: int = DEFAULT_REBALANCE_DELAY_MS,
    topics: Sequence[tuple[str, int]] = (),
) -> int:
    """Host the cluster until SIGTERM/SIGINT (the body of ``python -m ...mock_cluster``);
    `topics` (name, partitions) are made before the bootstrap is announced."""
    cluster = _Cluster(brokers)
    cluster.rebalance_delay(rebalance_delay_ms)
    for name, partitions in topics:
        cluster.create_topic(name, partitions, min(3, brokers))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _control_handler(cluster))
    server.daemon_threads = True
    info = {
        "bootstrap": cluster.bootstrap,
        "control": f"http://127.0.0.1:{server.server_address[1]}",
        "pid": os.getpid(),
        "librdkafka": cluster.version,
    }
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="control", daemon=True)
    thread.start()
    line = json.dumps(info)
    if info_file:
        tmp = f"{info_file}.tmp"
        Path(tmp).write_text(line + "\n")
        os.replace(tmp, info_file)  # the reader never sees half a file
    print(line, flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    cluster.close()
    return 0


# ---------------------------------------------------------------------- the owner's side
class MockTopic:
    """A topic to make: name, partitions, replication factor."""

    __slots__ = ("name", "partitions", "replication_factor")

    def __init__(self, name: str, partitions: int = 1, replication_factor: int = 1) -> None:
        self.name = name
        self.partitions = partitions
        self.replication_factor = replication_factor


class MockCluster:
    """A mock cluster host child process (see the module doc).

    Args:
        brokers: brokers in the cluster (ids 1..n, each on its own loopback port).
        log_path: where the host's stdout/stderr go (appended); default: a temp file.
        start_timeout: seconds to wait for the host's bootstrap line.
        rebalance_delay_ms: the group coordinator's initial rebalance delay (0 here:
            librdkafka's 3000 ms default would add 3 s to every first join).
    """

    def __init__(
        self,
        brokers: int = 1,
        *,
        log_path: str | os.PathLike[str] | None = None,
        start_timeout: float = 20.0,
        rebalance_delay_ms: int = DEFAULT_REBALANCE_DELAY_MS,
    ) -> None:
        self.brokers = brokers
        self._log_path = Path(log_path) if log_path is not None else None
        self._start_timeout = start_timeout
        self._rebalance_delay_ms = rebalance_delay_ms
        self._proc: subprocess.Popen[bytes] | None = None
        self._info: dict[str, Any] = {}
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            self._log_path = Path(tempfile.mkdtemp(prefix="stream-risk-mock-")) / "mock.log"
        return self._log_path

    @property
    def bootstrap_servers(self) -> str:
        if not self._info:
            raise MockClusterError("the mock cluster has not been started")
        return str(self._info["bootstrap"])

    @property
    def control_url(self) -> str:
        if not self._info:
            raise MockClusterError("the mock cluster has not been started")
        return str(self._info["control"])

    @property
    def librdkafka_version(self) -> str:
        return str(self._info.get("librdkafka", "?"))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the host and wait for its bootstrap (typically ~0.2 s)."""
        if self.running:
            return self
        info_file = self.log_path.with_suffix(f".{os.getpid()}.{id(self)}.json")
        with contextlib.suppress(FileNotFoundError):
            info_file.unlink()
        cmd = [
            sys.executable,
            "-m",
            "stream_risk.kafka.mock_cluster",
            "--brokers",
            str(self.brokers),
            "--info-file",
            str(info_file),
            "--rebalance-delay-ms",
            str(self._rebalance_delay_ms),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches only the owner
            )
        self._proc = proc
        self._finalizer = weakref.finalize(self, _kill, proc)
        deadline = time.monotonic() + self._start_timeout
        while True:
            if proc.poll() is not None:
                raise MockClusterError(
                    f"the mock cluster host exited with {proc.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                self._info = json.loads(info_file.read_text())
                break
            except (FileNotFoundError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise MockClusterError(
                    f"the mock cluster host gave no bootstrap in {self._start_timeout:g}s "
                    f"(log: {self.log_path})"
                )
            time.sleep(0.02)
        with contextlib.suppress(FileNotFoundError):
            info_file.unlink()
        return self

    def stop(self, grace: float = 5.0) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
        return proc.returncode

    # -------------------------------------------------------------- control
    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One control request (see the module doc); raises `MockClusterError` on refusal."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.control_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise MockClusterError(f"{method} {path}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MockClusterError(f"{method} {path}: the host does not answer: {exc}") from None

    def create_topics(self, topics: Iterable[MockTopic | tuple[str, int]]) -> list[str]:
        """Make topics with exactly the partitions asked (existing ones are left alone);
        returns those it created."""
        items = [t if isinstance(t, MockTopic) else MockTopic(*t) for t in topics]
        if not items:
            return []
        body = {
            "topics": [
                {
                    "name": t.name,
                    "partitions": t.partitions,
                    "replication_factor": min(t.replication_factor, self.brokers),
                }
                for t in items
            ]
        }
        created: list[str] = self.request("POST", "/topics", body)["created"]
        return created

    def broker_down(self, broker_id: int = 1) -> None:
        self.request("POST", f"/brokers/{broker_id}/down", {})

    def broker_up(self, broker_id: int = 1) -> None:
        self.request("POST", f"/brokers/{broker_id}/up", {})

    def set_rtt(self, ms: int, broker_id: int = 1) -> None:
        self.request("POST", f"/brokers/{broker_id}/rtt", {"ms": ms})

    def set_leader(self, topic: str, partition: int, broker_id: int) -> None:
        self.request(
            "POST",
            "/partitions/leader",
            {"topic": topic, "partition": partition, "broker": broker_id},
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._info.get("bootstrap", "not started")
        return f"<MockCluster {where} {'running' if self.running else 'stopped'}>"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stream_risk.kafka.mock_cluster",
        description="Host librdkafka's mock Kafka cluster until SIGTERM (docs/design.md D18).",
    )
    p.add_argument("--brokers", type=int, default=1, help="brokers in the cluster (1)")
    p.add_argument("--info-file", default=None, help="also write the JSON info line here")
    p.add_argument(
        "--rebalance-delay-ms",
        type=int,
        default=DEFAULT_REBALANCE_DELAY_MS,
        help="the group coordinator's initial rebalance delay (0; librdkafka's default: 3000)",
    )
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="NAME:PARTITIONS",
        help="a topic to make at start (repeatable)",
    )
    args = p.parse_args(argv)
    topics = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in args.topic]
    return serve(args.brokers, args.info_file, args.rebalance_delay_ms, topics)


if __name__ == "__main__":
    sys.exit(main())
