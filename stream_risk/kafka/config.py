"""The Kafka shell's settings (`ProcessorConfig`) and what its parts share.

The shell (DESIGN §4) is split like Quix Streams' application:

- `kafka/app.py`: `StreamProcessor`, its lifecycle and main loop;
- `kafka/recovery.py`: rebalancing, the rebuild of a partition's state, the start-up reads
  of `risk-config` and `market-ticks`;
- `kafka/publisher.py`: producing actions and dead letters, and checkpoints;
- `kafka/alerts.py`: publishing what the alert rules return (risk-alerts, the webhook);
- `kafka/health.py`: the health loop, stall checks and the readiness reasons;
- `kafka/clients.py`, `kafka/fetch.py`, `kafka/codec.py`: clients, guarded reads, codecs.
- `kafka/base.py`: `ShellState`, the state and helpers these parts share.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

from stream_risk.settings import DEFAULT_COMPRESSION


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


#: Collector thresholds while a processor runs (CPython's default: 700, 10, 10).
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Collect garbage the way a stream processor allocates it (docs/design.md D8).

    Every batch allocates tens of thousands of short-lived objects (records, events, action
    dicts) that reference counting frees when the batch is done. With CPython's default
    thresholds the collector runs every 700 allocations, promotes the live batch to the old
    generations and then re-scans the whole table there: a third of the CPU at 40k ticks/s,
    and full-heap pauses that grow with the table. A young threshold above a batch's
    allocations lets them die first; the table itself is frozen after each rebuild
    (`gc.freeze`), so full collections never walk it. Process-wide: it is the engine's
    process (`ProcessorConfig.tune_gc=False` leaves the collector alone).
    """
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass
class ProcessorConfig:
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "stream-risk"
    client_id: str = "stream-risk"
    positions_topic: str = "positions"
    ticks_topic: str = "market-ticks"
    actions_topic: str = "risk-actions"
    dlq_topic: str = "risk-dlq"
    #: Live limits (docs/design.md D9): read in full by every instance. None: not used.
    config_topic: str | None = "risk-config"
    #: Alerts (fired / cleared). None: not published.
    alerts_topic: str | None = "risk-alerts"
    #: One book across instances (D17): the contributions' internal topic and the net
    #: position per asset. The book stage runs when both are set and exist; None (the
    #: default here; the CLI's settings name them): each instance shows its own positions.
    book_partials_topic: str | None = None
    book_topic: str | None = None
    #: How often the book stage looks for ticks of its assets, stale markets and the
    #: book's limits (contributions are aggregated as they arrive).
    book_interval_s: float = 0.1
    create_topics: bool = False
    #: "auto": idempotent producer if the broker supports it; "on" / "off" force it.
    idempotence: str = "auto"
    tick_lookback_ms: int = 300_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    fetch_max_records: int = 10_000
    #: How long the broker may hold a fetch when there is nothing new. Tansu does not wake a
    #: waiting fetch when records arrive (measured: p50 tick -> action 90 ms at the 500 ms
    #: default, 15 ms at 10 ms), so keep it short; it costs one small request per wait.
    fetch_max_wait_ms: int = 10
    linger_ms: int = 2
    #: Checkpoints (docs/design.md D15): every this long, the records produced since the
    #: last one are awaited (acks) and then the positions offsets they came from committed.
    #: Bounds what a crash re-reads (at-least-once: duplicates, never a loss), not latency.
    commit_interval_ms: int = 100
    #: ... or once this many records are pending (backpressure: the acks bound memory).
    checkpoint_max_records: int = 10_000
    #: "exactly-once": a checkpoint's records and the positions offsets they came from
    #: commit in transactions (one transactional producer per positions partition, D19);
    #: "at-least-once": acks, then the offsets; "auto": exactly-once when the broker
    #: supports transactions, else at-least-once (one warning, a metric).
    processing_guarantee: str = "auto"
    #: The transactional ids are `<prefix>-<positions topic>-<partition>` (None: the group
    #: id): the same for every instance of one deployment, distinct between deployments.
    transactional_id_prefix: str | None = None
    #: Compression of every batch the engine produces (actions, dead letters, alerts):
    #: none, gzip, snappy, lz4 or zstd (docs/operations.md "Compression").
    compression: str = DEFAULT_COMPRESSION
    #: The producer's max_request_size (aiokafka's default). A dead letter that would not
    #: fit one request goes out with its value cut to `DLQ_VALUE_KEEP` bytes.
    max_request_size: int = 1 << 20
    health_interval_s: float = 2.0
    #: Tune the garbage collector for a stream processor (`tune_gc`): on by default.
    tune_gc: bool = True
    #: POST every alert to this URL (None: risk-alerts only).
    alert_webhook: str | None = None
    alert_webhook_timeout_s: float = 2.0
    alert_webhook_attempts: int = 3
    #: DLQ records in the last minute above which a `dlq_rate` alert fires.
    alert_dlq_per_minute: float = 10.0
    #: How often exposure limits, stale markets and the DLQ rate are checked.
    alert_interval_s: float = 0.25
    #: Per-asset exposure gauges in /metrics for at most this many assets (largest gross).
    exposure_metrics_assets: int = 50
    #: Extra aiokafka client settings (security: TLS, SASL).
    client_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def topics(self) -> list[str]:
        return [self.positions_topic, self.ticks_topic, self.actions_topic, self.dlq_topic]

    @property
    def control_topics(self) -> list[str]:
        """risk-config, risk-alerts and the book's topics: used when present (created under
        create_topics)."""
        return [
            t
            for t in (
                self.config_topic,
                self.alerts_topic,
                self.book_partials_topic,
                self.book_topic,
            )
            if t
        ]

    @property
    def book_group_id(self) -> str:
        """The consumer group of the book stage (owners of assets)."""
        return self.group_id + ".book"
