"""Generated data for fast tests: one fixed random pattern per class plus Gaussian noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.data.images import ImageData, from_arrays


def make_synthetic(
    num_train: int = 512,
    num_val: int = 256,
    num_classes: int = 10,
    image_shape: Sequence[int] = (28, 28, 1),
    noise: float = 0.5,
    seed: int = 0,
    batch_size: int = 64,
    eval_samples: int | None = None,
    *,
    name: str = "synthetic",
) -> ImageData:
    """Learnable images: x = pattern[y] + noise·N(0, 1), labels uniform over classes."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0.0, 1.0, size=(num_classes, *image_shape)).astype(np.float32)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, size=n)
        x = patterns[y] + noise * rng.standard_normal((n, *image_shape)).astype(np.float32)
        return x.astype(np.float32), y

    x_train, y_train = split(num_train)
    x_val, y_val = split(num_val)
    source = f"generated: {num_classes} class patterns {tuple(image_shape)} + {noise}·N(0, 1), seed {seed}"
    return from_arrays(x_train, y_train, x_val, y_val, num_classes, batch_size, eval_samples, source=source)
