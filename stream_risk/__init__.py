"""stream-risk: real-time inventory risk for market makers, as a Kafka stream processor."""

__version__ = "0.1.0"
