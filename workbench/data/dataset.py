"""One data abstraction for calibration, bias correction and QAT (the idea of NNCF's ``Dataset``).

``Dataset(source, transform)`` wraps any re-iterable source (a ``tf.data.Dataset``, a list of arrays or
of ``(x, y)`` batches) and a function from one item to the model input. Techniques take a ``Dataset`` (or a
plain array) and read it in the form they need: batches of inputs (calibration), one array (bias
correction), or labelled batches as a ``tf.data`` pipeline (QAT).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np


def _input_of(item: Any) -> Any:
    """The model input of an item: the first element of ``(x, y)`` pairs, else the item itself."""
    return item[0] if isinstance(item, (tuple, list)) else item


class Dataset:
    """An iterable of model inputs: ``source`` items mapped by ``transform`` (default: ``x`` of ``(x, y)``)."""

    def __init__(self, source: Iterable, transform: Callable[[Any], Any] | None = None):
        self.source = source
        self.transform = transform or _input_of

    def __iter__(self) -> Iterator:
        for item in self.source:
            yield self.transform(item)

    def labelled_tf_data(self):
        """The source's ``(x, y)`` batches as a ``tf.data`` pipeline (what Keras ``fit`` takes); the
        transform does not apply, since training needs the labels."""
        import tensorflow as tf

        if isinstance(self.source, tf.data.Dataset):
            return self.source
        first = next(iter(self.source), None)
        if not isinstance(first, (tuple, list)) or len(first) != 2:
            raise ValueError("training needs a source of (x, y) batches")
        spec = tuple(tf.TensorSpec((None, *np.shape(v)[1:]), tf.as_dtype(np.asarray(v).dtype)) for v in first)
        return tf.data.Dataset.from_generator(lambda: (tuple(item) for item in self.source), output_signature=spec)

    def as_array(self, limit: int | None = None) -> np.ndarray:
        """The inputs as one float32 array (the first ``limit`` samples when given)."""
        parts, count = [], 0
        for batch in self:
            batch = np.asarray(batch, np.float32)
            parts.append(batch)
            count += len(batch)
            if limit is not None and count >= limit:
                break
        if not parts:
            raise ValueError("the dataset is empty")
        return np.concatenate(parts)[:limit]


def as_array(data: Dataset | Iterable | np.ndarray, limit: int | None = None) -> np.ndarray:
    """An array of model inputs from a Dataset, an iterable of batches or an array."""
    if isinstance(data, np.ndarray):
        return data.astype(np.float32, copy=False)[:limit]
    return (data if isinstance(data, Dataset) else Dataset(data)).as_array(limit)
