"""Quieter logs (D20): alerts in aggregate with a fake clock, and the refused
InitProducerId told once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from stream_risk.console.logs import EXPLAINED, BrokerProbeFilter
from stream_risk.kafka.alerts import AlertLog


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _alert(kind: str, state: str = "fired", key: str = "k") -> dict[str, Any]:
    return {"key": key, "kind": kind, "state": state, "details": {"x": 1}, "ts": 0}


@pytest.fixture
def records() -> tuple[logging.Logger, list[logging.LogRecord]]:
    logger = logging.getLogger("test.alertlog")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    logger.handlers = [Keep()]
    return logger, got


def test_first_of_each_kind_at_once_then_counts_per_interval(
    records: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, got = records
    clock = FakeClock()
    alog = AlertLog(logger, interval_s=10.0, clock=clock)

    alog.add(_alert("liquidate", key="liquidate:position:p-1"))
    assert len(got) == 1
    assert got[0].getMessage().startswith("alert liquidate:position:p-1 fired: {'x': 1}")

    clock.t += 1.0  # t = 1001: 412 more liquidations, 3 limit alerts (the first one logged)
    for _ in range(412):
        alog.add(_alert("liquidate"))
    alog.add(_alert("exposure_limit"))
    for _ in range(3):
        alog.add(_alert("exposure_limit"))
    alog.add(_alert("liquidate", "cleared"))
    assert len(got) == 2  # only the first limit alert so far: the interval has not passed
    assert alog.flush() is None

    clock.t = 1010.0  # 10 s after the start: the next add or flush logs the counts
    line = alog.flush()
    assert line == (
        "alerts in the last 9 s: 412 liquidate fired, 3 exposure_limit fired, "
        "1 liquidate cleared; each in full on risk-alerts"
    )
    assert [r.getMessage() for r in got[2:]] == [line]
    assert all(r.levelno == logging.WARNING for r in got)

    # Nothing counted: nothing logged, however long the wait.
    clock.t = 2000.0
    assert alog.flush() is None and len(got) == 3

    # The next window: at most one line per interval, however many alerts.
    alog.add(_alert("liquidate"))  # t = 2000 >= 1010 + 10: logged at once
    assert got[-1].getMessage().startswith("alerts in the last 0 s: 1 liquidate fired")
    for _ in range(50):
        clock.t += 0.1  # 5 s of alerts
        alog.add(_alert("liquidate"))
    assert len(got) == 4
    assert alog.flush(force=True) == (
        "alerts in the last 5 s: 50 liquidate fired; each in full on risk-alerts"
    )


def test_refused_init_producer_id_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    f = BrokerProbeFilter()
    names = ("aiokafka.producer.sender", "stream_risk.kafka.topics", "stream_risk.engine")
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(f)
    sender, topics, engine = loggers
    try:
        with caplog.at_level(logging.INFO):
            sender.error("Unexpected error during InitProducerIdRequest: %s", "UnknownError")
            topics.info("no transactional producer starts on %s: %r", "h:1", "UnknownError()")
            engine.warning("the broker %s: processing at-least-once", "has no transactions")
            sender.error("Unexpected error during InitProducerIdRequest: %s", "UnknownError")
            topics.info("idempotent producer does not start on %s: %r", "h:1", "UnknownError()")
            engine.warning("the broker refused an idempotent producer: plain acks=all")
            engine.warning("something else entirely")
        shown = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
        assert shown == [
            (
                "stream_risk.engine",
                "WARNING",
                "the broker has no transactions: processing at-least-once" + EXPLAINED,
            ),
            ("stream_risk.engine", "WARNING", "something else entirely"),
        ]
        caplog.clear()
        # At DEBUG everything is there (the demoted lines at DEBUG).
        g = BrokerProbeFilter()
        for lg in loggers:
            lg.removeFilter(f)
            lg.addFilter(g)
        with caplog.at_level(logging.DEBUG):
            sender.error("Unexpected error during InitProducerIdRequest: %s", "UnknownError")
            engine.warning("the broker refused an idempotent producer: plain acks=all")
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
            ("DEBUG", "Unexpected error during InitProducerIdRequest: UnknownError"),
            ("WARNING", "the broker refused an idempotent producer: plain acks=all" + EXPLAINED),
        ]
        f = g
    finally:
        for lg in loggers:
            lg.removeFilter(f)


def test_the_demo_keeps_the_alert_counts_off_its_screen() -> None:
    """The demo shows each alert itself (read from risk-alerts): its screen filter drops
    the engine's alert log lines, the counted ones included."""
    from stream_risk.demo.runner import _DropExpected
    from stream_risk.kafka.alerts import AlertLog

    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    logger = logging.getLogger("stream_risk.engine")
    handler = Keep()
    logger.addHandler(handler)
    try:
        alog = AlertLog(logger=logger, interval_s=0.0)
        alog.add(_alert("liquidate"))  # the first of its kind, in full
        alog.add(_alert("liquidate"))  # counted, logged at once (interval 0)
    finally:
        logger.removeHandler(handler)
    assert len(got) == 2
    assert got[1].getMessage().startswith("alerts in the last")
    assert not any(_DropExpected().filter(r) for r in got)
