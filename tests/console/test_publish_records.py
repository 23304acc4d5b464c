"""`stream-risk publish`'s parsing and validation, without a broker: which Kafka records a
file makes, and how a bad record is named."""

from __future__ import annotations

import orjson

from stream_risk.console.publish import (
    MARKET_TICKS,
    POSITIONS,
    RISK_CONFIG,
    Outgoing,
    prepare,
    split_records,
)

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_split_jsonl_array_and_single_object() -> None:
    jsonl = b'{"a": 1}\n\n{"a": 2}\n'
    records, bad = split_records(jsonl, "f.jsonl")
    assert bad == []
    assert records == [("f.jsonl, line 1", {"a": 1}), ("f.jsonl, line 3", {"a": 2})]

    records, bad = split_records(b'[{"a": 1}, {"a": 2}]', "f.json")
    assert records == [("f.json, record 1", {"a": 1}), ("f.json, record 2", {"a": 2})]

    pretty = b'{\n  "a": 1\n}\n'  # one object over several lines is one record
    records, bad = split_records(pretty, "f.json")
    assert records == [("f.json, line 1", {"a": 1})] and bad == []


def test_split_names_the_line_that_is_not_json() -> None:
    records, bad = split_records(b'{"a": 1}\n{"a": \n{"a": 3}\n', "f.jsonl")
    assert [w for w, _ in records] == ["f.jsonl, line 1", "f.jsonl, line 3"]
    assert len(bad) == 1 and bad[0].where == "f.jsonl, line 2"
    assert str(bad[0]).startswith("f.jsonl, line 2: not JSON")


def test_positions_key_is_the_id_and_the_value_the_position_without_it() -> None:
    records = [
        ("f, line 1", {"position_id": "p-1", "asset": "BTC", "size": 10, "entry_price": 65000}),
        ("f, line 2", {"asset": "ETH", "size": -2.5, "entry_price": 3000, "ts": 5}),
        ("f, line 3", {"position_id": "p-1", "close": True}),
    ]
    out, bad = prepare(POSITIONS, "positions", records, now_ms=NOW)
    assert bad == []
    assert out[0].key == b"p-1"
    assert orjson.loads(out[0].value or b"") == {
        "asset": "BTC",
        "size": 10,
        "entry_price": 65000,
        "ts": NOW,  # defaulted to now
    }
    # No position_id: keyed by the asset, as the engine defaults it; a given ts is kept.
    assert out[1].key == b"ETH"
    assert orjson.loads(out[1].value or b"")["ts"] == 5
    # A close is a tombstone keyed by the id.
    assert out[2] == Outgoing(b"p-1", None)


def test_bad_positions_name_the_field_and_nothing_is_kept_for_them() -> None:
    records = [
        ("f, line 1", {"position_id": "p-1", "asset": "BTC", "size": "ten", "entry_price": 1}),
        ("f, line 2", {"asset": "BTC", "size": 1, "entry_price": 0}),
        ("f, line 3", {"asset": "BTC", "size": 1, "entry_price": 1, "colour": "red"}),
        ("f, line 4", {"position_id": "p-1", "close": True, "size": 0}),
        ("f, line 5", [1, 2]),
    ]
    out, bad = prepare(POSITIONS, "positions", records, now_ms=NOW)
    assert out == []
    got = [(b.where, b.field) for b in bad]
    assert got == [
        ("f, line 1", "size"),
        ("f, line 2", "entry_price"),
        ("f, line 3", "colour"),
        ("f, line 4", "close"),
        ("f, line 5", ""),
    ]
    assert "greater than 0" in bad[1].message
    assert str(bad[0]).startswith("f, line 1: field size: ")


def test_ticks_are_keyed_by_asset_with_ts_defaulted() -> None:
    out, bad = prepare(
        MARKET_TICKS, "market-ticks", [("l1", {"asset": "BTC", "current_price": 64000})], now_ms=NOW
    )
    assert bad == []
    assert out[0].key == b"BTC"
    assert orjson.loads(out[0].value or b"") == {"asset": "BTC", "current_price": 64000, "ts": NOW}
    _, bad = prepare(
        MARKET_TICKS, "market-ticks", [("l1", {"asset": "BTC", "volatility_1d": 2})], now_ms=NOW
    )
    assert {(b.field) for b in bad} == {"current_price", "volatility_1d"}


def test_risk_config_scope_records_and_key_flag() -> None:
    records = [
        ("l1", {"scope": "asset:BTC", "value": {"max_loss_pct": 0.025}}),
        ("l2", {"scope": "global", "value": None, "ts": 1000}),
    ]
    out, bad = prepare(RISK_CONFIG, "risk-config", records, now_ms=NOW)
    assert bad == []
    assert out == [
        Outgoing(b"asset:BTC", b'{"max_loss_pct":0.025}', None),
        Outgoing(b"global", None, 1000),
    ]
    out, bad = prepare(
        RISK_CONFIG,
        "risk-config",
        [("l1", {"max_net_notional_usd": 5e6})],
        now_ms=NOW,
        key="asset:ETH",
    )
    assert bad == [] and out == [Outgoing(b"asset:ETH", b'{"max_net_notional_usd":5000000.0}')]


def test_bad_risk_config_records() -> None:
    records = [
        ("l1", {"scope": "desk:1", "value": {}}),
        ("l2", {"scope": "global", "value": {"max_loss_pct": 7}}),
        ("l3", {"max_loss_pct": 0.1}),  # no scope and no --key
        ("l4", {"scope": "global", "value": {}, "owner": "me"}),
    ]
    out, bad = prepare(RISK_CONFIG, "risk-config", records, now_ms=NOW)
    assert out == []
    assert [(b.where, b.field) for b in bad] == [
        ("l1", "scope"),
        ("l2", "value.max_loss_pct"),
        ("l3", "scope"),
        ("l4", "owner"),
    ]
