"""Whether a model's numbers can be trusted at all: non-finite weights and impossible batch-norm statistics.

A NaN in one weight makes the FP32 model useless while the encodings, which skip non-finite values,
still produce a sim that scores well: a number that is not the model's. Checked when a model is built
(a one-line error) and after every transform (a transform must never emit NaN/Inf).
"""

from __future__ import annotations

import keras
import numpy as np


def weight_problems(model: keras.Model) -> list[str]:
    """One phrase per bad tensor: ``"layer 'conv' kernel: 1 NaN"``, ``"layer 'bn' moving_variance: 2 negative"``."""
    problems = []
    for layer in model.layers:
        for weight in layer.weights:
            values = np.asarray(weight.numpy())
            if not np.issubdtype(values.dtype, np.floating):
                continue
            name = weight.path.split("/")[-1]
            nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
            counts = [f"{nan} NaN"] * bool(nan) + [f"{inf} infinite"] * bool(inf)
            if isinstance(layer, keras.layers.BatchNormalization) and name == "moving_variance":
                negative = int((values < 0).sum())
                counts += [f"{negative} negative"] * bool(negative)
            if counts:
                problems.append(f"layer {layer.name!r} {name}: {', '.join(counts)} of {values.size} values")
    return problems
