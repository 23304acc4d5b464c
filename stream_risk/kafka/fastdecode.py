"""A fast decode of a pydantic model's common JSON record, exact: orjson parses, and
checks made from the model's own field metadata (types, required fields, ge/gt/le/lt,
min/max length, read once from `model_fields` at import: no range is written twice)
accept the record, or decline it.

`fast_decoder(Model, Fields)` returns `decode(value: bytes) -> Fields | None`: the values
of the model's fields, in order, as the model's validation would give them, for a record
the checks accept; None for any other (the caller then validates it with pydantic, whose
errors name the fault: so what is refused, and why, stays pydantic's). The checks accept
a subset of what the model accepts: `tests/kafka/test_fastdecode.py` runs both over
randomized good and bad records.

Only what the checks cover is supported: a strict model (`strict`, `extra="forbid"`, no
inf/nan) of str, int and float fields, each optionally `| None`, with those constraints,
no validators, aliases or default factories; a nested model field must be optional (a
record that gives it a value is declined) and is left out of `Fields`. Anything else
raises `Unsupported` at import, naming why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import NoneType, UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import annotated_types as at
import orjson
from pydantic import BaseModel

T = TypeVar("T", bound=tuple[Any, ...])

#: Config keys that change no validation of JSON (any other key declines the model).
_NEUTRAL_CONFIG = {"title", "frozen", "json_schema_extra", "protected_namespaces"}


class Unsupported(TypeError):
    """The model has something the fast checks do not cover."""


def fast_decoder(model: type[BaseModel], fields: type[T]) -> Callable[[bytes], T | None]:
    """`decode(value)`: `fields` (a NamedTuple of the model's non-model fields, in order)
    for a record the checks derived from `model` accept, else None."""
    cfg = dict(model.model_config)
    if cfg.pop("strict", None) is not True:
        raise Unsupported(f"{model.__name__} is not strict")
    if cfg.pop("extra", None) != "forbid":
        raise Unsupported(f"{model.__name__} does not forbid extra fields")
    if cfg.pop("allow_inf_nan", True) is not False:
        raise Unsupported(f"{model.__name__} allows inf/nan")
    other = {k for k, v in cfg.items() if k not in _NEUTRAL_CONFIG and v is not None}
    if other:
        raise Unsupported(f"{model.__name__} config {sorted(other)} is not covered")
    decorators = model.__pydantic_decorators__
    if (
        decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.model_validators
        or model.__pydantic_custom_init__
        or model.__pydantic_post_init__ is not None
    ):
        raise Unsupported(f"{model.__name__} has validators or a custom init")

    names = list(model.model_fields)
    lines = [
        "def decode(value):",
        "    try:",
        "        d = loads(value)",
        "    except ValueError:",
        "        return None",
        "    if type(d) is not dict or not covers(d):  # extra='forbid'",
        "        return None",
        "    get = d.get",
    ]
    ns: dict[str, Any] = {
        "loads": orjson.loads,
        "covers": frozenset(names).issuperset,
        "MISSING": object(),
        "new": tuple.__new__,
        "FIELDS": fields,
        "isfinite": math.isfinite,
    }
    out: list[str] = []
    for i, name in enumerate(names):
        info = model.model_fields[name]
        if (
            info.alias is not None
            or info.validation_alias is not None
            or info.default_factory is not None
            or info.discriminator is not None
            or info.validate_default
        ):
            raise Unsupported(f"{model.__name__}.{name}: alias, factory or the like")
        kind, nullable = _kind(info.annotation)
        if kind is None:
            raise Unsupported(f"{model.__name__}.{name}: type {info.annotation!r}")
        v = f"v{i}"
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            # A nested model: the common record has none (absent or null); else decline.
            if not nullable or info.is_required() or info.default is not None or info.metadata:
                raise Unsupported(f"{model.__name__}.{name}: a nested model must be optional")
            lines += [f"    if get({name!r}) is not None:", "        return None"]
            continue
        out.append(name)
        checks = _checks(model, name, v, kind, info.metadata)
        if info.is_required() or (nullable and info.default is None):
            # Absent reads as None: refused by the checks (required) or the default (None).
            lines.append(f"    {v} = get({name!r})")
            if nullable:
                lines.append(f"    if {v} is not None:")
                lines += ["        " + c for c in checks]
            else:
                lines += ["    " + c for c in checks]
        else:
            ns[f"D{i}"] = info.default
            lines += [f"    {v} = get({name!r}, MISSING)", f"    if {v} is MISSING:"]
            lines.append(f"        {v} = D{i}")
            lines.append(f"    elif {v} is not None:" if nullable else "    else:")
            lines += ["        " + c for c in checks]
    if tuple(out) != tuple(getattr(fields, "_fields", ())):
        raise Unsupported(f"{fields.__name__} is not {model.__name__}'s fields {out}")
    lines.append("    return new(FIELDS, (" + "".join(f"v{names.index(n)}, " for n in out) + "))")
    exec("\n".join(lines), ns)  # the checks, generated once at import
    decode: Callable[[bytes], T | None] = ns["decode"]
    decode.__doc__ = f"{fields.__name__} of a {model.__name__} record the checks accept, or None."
    return decode


def _kind(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `X` or `X | None`; (None, _) if neither."""
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not NoneType]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return _kind(args[0])[0], True
        return None, False
    if annotation in (str, int, float):
        return annotation, False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _checks(
    model: type[BaseModel], name: str, v: str, kind: type, metadata: list[Any]
) -> list[str]:
    """The lines checking `v` (not None) as field `name` of type `kind` would be: its
    bounds written in as literals (`repr` of an int or a finite float reads back exact)."""
    low: list[str] = []
    high: list[str] = []
    lengths: list[str] = []
    for m in metadata:
        if isinstance(m, at.Ge | at.Gt | at.Le | at.Lt) and kind is not str:
            bound = next(getattr(m, a) for a in ("ge", "gt", "le", "lt") if hasattr(m, a))
            if type(bound) not in (int, float) or not math.isfinite(bound):
                raise Unsupported(f"{model.__name__}.{name}: bound {bound!r}")
            if isinstance(m, at.Ge | at.Gt):
                low.append(f"{bound!r} {'<=' if isinstance(m, at.Ge) else '<'} {v}")
            else:
                high.append(f"{v} {'<=' if isinstance(m, at.Le) else '<'} {bound!r}")
        elif isinstance(m, at.MinLen) and kind is str:
            lengths.append(f"{m.min_length!r} <= len({v})")
        elif isinstance(m, at.MaxLen) and kind is str:
            lengths.append(f"len({v}) <= {m.max_length!r}")
        else:
            raise Unsupported(f"{model.__name__}.{name}: constraint {m!r}")
    if kind is str:
        return [
            f"if type({v}) is not str or not ({' and '.join(lengths or ['True'])}):",
            "    return None",
        ]
    bounds = low + high
    if kind is float and not (low and high):  # bounds on both sides refuse inf and nan
        bounds.append(f"isfinite({v})")
    test = [f"    if not ({' and '.join(bounds)}):", "        return None"] if bounds else []
    if kind is int:  # strict: a JSON integer only (not a float, not a bool)
        return [f"if type({v}) is int:", *test, "    pass", "else:", "    return None"]
    # strict float: a JSON number (an integer becomes its float), finite
    return [
        f"if type({v}) is float:",
        *test,
        "    pass",
        f"elif type({v}) is int:",
        f"    {v} = float({v})",
        *test,
        "else:",
        "    return None",
    ]


__all__ = ["Unsupported", "fast_decoder"]
