"""How replay's inputs report a problem: `SourceError` stops the run with a message for the
person who gave the file; `BadRecords` counts the records skipped under `--skip-bad`."""

from __future__ import annotations

from dataclasses import dataclass, field


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
