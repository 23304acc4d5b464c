"""Quieter logs (docs/design.md D20), set up by `stream_risk.cli.load_settings`.

- aiokafka's loggers log at WARNING and above, unless the log level is DEBUG (its INFO
  lines are group joins and metadata updates, noise for an operator).
- The start of the engine against a broker without idempotent producers (the embedded
  Tansu, `stream-risk broker`) made two aiokafka ERROR lines (InitProducerId refused), two
  INFO lines from the probes and two engine warnings that say the same thing. They become
  ONE warning saying what it means (`BrokerProbeFilter`); the rest go to DEBUG.

No stream_risk import here: `stream_risk.cli` imports this module.
"""

from __future__ import annotations

import logging
from typing import Final

#: aiokafka's ERROR on a producer start the broker refuses (the engine's probes make it).
INIT_PRODUCER_ID: Final = ("aiokafka.producer.sender", "Unexpected error during InitProducerId")
#: The probes' own INFO lines (stream_risk.kafka.topics).
PROBE_INFO: Final = (
    ("stream_risk.kafka.topics", "no transactional producer starts on"),
    ("stream_risk.kafka.topics", "idempotent producer does not start on"),
)
#: The engine's two warnings about the same cause (stream_risk.kafka.app).
NO_TRANSACTIONS: Final = ("stream_risk.engine", "the broker has no transactions")
NO_IDEMPOTENCE: Final = ("stream_risk.engine", "the broker refused an idempotent producer")

EXPLAINED: Final = (
    " [the broker refused InitProducerId, the start of an idempotent or transactional "
    "producer, as the embedded Tansu broker (`stream-risk broker`, the demo) always does: "
    "expected there, nothing to fix; use Apache Kafka (or Redpanda, MSK) for exactly-once]"
)


def _matches(record: logging.LogRecord, what: tuple[str, str]) -> bool:
    return record.name == what[0] and record.getMessage().startswith(what[1])


def _demote(record: logging.LogRecord) -> None:
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"


class BrokerProbeFilter(logging.Filter):
    """A logger filter (on the loggers named above): the first of the engine's two
    warnings passes with what it means appended, everything else about the refused
    InitProducerId is demoted to DEBUG (shown only at --log-level DEBUG)."""

    def __init__(self) -> None:
        super().__init__()
        self.warned = False

    def filter(self, record: logging.LogRecord) -> bool:
        if _matches(record, INIT_PRODUCER_ID) or any(_matches(record, p) for p in PROBE_INFO):
            _demote(record)
        elif _matches(record, NO_TRANSACTIONS) or _matches(record, NO_IDEMPOTENCE):
            if self.warned:
                _demote(record)
            else:
                self.warned = True
                record.msg, record.args = record.getMessage() + EXPLAINED, None
        return record.levelno >= logging.getLogger(record.name).getEffectiveLevel()


_FILTERED_LOGGERS: Final = (
    "aiokafka.producer.sender",
    "stream_risk.kafka.topics",
    "stream_risk.engine",
)


def quiet_kafka_logs(level: int) -> None:
    """aiokafka at WARNING unless `level` is DEBUG; the broker-probe filter installed once
    per process on the loggers it acts on."""
    debug = level <= logging.DEBUG
    logging.getLogger("aiokafka").setLevel(logging.NOTSET if debug else logging.WARNING)
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, BrokerProbeFilter) for f in logger.filters):
            logger.addFilter(_SHARED)


_SHARED: Final = BrokerProbeFilter()


def client_logs_off(level: int) -> None:
    """For the console commands, which report a broker they cannot reach themselves:
    aiokafka's own errors (e.g. "Unable connect") off, unless `level` is DEBUG."""
    if level > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
