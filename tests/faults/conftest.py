"""`soak` tests run only when asked for (`pytest -m soak`, i.e. `make soak`).

They are deselected (not skipped) otherwise, so a plain `pytest` / `make test` stays within
its time budget whatever the Makefile says. Every test here needs a real broker (the
session's, or one it starts itself): they are all marked `broker`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: long fault-tolerance runs, only under `pytest -m soak` (make soak)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wants_soak = "soak" in (config.getoption("markexpr", "") or "")
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if _HERE in Path(str(item.path)).parents and item.get_closest_marker("soak"):
            (keep if wants_soak else dropped).append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
