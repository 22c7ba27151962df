"""Data from the user's own function: ``function`` returns the train and validation ``tf.data.Dataset``s.

The datasets yield ``(x, y)`` elements (``batched: true``: batches, unbatched here), ``x`` an array or a dict by
input name; the workbench batches, shuffles (seeded) and picks calibration samples as for any other dataset.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from workbench.data.images import ImageData


def resolve(function: str):
    """``package.module:name`` → the function."""
    module, _, attribute = function.partition(":")
    return getattr(importlib.import_module(module), attribute)


def from_function(
    function: str,
    num_classes: int,
    arguments: Mapping[str, Any] | None = None,
    batched: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    eval_samples: int | None = None,
    *,
    name: str = "callable",
) -> ImageData:
    """The splits ``function(**arguments)`` returns (a ``(train, validation)`` pair of ``tf.data.Dataset``)."""
    made = resolve(function)(**dict(arguments or {}))
    if not (isinstance(made, (tuple, list)) and len(made) == 2):
        raise ValueError(f"dataset.function={function!r} returned {type(made).__name__}: return (train, validation) tf.data.Datasets")
    train, val = (ds.unbatch() if batched else ds for ds in made)
    return ImageData(
        make_train=lambda: train,
        make_val=lambda: val,
        num_classes=int(num_classes),
        batch_size=batch_size,
        eval_samples=eval_samples,
        source=f"{function}({', '.join(f'{k}={v!r}' for k, v in dict(arguments or {}).items())})",
    )
