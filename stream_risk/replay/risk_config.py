"""`--risk-config`: `risk-config` records from JSONL, validated as the live engine
validates the topic, to change configs mid-run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from stream_risk.config import SCOPE_FORMS, RiskConfigPatch, is_scope, patch_dict
from stream_risk.models import MAX_TS_MS
from stream_risk.replay.errors import SourceError, first_error
from stream_risk.replay.timestamps import iso_to_ms


@dataclass(slots=True)
class ConfigRecord:
    """A `risk-config` record at event time `ts`: `value` None removes the scope."""

    scope: str
    ts: int
    value: dict[str, Any] | None
    where: str = ""


def load_risk_config(path: str | Path) -> list[ConfigRecord]:
    """Read `risk-config` records from JSONL: one `{"scope", "ts", "value"}` a line
    (`key` is accepted for `scope`; `value` null or absent removes the scope; `ts` epoch
    ms or an ISO-8601 string). Validated as the live engine validates the topic; the first
    bad record stops the run naming its line (raises SourceError)."""
    p = Path(path)
    out: list[ConfigRecord] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p.name}, line {n}"
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise SourceError(f"{where}: not JSON") from None
        if not isinstance(body, dict):
            raise SourceError(f"{where}: not a JSON object")
        scope = body.get("scope", body.get("key"))
        if not isinstance(scope, str) or not is_scope(scope):
            raise SourceError(f"{where}: field scope: {scope!r} is no scope: use {SCOPE_FORMS}")
        ts = body.get("ts")
        if isinstance(ts, str):
            ts = iso_to_ms(ts)
        if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= MAX_TS_MS:
            raise SourceError(f"{where}: field ts: epoch ms (or ISO-8601) required")
        value = body.get("value")
        patch: dict[str, Any] | None = None
        if value is not None:
            try:
                patch = patch_dict(RiskConfigPatch.model_validate(value))
            except ValidationError as exc:
                loc, what = first_error(exc)
                raise SourceError(f"{where}: field value.{loc}: {what}") from None
        out.append(ConfigRecord(scope, ts, patch, where))
    return out
