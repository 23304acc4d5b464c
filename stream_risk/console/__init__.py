"""Console commands for working with the topics by hand (docs/design.md D20):
`stream-risk broker` (a local embedded broker), `publish` (validated records onto
positions, market-ticks, risk-config) and `tail` (risk-actions, risk-alerts, risk-dlq as a
hedging bot sees them)."""
