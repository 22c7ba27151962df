"""Data the user has as arrays: ``.npz`` files of any rank and dtype.

``path`` is an ``.npz`` with ``x`` and ``y`` (split into train and validation after a seeded shuffle), or with
``x_train``, ``y_train``, ``x_val``, ``y_val``; ``validation_path`` gives the validation split as a file of its
own. A model with several inputs reads one array per input, named ``x.<input name>`` (``x_train.<input name>``
...): the inputs then travel as a dict by name, as Keras feeds a functional model. Floating inputs become
float32; integer inputs (token ids, class indices) stay integers, so the simulator leaves them unquantized.
Labels are integer classes (classification, per-pixel masks for segmentation) or floats (regression, kept as
float32). A file with ``x`` alone has no labels: for ``task=fidelity``, each sample is then named by its index in
the file (so two runs pair up sample by sample).
"""

from __future__ import annotations

import os

import numpy as np

from workbench.data.images import ImageData, from_arrays, sample_count, take_samples

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val")


Inputs = np.ndarray | dict[str, np.ndarray]


def _read(path: str) -> dict[str, Inputs]:
    """The file's arrays; ``x.<name>`` arrays gathered into ``x`` as a dict by input name (likewise x_train, x_val)."""
    with np.load(path, allow_pickle=False) as arrays:
        found: dict[str, Inputs] = {}
        for key in arrays.files:
            base, dot, name = key.partition(".")
            if dot and base in ("x", "x_train", "x_val"):
                found.setdefault(base, {})[name] = arrays[key]  # type: ignore[index]
            else:
                found[key] = arrays[key]
        return found


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
        x = arrays["x"]
        n = sample_count(x)
        y = arrays["y"] if "y" in arrays else np.arange(n, dtype=np.int32)  # no labels: the sample's index names it
        order = np.random.default_rng(seed).permutation(n)
        n_val = max(1, int(round(validation_split * n)))
        val, train = order[n - n_val :], order[: n - n_val]
        x_train, y_train, x_val, y_val = take_samples(x, train), y[train], take_samples(x, val), y[val]
    classes = num_classes if num_classes is not None else class_count(y_train, y_val)
    source = os.path.abspath(path) + (f" + {os.path.abspath(validation_path)}" if validation_path else "")
    return from_arrays(x_train, y_train, x_val, y_val, classes, batch_size, eval_samples, source=source)


def class_count(*labels: np.ndarray) -> int:
    """The largest integer label + 1; 0 for float labels (a regression's targets: no classes)."""
    if not all(np.issubdtype(y.dtype, np.integer) for y in labels):
        return 0
    return int(max(y.max() for y in labels)) + 1
