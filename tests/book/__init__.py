"""Tests of the pure book package (`stream_risk.book`, DESIGN §13): no broker, no clock."""
