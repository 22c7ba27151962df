"""What every stage is given: the FP32 model, the data, the quant settings and its typed options."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from workbench.config.schema import (
    AdaroundConfig,
    AmpConfig,
    AnalyzeConfig,
    BaselineConfig,
    BiasCorrectionConfig,
    CLEConfig,
    QATConfig,
    QuantConfig,
    TrackingConfig,
)
from workbench.data.images import ImageData
from workbench.options import QuantSettings


@dataclass
class StageContext:
    model: keras.Model
    data: ImageData
    settings: QuantSettings
    calibration_samples: int = QuantConfig.calibration_samples
    sqnr_samples: int = TrackingConfig.sqnr_samples
    seed: int = 0
    cache_dir: str = "outputs/cache"
    export_dir: str = "outputs/exports"
    eval_output: int | None = None  # which of several model outputs top-1 reads (eval.output); None: the only one
    # each technique's options, as composed (defaults from the schema)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    cle: CLEConfig = field(default_factory=CLEConfig)
    bc: BiasCorrectionConfig = field(default_factory=BiasCorrectionConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    adaround: AdaroundConfig = field(default_factory=AdaroundConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    amp: AmpConfig = field(default_factory=AmpConfig)
