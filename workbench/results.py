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
class ExportedModel:
    """A stage's exported model, for tracking to log as an MLflow model (and register)."""

    model: Any  # the float Keras model the encodings apply to (BN folded, equalized, rounded...)
    example: Any  # a few validation images: the input example and, with the outputs, the signature
    directory: str  # the exported files (encodings, int8 TFLite) the MLflow model carries


@dataclass
class StageResult:
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # artifact file name -> table
    documents: dict[str, dict] = field(default_factory=dict)  # artifact file name -> JSON document
    figures: dict[str, Any] = field(default_factory=dict)  # artifact file name -> matplotlib figure
    tags: dict[str, str] = field(default_factory=dict)
    # metric key -> {step: value}, logged at their real step (epoch 1, 2, ... or iteration)
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    # artifact folder -> local directory whose files are logged under it
    directories: dict[str, str] = field(default_factory=dict)
    # set by the exporting stages: logged as an MLflow model (Keras flavor) with the files beside it
    exported: ExportedModel | None = None
    # set by a stage whose reported sim ran at other global settings than the config's (mixed_precision: the
    # highest candidate plus per-layer overrides): the run's setting tags and name are then written from these
    simulated: Any = None  # options.QuantSettings
    # the sim the stage evaluated last (quantsim.QuantizationSimModel): a search (autoquant) evaluates it again on
    # other images without rebuilding it; never logged
    sim: Any = None
    # steps of the stage logged as their own runs under its run (AutoQuant's trials), in order; without a stage tag,
    # so a report never compares them
    children: list[StageResult] = field(default_factory=list)
    name: str | None = None  # a child's run name

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Record the wall time of a block as ``time/<phase>_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.metrics[timing_key(phase)] = time.perf_counter() - start
