"""Write the JSON Schemas of the message models into a folder (`make schemas`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from stream_risk.models import SCHEMA_MODELS


def render_schemas() -> dict[str, bytes]:
    """File name -> schema bytes, deterministic (sorted keys, trailing newline)."""
    out: dict[str, bytes] = {}
    for name, model in SCHEMA_MODELS.items():
        schema: dict[str, Any] = model.model_json_schema()
        schema["$id"] = f"stream-risk/{name}.schema.json"
        out[f"{name}.schema.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return out


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "schemas")
    folder.mkdir(parents=True, exist_ok=True)
    for fname, data in render_schemas().items():
        (folder / fname).write_bytes(data)
        print(f"wrote {folder / fname}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
