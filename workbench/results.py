"""What a stage produces: metrics, tables, documents and figures, filled in as it goes.

A stage writes into a :class:`StageResult` handed to it, so whatever it produced before
a failure is still there for tracking to log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbench.keys import timing_key


@dataclass
class StageResult:
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # artifact file name -> table
    documents: dict[str, dict] = field(default_factory=dict)  # artifact file name -> JSON document
    figures: dict[str, Any] = field(default_factory=dict)  # artifact file name -> matplotlib figure
    tags: dict[str, str] = field(default_factory=dict)
    # metric key -> values per step (e.g. per epoch), logged with their step
    series: dict[str, list[float]] = field(default_factory=dict)
    # artifact folder -> local directory whose files are logged under it
    directories: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Record the wall time of a block as ``time/<phase>_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.metrics[timing_key(phase)] = time.perf_counter() - start
