"""Producing (DESIGN §4): actions to `risk-actions`, dead letters to `risk-dlq`, alerts to
`risk-alerts` and the webhook (through `kafka/alerts.py`); the metrics and alert rules of
what was acknowledged.

Actions are produced to the positions partition of their position (co-partitioned), one
record batch per partition, acks=all, idempotent where the broker supports it.

Checkpoints (Quix Streams' model, docs/design.md D15): a step produces freely (`produce`)
and its records and the `positions` offsets it consumed stay pending; a checkpoint, every
`commit_interval_ms`, at `checkpoint_max_records` pending, and on revoke and stop, waits for
every pending ack (`flush`) and only then are the offsets committed (at-least-once). A failed
send or ack makes the checkpoint re-send every pending record, in order, with backoff, and
`/readyz` says why. A dead letter too big for one produce request goes out with its value
cut.

Exactly-once (`txns` set, docs/design.md D19): each record with a positions partition goes
out in that partition's open transaction (`kafka/transactions.py`), and a checkpoint, once
every pending record is acknowledged, commits each transaction with its partition's offset
instead of committing the offsets. A LIQUIDATE alert goes in the transaction of its
position's partition, made when its action is produced (not when acknowledged).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from stream_risk import alerting
from stream_risk.engine import StepResult
from stream_risk.engine.events import Output, Rejected
from stream_risk.kafka.alerts import AlertSender
from stream_risk.kafka.codec import DeadLetter
from stream_risk.kafka.config import ProcessorConfig, wall_ms
from stream_risk.kafka.transactions import Transactions
from stream_risk.metrics import Metrics

#: A record of a step besides its actions and dead letters: (topic, partition (-1: the
#: partitioner's choice), key, value, owner: the positions partition it comes from, -1
#: for none). The book's contributions (D17), LIQUIDATE alerts under exactly-once.
Extra = tuple[str, int, bytes, bytes | None, int]

log = logging.getLogger("stream_risk.engine")

#: Bytes of a value kept in a dead letter that would not fit one produce request whole.
DLQ_VALUE_KEEP = 64 * 1024


#: Backoff of the re-sends after a produce failure: first wait, and the longest.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


@dataclass(slots=True, eq=False)
class _Step:
    """What one step produced, and the acks it waits for."""

    outputs: list[Output]
    dead: list[DeadLetter]
    #: Other records of the step (`Extra`).
    extra: list[Extra]
    #: When its records were fetched (time.monotonic()); -1: not from a fetch.
    fetched: float
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    remaining: int = 0
    failed: bool = False
    #: Sends so far: the acks of an earlier send (before a re-send) are ignored.
    sends: int = 0
    #: Metrics and alerts of its records were counted (once, on their first full ack).
    accounted: bool = False


@dataclass(slots=True)
class _Checkpoint:
    """Everything produced since the last checkpoint, and the offsets it consumed."""

    steps: list[_Step] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    opened: float = field(default_factory=time.monotonic)


class Publisher:
    """What the processor produces, and the alert state of what it produced."""

    def __init__(self, cfg: ProcessorConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.producer: AIOKafkaProducer | None = None
        #: risk-actions has at least the partitions of positions (set at start).
        self.co_partitioned = True
        self.config_topic: str | None = None
        #: Alerts: the rules' state, risk-alerts and the webhook.
        self.alerts = AlertSender(cfg, metrics, lambda: self.producer)
        #: risk-config records dead-lettered (stream_risk_config_changes_total{rejected}).
        self.config_rejected = 0
        #: Why producing fails now (a /readyz reason), None while it works.
        self.failing: str | None = None
        self._children: dict[str, Any] = {}
        self._cp = _Checkpoint()
        #: The step sent last (the next one waits for its acks before it is sent).
        self._in_flight: _Step | None = None
        #: The send or ack failure the next checkpoint recovers from (re-sends everything).
        self._broken: BaseException | None = None
        #: Exactly-once: the per-partition transactions (None: at-least-once).
        self.txns: Transactions | None = None
        #: Partitions fenced since the processor last looked (`take_fenced`).
        self._fenced: set[int] = set()

    # ------------------------------------------------------------------ checkpoints
    @property
    def pending(self) -> int:
        """Records produced since the last checkpoint (acknowledged or not)."""
        return self._cp.records

    @property
    def idle(self) -> bool:
        """Nothing to checkpoint: no record produced, no offset consumed since the last."""
        return not self._cp.steps and not self._cp.offsets

    def due(self, now: float | None = None) -> bool:
        """Whether a checkpoint is due: `commit_interval_ms` since the first pending record,
        `checkpoint_max_records` pending (backpressure), or a produce failed."""
        cp = self._cp
        if self.idle:
            return False
        if self._broken is not None or cp.records >= self.cfg.checkpoint_max_records:
            return True
        t = time.monotonic() if now is None else now
        return t - cp.opened >= self.cfg.commit_interval_ms / 1000

    def seconds_to_due(self) -> float | None:
        """Seconds until a checkpoint is due (0: now), None with nothing pending."""
        cp = self._cp
        if self.idle:
            return None
        if self.due():
            return 0.0
        return max(0.0, cp.opened + self.cfg.commit_interval_ms / 1000 - time.monotonic())

    async def produce(
        self,
        res: StepResult,
        dead: list[DeadLetter],
        offsets: dict[TopicPartition, int] | None = None,
        fetched: float = -1.0,
        extra: list[Extra] | None = None,
    ) -> None:
        """Produce a step's actions and dead letters without waiting for their acks; they,
        and the `positions` offsets the step consumed, are pending until the next
        checkpoint (`flush`). `fetched`: when the step's records were fetched (monotonic),
        for `stream_risk_engine_latency_seconds`. Never raises a KafkaError: a failed send
        makes the next checkpoint re-send everything pending, in order."""
        cp = self._cp
        if not cp.steps and not cp.offsets:
            cp.opened = time.monotonic()
        if offsets:
            cp.offsets.update(offsets)
        if not res.outputs and not dead and not extra:
            return
        # A letter too big for one produce request fails the same way on every retry: it
        # would stall the engine (and re-send the batch's actions each second). It goes out
        # with its value cut, and its `error` header says so.
        dead = [fit_dead_letter(d, self.cfg.max_request_size) for d in dead]
        extra = list(extra or [])
        if self.txns is not None and self.alerts.topic is not None and res.outputs:
            # Exactly-once: a LIQUIDATE alert commits with the action that caused it.
            extra.extend(self._liquidate_alerts(res.outputs))
        step = _Step(res.outputs, dead, extra, fetched)
        cp.steps.append(step)
        cp.records += len(res.outputs) + len(dead) + len(step.extra)
        if self._broken is None:
            # At most one step in flight: aiokafka sends one request at a time to a broker
            # and queues one batch per partition behind it, so a step sent before the
            # previous one is acknowledged only waits in that queue (a stage of latency
            # more, measured: p50 +50 %). Waiting here instead costs nothing under load: a
            # step of a backlog takes longer to compute than the previous one's round trip.
            prev = self._in_flight
            if prev is not None:
                waiting = [f for f in prev.futures if not f.done()]
                if waiting:
                    await asyncio.wait(waiting)
            try:
                await self._send(step)
            except KafkaError as exc:
                self._broke(exc)
            self._in_flight = step

    async def flush(self, give_up_s: float | None = None) -> dict[TopicPartition, int] | None:
        """The ack half of a checkpoint: wait until every pending record is acknowledged,
        re-sending all of them in order (so the latest record per key stays last) with a
        backoff after a failure; then return the pending offsets, now safe to commit, and
        start the next checkpoint. None if `give_up_s` passed first (nothing is dropped:
        the records stay pending and the next checkpoint tries again)."""
        cp = self._cp
        t0 = time.monotonic()
        delay = RETRY_FIRST_S
        while True:
            if self._broken is None:
                futures = [f for step in cp.steps for f in step.futures]
                if futures:
                    left = None if give_up_s is None else give_up_s - (time.monotonic() - t0)
                    _, waiting = await asyncio.wait(futures, timeout=left)
                    if waiting:
                        return None
                error = next((_error(f) for f in futures if _error(f) is not None), None)
                if error is None:
                    if self.txns is None:
                        break
                    try:
                        self._fenced |= await self.txns.commit(cp.offsets, self.cfg.group_id)
                        break
                    except KafkaError as exc:  # every open transaction was aborted
                        error = exc
                self._broke(error)
            if give_up_s is not None and time.monotonic() - t0 + delay > give_up_s:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            self._broken = None
            try:
                for step in cp.steps:
                    await self._send(step)
            except KafkaError as exc:
                self._broke(exc)
        if self.failing is not None:
            log.info("publishing works again: %d pending records acknowledged", cp.records)
        self.failing = None
        self._cp = _Checkpoint()
        if self.txns is not None:
            # Committed with the transactions: nothing left for the consumer to commit.
            return {}
        return cp.offsets

    def take_fenced(self) -> set[int]:
        """Partitions found fenced (exactly-once) since the last call: another instance
        owns them; the processor drops their state."""
        fenced, self._fenced = self._fenced, set()
        return fenced

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget every pending record and offset of `partitions` (fenced: not ours)."""
        cp = self._cp
        cp.offsets = {tp: o for tp, o in cp.offsets.items() if tp.partition not in partitions}
        for step in cp.steps:
            step.outputs = [o for o in step.outputs if o.partition not in partitions]
            step.dead = [d for d in step.dead if _owner(d, self.cfg) not in partitions]
            step.extra = [e for e in step.extra if e[4] not in partitions]

    def drop_offsets(self, partitions: set[int]) -> None:
        """Forget the pending offsets of `partitions` (revoked: no longer ours to commit)."""
        cp = self._cp
        cp.offsets = {tp: o for tp, o in cp.offsets.items() if tp.partition not in partitions}

    def _broke(self, exc: BaseException) -> None:
        self._broken = exc
        self.failing = (
            f"publishing to the broker is failing (retrying with backoff, {self._cp.records} "
            f"records pending, offsets not committed): {type(exc).__name__}: {exc}"
        )
        log.warning("publishing failed, re-sending the pending records: %s", exc)

    async def _send(self, step: _Step) -> None:
        """Send a step's records; the step is accounted for once all are acknowledged."""
        producer = self.producer
        assert producer is not None
        cfg = self.cfg
        txns = self.txns
        if txns is None:
            futures = await self._send_actions(producer, step.outputs)
        else:
            futures = []
            by_part: dict[int, list[Output]] = {}
            for out in step.outputs:
                by_part.setdefault(out.partition, []).append(out)
            for part, outs in by_part.items():
                p = await txns.producer(part)
                if p is not None:  # else fenced or moved: not ours to publish
                    futures += await self._send_actions(p, outs)
        for d in step.dead:
            p = producer if txns is None else await self._owner_producer(_owner(d, cfg))
            if p is not None:
                futures.append(
                    await p.send(cfg.dlq_topic, value=d.value, key=d.key, headers=d.headers())
                )
        for topic, part, key, value, owner in step.extra:
            p = producer if txns is None else await self._owner_producer(owner)
            if p is not None:
                futures.append(
                    await p.send(topic, value=value, key=key, partition=None if part < 0 else part)
                )
        step.futures = futures
        step.remaining = len(futures)
        step.failed = False
        step.sends += 1
        if not futures:
            return
        done = functools.partial(self._on_ack, step, step.sends)
        for f in futures:
            f.add_done_callback(done)

    async def _owner_producer(self, owner: int) -> AIOKafkaProducer | None:
        """Exactly-once: the transaction of positions partition `owner`; a record of no
        partition (-1) goes out of the transactions, at-least-once (D19)."""
        assert self.txns is not None
        if owner < 0:
            return self.producer
        return await self.txns.producer(owner)

    def _liquidate_alerts(self, outputs: list[Output]) -> list[Extra]:
        """The LIQUIDATE transitions of `outputs`, as records of their positions'
        partitions (the alert rules' state moves now; counted, logged, sent to the
        webhook here too)."""
        topic = self.alerts.topic
        assert topic is not None
        fired = alerting.liquidate_transitions(self.alerts.tracker, outputs, wall_ms())
        if not fired:
            return []
        self.alerts.emit(fired, publish=False)
        part_of = {o.position_id: o.partition for o in outputs}
        return [
            (
                topic,
                -1,
                a["key"].encode(),
                orjson.dumps(a),
                part_of.get(a["details"].get("position_id", ""), -1),
            )
            for a in fired
        ]

    def _on_ack(self, step: _Step, send: int, fut: asyncio.Future[Any]) -> None:
        if send != step.sends:
            return  # an earlier send of a step re-sent since
        if fut.cancelled() or fut.exception() is not None:
            step.failed = True
        step.remaining -= 1
        if step.remaining == 0 and not step.failed and not step.accounted:
            step.accounted = True
            self._acked(step.outputs, step.dead, step.fetched)

    def _acked(self, outputs: list[Output], dead: list[DeadLetter], fetched: float) -> None:
        """Metrics, latency and LIQUIDATE alerts of records the broker acknowledged."""
        now = wall_ms()
        m = self.metrics
        if fetched >= 0 and outputs:
            # Every action of a step shares its records' fetch and its last ack.
            took = time.monotonic() - fetched
            observe_engine = m.engine_latency_seconds.observe
            for _ in outputs:
                observe_engine(took)
        by_action: Counter[str] = Counter()
        observe = m.tick_to_action_seconds.observe
        for out in outputs:
            action = out.action
            if action is None:
                by_action["TOMBSTONE"] += 1
                continue
            by_action[action] += 1
            ts = out.tick_lineage.timestamp_ms
            if ts > 0 and out.trigger == "tick":
                observe(max(0.0, (now - ts) / 1000))
        fired = (
            []  # exactly-once: made with the records (`_liquidate_alerts`)
            if self.txns is not None
            else alerting.liquidate_transitions(self.alerts.tracker, outputs, now)
        )
        children = self._children
        for action, n in by_action.items():
            child = children.get(action)
            if child is None:
                child = children[action] = m.actions_published.labels(action=action)
            child.inc(n)
        if fired:
            self.alerts.emit(fired)
        if dead:
            self.alerts.dead_lettered(len(dead))
        for d in dead:
            if d.lineage.topic == self.config_topic:
                self.config_rejected += 1
            m.dlq_records.labels(topic=d.lineage.topic, reason=d.kind).inc()
            log.warning(
                "DLQ %s[%d]@%d: %s",
                d.lineage.topic,
                d.lineage.partition,
                d.lineage.offset,
                d.reason,
            )

    async def _send_actions(
        self, producer: AIOKafkaProducer, outputs: list[Output]
    ) -> list[asyncio.Future[Any]]:
        """Queue `outputs` for `risk-actions`; the futures resolve once acknowledged.

        Co-partitioned actions go out as one record batch per partition, built here
        (`create_batch` / `send_batch`: a tenth of the cost of a `send` per record), in the
        order the core made them; the rest are keyed `send`s placed by the partitioner.
        """
        topic = self.cfg.actions_topic
        futures: list[asyncio.Future[Any]] = []
        builders: dict[int, Any] = {}
        co = self.co_partitioned
        for out in outputs:
            part = out.partition
            key = out.position_id.encode()
            if not co or part < 0:
                futures.append(await producer.send(topic, value=out.data, key=key))
                continue
            b = builders.get(part)
            if b is None:
                b = builders[part] = producer.create_batch()
            if b.append(timestamp=None, key=key, value=out.data) is None:
                # Full (max_batch_size): send it and start the next one.
                futures.append(await producer.send_batch(b, topic, partition=part))
                b = builders[part] = producer.create_batch()
                if b.append(timestamp=None, key=key, value=out.data) is None:
                    raise ValueError(f"action of {out.position_id!r} exceeds max_batch_size")
        for part, b in builders.items():
            b.close()  # complete: no linger, the sender takes it now
            futures.append(await producer.send_batch(b, topic, partition=part))
        return futures


