"""Fault-tolerance tests (issue 8): crash, scale-out, broker outage, bad input, clock and
order, backpressure, security. Each runs the engine as a real `stream-risk run` process
against a real broker; `support.py` holds the shared pieces. The long variants are marked
`soak` and run only under `pytest -m soak` (`make soak`)."""
