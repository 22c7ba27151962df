"""What every stage is given: the FP32 model, the data and the typed configuration (its option nodes included)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import keras

from workbench.config.schema import Config
from workbench.data.images import ImageData
from workbench.evaluation.tasks import Classification, Task
from workbench.options import QuantScheme, QuantSettings


@dataclass
class StageContext:
    model: keras.Model
    data: ImageData
    # the run's configuration, typed: each stage reads its own node (ctx.config.cle, ctx.config.adaround, ...)
    config: Config = field(default_factory=Config)
    eval_output: int | None = None  # which of several model outputs the task reads (eval.output); None: the only one
    task: Task = field(default_factory=Classification)  # what every model's quality is measured by (task=)
    # other output schemes whose statistics the calibration pass collects too (a scheme search reads them)
    calibration_also: tuple[QuantScheme, ...] = ()

    @property
    def settings(self) -> QuantSettings:
        return self.config.quant

    @property
    def calibration_samples(self) -> int:
        return self.config.quant.calibration_samples

    @property
    def sqnr_samples(self) -> int:
        return self.config.tracking.sqnr_samples

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def cache_dir(self) -> str:
        return self.config.paths.cache_dir

    @property
    def export_dir(self) -> str:
        return os.path.join(self.config.paths.outputs_dir, "exports")

    def with_settings(self, settings: QuantSettings) -> StageContext:
        """The same context simulating with other settings (a search's candidate, QAT's range-learning schemes)."""
        return replace(self, config=replace(self.config, quant=settings))

    def options(self, stage: str) -> Any:
        """A plug-in stage's own option node (``Stage.schema``, composed at the key of the stage's name)."""
        return getattr(self.config, stage)
