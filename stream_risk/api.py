"""The stateless `/assess` operation, shared by the HTTP sidecar and `stream-risk assess`.

Bytes in, a response dict out; invalid input raises `InvalidInput` carrying one entry per
bad field, in the shape both shells print.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import ValidationError

from stream_risk import __version__
from stream_risk.assessor import Assessment, assess
from stream_risk.config import DEFAULT_CONFIG, RiskConfig, patch_dict
from stream_risk.models import AssessRequest


class InvalidInput(Exception):
    """Input that cannot be assessed. `errors` name each bad field and what to do."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {"error": "invalid request", "detail": self.errors}


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as {field, message, type}, field as a dotted path."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "body"
        out.append({"field": field, "message": err["msg"], "type": err["type"]})
    return out


def parse_request(body: bytes | str) -> AssessRequest:
    """Validate a request body; raises InvalidInput naming the bad fields."""
    if not body or not body.strip():
        raise InvalidInput(
            [
                {
                    "field": "body",
                    "message": "empty body: send a JSON object "
                    '{"position": {...}, "market": {...}}',
                    "type": "missing",
                }
            ]
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        better = _field_errors_of_lenient_json(body)
        if better is not None:
            raise better from None
        raise InvalidInput(
            [{"field": "body", "message": f"not valid JSON: {exc}", "type": "json_invalid"}]
        ) from None
    try:
        req = AssessRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc)) from None
    if req.config is not None:
        request_config(req)  # the cross-field rules, checked against the defaults
    return req


def _field_errors_of_lenient_json(body: bytes | str) -> InvalidInput | None:
    """The field to name when a body is JSON but for a non-finite number (`NaN`,
    `Infinity`, `1e400`), which orjson rejects as a whole.

    The stdlib parser runs only on this error path and only to improve the message: a body
    orjson rejects is never accepted."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None  # no field to name: the body as a whole is not JSON
    try:
        AssessRequest.model_validate(data)
    except ValidationError as exc:
        err = InvalidInput(field_errors(exc))
    except RecursionError:
        return None
    else:
        return None  # valid only to the lenient parser: keep orjson's verdict
    try:
        orjson.dumps(err.body())  # field names come from the body: must be valid UTF-8
    except orjson.JSONEncodeError:
        return None
    return err


def request_config(req: AssessRequest, base: RiskConfig = DEFAULT_CONFIG) -> RiskConfig:
    """`base` with the request's overrides; raises InvalidInput on a cross-field conflict."""
    overrides = patch_dict(req.config)
    if not overrides:
        return base
    try:
        return base.merged(overrides)
    except ValidationError as exc:
        errors = field_errors(exc)
        for e in errors:
            e["field"] = "config" if e["field"] == "body" else f"config.{e['field']}"
        raise InvalidInput(errors) from None


def assess_args(req: AssessRequest, base: RiskConfig = DEFAULT_CONFIG) -> tuple[Any, ...]:
    """The positional arguments of `assess` for a validated request."""
    p, m = req.position, req.market
    return (
        p.size,
        p.entry_price,
        p.age_minutes,
        p.unrealized_pnl,
        m.current_price,
        m.volatility_1d,
        m.spot_spread_bps,
        m.perp_funding_rate,
        m.bid_depth_usd,
        m.ask_depth_usd,
        request_config(req, base),
        p.asset,
    )


def assess_request(req: AssessRequest, base: RiskConfig = DEFAULT_CONFIG) -> Assessment:
    return assess(*assess_args(req, base))


def response(a: Assessment, ts_ms: int) -> dict[str, Any]:
    """The `/assess` response body for an assessment made at wall time `ts_ms`."""
    out = a.to_dict()
    out["version"] = __version__
    out["ts_ms"] = ts_ms
    return out


def assess_body(body: bytes | str, ts_ms: int) -> tuple[Assessment, dict[str, Any]]:
    """Validate, assess and build the response in one call: `POST /assess` and
    `stream-risk assess` alike."""
    a = assess_request(parse_request(body))
    return a, response(a, ts_ms)
