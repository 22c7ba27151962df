"""What every stage is given: the FP32 model, the data and the typed quant settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from workbench.data.images import ImageData
from workbench.options import QuantSettings


@dataclass
class StageContext:
    model: keras.Model
    data: ImageData
    settings: QuantSettings
    calibration_samples: int = 1000
    sqnr_samples: int = 256
    seed: int = 0
    cache_dir: str = "outputs/cache"
    options: dict = field(default_factory=dict)
