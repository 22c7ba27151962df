"""Data the user has as arrays: ``.npz`` files of any rank and dtype.

``path`` is an ``.npz`` with ``x`` and ``y`` (split into train and validation after a seeded shuffle), or with
``x_train``, ``y_train``, ``x_val``, ``y_val``; ``validation_path`` gives the validation split as a file of its
own. Floating inputs become float32; integer inputs (token ids, class indices) stay integers, so the simulator
leaves them unquantized. Labels are integer classes.
"""

from __future__ import annotations

import os

import numpy as np

from workbench.data.images import ImageData, from_arrays

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val")


def _read(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def load_arrays(
    path: str,
    validation_path: str | None = None,
    validation_split: float = 0.2,
    num_classes: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    eval_samples: int | None = None,
    *,
    name: str = "arrays",
) -> ImageData:
    """The splits of ``path`` (and ``validation_path``); ``num_classes`` None: the largest label + 1."""
    arrays = _read(path)
    if all(key in arrays for key in SPLIT_KEYS):
        x_train, y_train, x_val, y_val = (arrays[key] for key in SPLIT_KEYS)
    elif validation_path is not None:
        other = _read(validation_path)
        x_train, y_train, x_val, y_val = arrays["x"], arrays["y"], other["x"], other["y"]
    else:
        x, y = arrays["x"], arrays["y"]
        order = np.random.default_rng(seed).permutation(len(x))
        n_val = max(1, int(round(validation_split * len(x))))
        val, train = order[len(x) - n_val :], order[: len(x) - n_val]
        x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]
    classes = num_classes if num_classes is not None else int(max(y_train.max(), y_val.max())) + 1
    source = os.path.abspath(path) + (f" + {os.path.abspath(validation_path)}" if validation_path else "")
    return from_arrays(x_train, y_train, x_val, y_val, classes, batch_size, eval_samples, source=source)
