"""One traced step for every batch size.

``tf.function(..., reduce_retracing=True)`` traces a step again for the first batch of another size (the last,
smaller batch of a split): for a quantized model, with its analyzers or fake-quant ops, that second trace costs
as much as the whole pass over the other batches. :func:`batch_step` traces once, at the first call, with the
leading (batch) dimension of every argument left unknown. The kernels run on the actual shapes, so the results
are the same as a trace per size, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


def _spec(value: Any) -> tf.TensorSpec:
    shape = tuple(value.shape)
    return tf.TensorSpec((None, *shape[1:]) if shape else (), tf.as_dtype(value.dtype))


def batch_step(fn: Callable) -> Callable:
    """``fn`` traced once for every batch size (arguments: tensors, arrays or nested structures of them)."""
    traced: Callable | None = None

    def call(*args):
        nonlocal traced
        if traced is None:
            traced = tf.function(fn, input_signature=[tf.nest.map_structure(_spec, a) for a in args])
        return traced(*args)

    return call