def _error(fut: asyncio.Future[Any]) -> BaseException | None:
    if fut.cancelled():
        return asyncio.CancelledError("produce cancelled")
    return fut.exception()


def fit_dead_letter(d: DeadLetter, max_request_size: int) -> DeadLetter:
    """`d`, or `d` with its value cut to `DLQ_VALUE_KEEP` bytes if its record (with the
    DLQ headers, which the original did not carry) would exceed `max_request_size`."""
    if d.value is None:
        return d
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(d.key, d.value, d.headers())
    if size <= max_request_size:
        return d
    kept = d.value[:DLQ_VALUE_KEEP]
    return DeadLetter(
        f"{d.reason} [value cut from {len(d.value)} to {len(kept)} bytes to fit the DLQ]",
        d.kind,
        d.lineage,
        d.key,
        kept,
    )


def rejected_letters(
    rejected: list[Rejected], batches: Sequence[Sequence[Any]], first_new: int
) -> list[DeadLetter]:
    """Dead letters for records the core refused, with their original key and bytes."""
    if not rejected:
        return []
    by_lineage = {(r.topic, r.partition, r.offset): r for recs in batches for r in recs}
    out = []
    for rj in rejected:
        lin = rj.lineage
        if lin.offset < first_new:
            continue
        rec = by_lineage.get((lin.topic, lin.partition, lin.offset))
        out.append(
            DeadLetter(
                rj.reason,
                "rejected",
                rj.lineage,
                None if rec is None else rec.key,
                None if rec is None else rec.value,
            )
        )
    return out


def _owner(d: DeadLetter, cfg: ProcessorConfig) -> int:
    """The positions partition a dead letter comes from (-1: another topic's record)."""
    return d.lineage.partition if d.lineage.topic == cfg.positions_topic else -1
