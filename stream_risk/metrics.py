"""Prometheus metrics of the sidecar and the stream engine (DESIGN §5), on one registry.

Every metric is named `stream_risk_*` and lives on the `CollectorRegistry` it was made
with (never the global default), so a process, or a test, can hold many apps.
`Metrics.for_registry(registry)` returns the one `Metrics` of a registry, creating it on
first use: the engine and the sidecar of one process share it by sharing the registry.

Attribute → metric (counters gain `_total` in the exposition):

HTTP sidecar
    http_requests          stream_risk_http_requests_total{path,method,status}
    http_request_seconds   stream_risk_http_request_seconds{path}            histogram
    http_errors            stream_risk_http_errors_total{path,kind}
    assessments            stream_risk_assessments_total{source}   source = http | engine
    actions                stream_risk_actions_total{action}       every assessment's action
Stream engine (updated by the engine; declared here so /metrics shows them from the start;
the ones marked * are read from the engine's state when /metrics is scraped: `EngineView`,
`StateCollector` — nothing is synced per batch)
    records_consumed       stream_risk_records_consumed_total{topic}
    dlq_records            stream_risk_dlq_records_total{topic,reason}
    tick_to_action_seconds stream_risk_tick_to_action_seconds                histogram
    engine_latency_seconds stream_risk_engine_latency_seconds                histogram
                           engine-added latency: from the fetch that returned a record
                           (getmany) to the ack of its actions, one observation per action
    consumer_lag           stream_risk_consumer_lag{topic,partition}         gauge
    table_positions        stream_risk_table_positions                       gauge
    table_assets           stream_risk_table_assets                          gauge
    timers_pending         stream_risk_timers_pending                        gauge
    positions_waiting      stream_risk_positions_waiting{asset,missing}      gauge
                           positions that cannot be assessed yet (vol still warming
                           up, no tick yet ...); missing = the fields, comma-separated
    rebuild_seconds        stream_risk_rebuild_seconds                       histogram
    actions_published      stream_risk_actions_published_total{action}
    stale_market_data      stream_risk_stale_market_data_total
    out_of_order           stream_risk_out_of_order_total{kind}
    duplicates             stream_risk_duplicates_total{kind}
    idempotence_enabled    stream_risk_idempotence_enabled                   gauge 0/1
    processing_guarantee   stream_risk_processing_guarantee{guarantee}       gauge 0/1
    fenced                 stream_risk_fenced_total                          counter
    partitions_lost        stream_risk_partitions_lost_total                 counter
    transactions           stream_risk_transactions_total{outcome}           counter
    broker_connected       stream_risk_broker_connected                      gauge 0/1
    ready                  stream_risk_ready                                 gauge 0/1
    unreadable_batches     stream_risk_unreadable_batches_total{topic,partition}
                           failed reads of a record batch the engine cannot decode
                           (missing codec, bad CRC, corrupt payload); the partition is
                           held there and read again every second, so it rises ~1/s
Risk-desk controls (docs/design.md D9)
    config_changes         stream_risk_config_changes_total{status}  applied | rejected
    exposure_notional      stream_risk_exposure_notional_usd{scope,kind}     gauge
                           scope = asset:<ASSET> | book; kind = net | gross
    exposure_pnl           stream_risk_exposure_pnl_usd{scope,move}          gauge
                           move = down_5pct | down_2pct | up_2pct | up_5pct
    limit_breached         stream_risk_limit_breached{scope,limit}           gauge 0/1
    exposure_whole_book    stream_risk_exposure_whole_book                   gauge 0/1
                           1 when the exposure gauges are the whole book's (the book
                           stage runs: `scope: "book"`), 0 when they are this instance's
One book across instances (docs/design.md D17; only while the book stage runs)
    book_net_hedge_size    stream_risk_book_net_hedge_size{scope,instrument} gauge
                           the suggested hedge of an asset's net position, in units of
                           the asset (scope = asset:<ASSET>; instrument = spot_sell |
                           spot_buy | perp_short | perp_long, or none with 0 when the
                           net advice places no hedge)
    book_hedge_saving      stream_risk_book_hedge_saving_usd{scope}          gauge
                           what hedging the net saves against hedging each position
                           alone (spread + funding), per asset and for the book
    (the per-asset ones: the same 50 largest assets by gross as the exposure gauges)
    alerts                 stream_risk_alerts_total{kind,state}      state = fired | cleared
    alerts_active          stream_risk_alerts_active                         gauge
    alert_webhook          stream_risk_alert_webhook_total{result}
                           result = delivered | failed | dropped
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

PREFIX: Final = "stream_risk_"

#: Latency of one HTTP request inside the handler: 100 µs .. 1 s.
HTTP_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
#: Tick event time to the action it caused being acknowledged: 0.5 ms .. 5 s.
#: Engine-added latency (fetch -> ack): 100 µs .. 10 s, fine below 10 ms (the target: p99
#: <= 5 ms at 5k ticks/s).
ENGINE_LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
TICK_TO_ACTION_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
#: Rebuilding the positions table of newly assigned partitions: 10 ms .. 5 min.
REBUILD_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()

#: The stress moves of the exposure gauges' `move` label.
MOVES: Final = ("down_5pct", "down_2pct", "up_2pct", "up_5pct")


@dataclass(slots=True)
class EngineView:
    """What /metrics reads of a running engine when scraped (made by its `metrics_view`)."""

    table_positions: int = 0
    table_assets: int = 0
    timers_pending: int = 0
    broker_connected: bool = False
    ready: bool = False
    #: (topic, partition) -> records behind the high watermark.
    consumer_lag: Mapping[tuple[str, int], int] = field(default_factory=dict)
    #: `Engine.waiting()`: asset -> {"positions": n, "missing": [...], ...}.
    waiting: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The state's `exposure_view()` (assets, book, limits, breaches, `scope`: the whole
    #: book's when the book stage runs, with each asset's `net_advice` and `saving_usd`;
    #: else `Engine.book_exposure()`, this instance's); None: not computed.
    exposure: Mapping[str, Any] | None = None
    #: At most this many assets (largest gross) get exposure gauges (a bounded label set).
    exposure_assets: int = 50
    #: `Engine.stats.as_dict()`.
    stats: Mapping[str, int] = field(default_factory=dict)
    #: risk-config records dead-lettered (refused by the codec or rejected by the core).
    config_rejected: int = 0


class StateCollector(Collector):
    """The engine's state as metrics, read when scraped (prometheus-client's custom
    collector): gauges of the table, readiness, lag, waiting positions and exposure, and
    the core's own counters. Unbound (the stateless `serve`) every family is still
    declared, with zeros where it has no labels, so dashboards see them from the start."""

    def __init__(self) -> None:
        self._source: Callable[[], EngineView] | None = None

    def bind(self, source: Callable[[], EngineView] | None) -> None:
        self._source = source

    @property
    def bound(self) -> bool:
        return self._source is not None

    def collect(self) -> Iterator[Metric]:
        v = self._source() if self._source is not None else EngineView()
        p = PREFIX

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(p + name, doc, value=value)

        yield gauge("table_positions", "Open positions in the table.", v.table_positions)
        yield gauge("table_assets", "Assets with market data in the table.", v.table_assets)
        yield gauge("timers_pending", "Re-evaluation timers scheduled.", v.timers_pending)
        yield gauge("broker_connected", "1 while the broker is reachable.", v.broker_connected)
        yield gauge("ready", "1 while /readyz answers 200.", v.ready)
        lag = GaugeMetricFamily(
            p + "consumer_lag",
            "Records behind the partition's high watermark.",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in v.consumer_lag.items():
            lag.add_metric([topic, str(partition)], n)
        yield lag
        waiting = GaugeMetricFamily(
            p + "positions_waiting",
            "Positions that cannot be assessed yet, by asset and the market fields missing.",
            labels=["asset", "missing"],
        )
        top = sorted(v.waiting.items(), key=lambda kv: -kv[1]["positions"])
        for asset, w in top[: v.exposure_assets]:
            waiting.add_metric([asset, ",".join(w["missing"])], w["positions"])
        yield waiting
        yield from _exposure_families(v)
        st = v.stats

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(p + name, doc, labels=labels)

        ooo = counter(
            "out_of_order",
            "Records older than what the table already holds (ignored), by kind.",
            ["kind"],
        )
        dup = counter("duplicates", "Records already applied (redelivered), by kind.", ["kind"])
        for kind, o, d in (
            ("tick", "out_of_order_ticks", "duplicate_ticks"),
            ("position", "out_of_order_positions", "duplicate_positions"),
        ):
            ooo.add_metric([kind], st.get(o, 0))
            dup.add_metric([kind], st.get(d, 0))
        ooo.add_metric(["future"], st.get("future_records", 0))
        yield ooo
        yield dup
        yield CounterMetricFamily(
            p + "stale_market_data",
            "Assessments made with a tick older than max_tick_age.",
            value=st.get("stale_assessments", 0),
        )
        cfg = counter(
            "config_changes", "risk-config records applied or rejected (to the DLQ).", ["status"]
        )
        cfg.add_metric(["applied"], st.get("config_changes", 0))
        cfg.add_metric(["rejected"], v.config_rejected)
        yield cfg


def _exposure_families(v: EngineView) -> Iterator[Metric]:
    notional = GaugeMetricFamily(
        PREFIX + "exposure_notional_usd",
        "Net / gross notional at the latest price, per asset and for the book.",
        labels=["scope", "kind"],
    )
    pnl = GaugeMetricFamily(
        PREFIX + "exposure_pnl_usd",
        "P&L of the positions under each stress move, unhedged, per asset and book.",
        labels=["scope", "move"],
    )
    breached = GaugeMetricFamily(
        PREFIX + "limit_breached",
        "1 while a notional limit of risk-config is exceeded.",
        labels=["scope", "limit"],
    )
    whole = GaugeMetricFamily(
        PREFIX + "exposure_whole_book",
        "1 when the exposure gauges are the whole book's (the book stage runs), "
        "0 when they are this instance's positions only.",
        value=1 if v.exposure is not None and v.exposure.get("scope") == "book" else 0,
    )
    hedge = GaugeMetricFamily(
        PREFIX + "book_net_hedge_size",
        "The suggested hedge of an asset's net position across the whole book, in units "
        "of the asset, by instrument (none: the net advice places no hedge).",
        labels=["scope", "instrument"],
    )
    saving = GaugeMetricFamily(
        PREFIX + "book_hedge_saving_usd",
        "USD saved by hedging an asset's net position instead of each position alone "
        "(spread + funding), per asset and for the book.",
        labels=["scope"],
    )
    view = v.exposure
    if view is not None:
        top = sorted(view["assets"].items(), key=lambda kv: -kv[1]["gross_notional_usd"])
        rows = [("book", view["book"])] + [("asset:" + a, e) for a, e in top[: v.exposure_assets]]
        for scope, e in rows:
            for kind in ("net", "gross"):
                notional.add_metric([scope, kind], e[f"{kind}_notional_usd"])
            for move in MOVES:
                pnl.add_metric([scope, move], e[f"pnl_{move}"])
            if e.get("saving_usd") is not None:
                saving.add_metric([scope], e["saving_usd"])
            advice = e.get("net_advice")
            if advice is not None:
                h = advice.get("suggested_hedge")
                if h is None:
                    hedge.add_metric([scope, "none"], 0.0)
                else:
                    hedge.add_metric([scope, h["instrument"]], h["size"])
        hit = {(b["scope"], b["limit"]) for b in view["breaches"]}
        for scope, lim in view["limits"].items():
            for name in lim:
                breached.add_metric([scope, name], 1 if (scope, name) in hit else 0)
    yield notional
    yield pnl
    yield breached
    yield whole
    yield hedge
    yield saving


class Metrics:
    """All stream-risk metrics on one registry. Prefer `Metrics.for_registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry

        # ---------------------------------------------------------------- HTTP sidecar
        self.http_requests = Counter(
            PREFIX + "http_requests_total",
            "HTTP requests answered, by route, method and status.",
            ["path", "method", "status"],
            registry=r,
        )
        self.http_request_seconds = Histogram(
            PREFIX + "http_request_seconds",
            "Time to answer an HTTP request, inside the handler.",
            ["path"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.http_errors = Counter(
            PREFIX + "http_errors_total",
            "HTTP requests answered with an error, by route and kind "
            "(malformed, validation, too_large, not_found, method_not_allowed, book_stage_off, "
            "internal).",
            ["path", "kind"],
            registry=r,
        )
        self.assessments = Counter(
            PREFIX + "assessments_total",
            "Positions assessed, by source (http = POST /assess, engine = the stream).",
            ["source"],
            registry=r,
        )
        self.actions = Counter(
            PREFIX + "actions_total",
            "Assessments by the action they advised (all sources).",
            ["action"],
            registry=r,
        )

        # ---------------------------------------------------------------- stream engine
        self.records_consumed = Counter(
            PREFIX + "records_consumed_total",
            "Records consumed, by topic.",
            ["topic"],
            registry=r,
        )
        self.dlq_records = Counter(
            PREFIX + "dlq_records_total",
            "Records sent to the dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.tick_to_action_seconds = Histogram(
            PREFIX + "tick_to_action_seconds",
            "From a tick's arrival to the actions it caused being acknowledged by the broker.",
            buckets=TICK_TO_ACTION_BUCKETS,
            registry=r,
        )
        self.engine_latency_seconds = Histogram(
            PREFIX + "engine_latency_seconds",
            "Engine-added latency: from the fetch that returned a record to the broker's ack "
            "of the actions it caused (one observation per action).",
            buckets=ENGINE_LATENCY_BUCKETS,
            registry=r,
        )
        self.rebuild_seconds = Histogram(
            PREFIX + "rebuild_seconds",
            "Time to rebuild the positions table after a partition assignment.",
            buckets=REBUILD_BUCKETS,
            registry=r,
        )
        self.actions_published = Counter(
            PREFIX + "actions_published_total",
            "Risk actions published to the actions topic, by action.",
            ["action"],
            registry=r,
        )
        self.idempotence_enabled = Gauge(
            PREFIX + "idempotence_enabled",
            "1 when the producer runs idempotent, 0 when it fell back to plain acks=all.",
            registry=r,
        )
        self.processing_guarantee = Gauge(
            PREFIX + "processing_guarantee",
            "1 for the guarantee in force (exactly-once or at-least-once), 0 for the other.",
            ["guarantee"],
            registry=r,
        )
        self.partitions_lost = Counter(
            PREFIX + "partitions_lost",
            "Positions partitions dropped because the group dropped this instance (session "
            "expired): their state and pending records were not published.",
            registry=r,
        )
        self.fenced = Counter(
            PREFIX + "fenced",
            "Partitions this instance lost to a newer owner's transactional producer "
            "(exactly-once: a zombie's records were refused).",
            registry=r,
        )
        self.transactions = Counter(
            PREFIX + "transactions",
            "Transactions ended, by outcome (committed / aborted).",
            ["outcome"],
            registry=r,
        )
        self.unreadable_batches = Counter(
            PREFIX + "unreadable_batches_total",
            "Failed reads of a record batch that cannot be decoded (missing codec, bad CRC, "
            "corrupt payload), by partition: the partition is held at that batch and read "
            "again every second (nothing is skipped).",
            ["topic", "partition"],
            registry=r,
        )
        self.alerts = Counter(
            PREFIX + "alerts",
            "Alerts published to risk-alerts.",
            ["kind", "state"],
            registry=r,
        )
        self.alerts_active = Gauge(
            PREFIX + "alerts_active", "Conditions currently alerting.", registry=r
        )
        self.alert_webhook = Counter(
            PREFIX + "alert_webhook",
            "Alert webhook deliveries: delivered, failed (all retries), dropped (queue full).",
            ["result"],
            registry=r,
        )

        #: The engine's state, read when scraped (`bind` a source: see StateCollector).
        self.state = StateCollector()
        r.register(self.state)

        # Children bound once: label lookup is the cost that matters on the hot path.
        self._http_children: dict[tuple[str, str, int], Counter] = {}
        self._seconds_children: dict[str, Histogram] = {}
        self._error_children: dict[tuple[str, str], Counter] = {}
        self._action_children: dict[str, Counter] = {}
        self.http_assessments = self.assessments.labels("http")
        self.engine_assessments = self.assessments.labels("engine")

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> Metrics:
        """The `Metrics` of `registry`, created on first use (one per registry)."""
        m = _BY_REGISTRY.get(registry)
        if m is None:
            m = _BY_REGISTRY[registry] = cls(registry)
        return m

    # ------------------------------------------------------------------ hot-path helpers
    def observe_http(self, path: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (path, method, status)
        c = self._http_children.get(key)
        if c is None:
            c = self._http_children[key] = self.http_requests.labels(path, method, str(status))
        c.inc()
        h = self._seconds_children.get(path)
        if h is None:
            h = self._seconds_children[path] = self.http_request_seconds.labels(path)
        h.observe(seconds)

    def http_error(self, path: str, kind: str) -> None:
        key = (path, kind)
        c = self._error_children.get(key)
        if c is None:
            c = self._error_children[key] = self.http_errors.labels(path, kind)
        c.inc()

    def action(self, action: str) -> None:
        """Count one assessment's action (any source)."""
        c = self._action_children.get(action)
        if c is None:
            c = self._action_children[action] = self.actions.labels(action)
        c.inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
