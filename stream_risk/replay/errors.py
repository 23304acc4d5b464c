"""How replay's inputs report a problem: `SourceError` stops the run with a message for the
person who gave the file; `BadRecords` counts the records skipped under `--skip-bad`;
`first_error` words a pydantic validation error for such a message."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError


class SourceError(Exception):
    """A problem with an input file, worded for the person who gave it."""


@dataclass(slots=True)
class BadRecords:
    """Records skipped under `skip_bad`: how many, and the first few reasons."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < 20:
            self.examples.append(message)


def first_error(exc: ValidationError, empty_loc: str = "value") -> tuple[str, str]:
    """(where, what) of the first error of `exc`: its location dotted (`empty_loc` when the
    whole value is wrong) and pydantic's message."""
    err = exc.errors(include_url=False)[0]
    return ".".join(str(x) for x in err["loc"]) or empty_loc, err["msg"]
