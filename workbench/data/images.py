"""Classification data behind one small interface, whatever the source (images, or inputs of any rank).

:class:`ImageData` wraps a train and a validation split (in memory or TFRecord) and
hands out batched ``tf.data`` pipelines of ``(image, label)``: training batches,
validation batches and calibration batches spread over the training split.
Images are adapted to the model's input shape (resize, channel repeat); other inputs are fed as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf


def adapt_images(images: tf.Tensor, target_shape: Sequence[int] | None) -> tf.Tensor:
    """Resize a batch (or one image) to ``(H, W, C)``; 1 → 3 channels by repetition."""
    if target_shape is None:
        return images
    h, w, c = (int(v) if v is not None else None for v in target_shape)
    shape = images.shape
    if h is not None and w is not None and (shape[-3] != h or shape[-2] != w):
        images = tf.image.resize(images, (h, w))
    if c is not None and shape[-1] != c:
        if shape[-1] == 1:
            images = tf.repeat(images, c, axis=-1)
        else:
            raise ValueError(f"cannot adapt images with {shape[-1]} channels to a model input with {c} channels")
    return images


@dataclass
class ImageData:
    """Train/validation splits as element-level ``tf.data`` factories plus metadata."""

    make_train: Callable[[], tf.data.Dataset]
    make_val: Callable[[], tf.data.Dataset]
    num_classes: int
    batch_size: int
    num_train: int | None = None
    num_val: int | None = None
    eval_samples: int | None = None
    target_shape: Sequence[int] | None = None
    # in-memory splits pick calibration samples by index; streams shuffle with a buffer
    train_arrays: tuple[np.ndarray, np.ndarray] | None = None
    shuffle_buffer: int = 2048
    # where the images come from (a path, or how they were generated): the runs' logged datasets say it
    source: str | None = None
    # image files whose crop size follows the model (dataset.image_size=null): (height, width) → the data at that size
    sized: Callable[[int, int], ImageData] | None = None

    def for_model(self, input_shape: Sequence[int]) -> ImageData:
        """The same data, images adapted to ``input_shape`` (H, W, C) (decoded at that size when the size follows the model)."""
        return ImageData(**{**self.sized_for(input_shape).__dict__, "target_shape": tuple(input_shape)})

    def sized_for(self, input_shape: Sequence[int]) -> ImageData:
        """The data decoded at the model's input size when its size follows the model; else itself."""
        h, w = (tuple(input_shape) + (None, None))[:2]
        return self.sized(int(h), int(w)) if self.sized is not None and h is not None and w is not None else self

    def _finish(self, ds: tf.data.Dataset, batch_size: int | None = None) -> tf.data.Dataset:
        shape = self.target_shape
        ds = ds.batch(batch_size or self.batch_size)
        if shape is not None and len(shape) == 3 and not isinstance(ds.element_spec[0], dict):  # images (H, W, C)
            ds = ds.map(lambda x, y: (adapt_images(x, shape), y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def train_batches(self, batch_size: int | None = None, shuffle: bool = True, seed: int = 0) -> tf.data.Dataset:
        ds = self.make_train()
        if shuffle:
            ds = ds.shuffle(self.num_train or self.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return self._finish(ds, batch_size)

    def val_batches(self, limit: int | None = None) -> tf.data.Dataset:
        """Validation batches in a fixed order, limited to ``limit`` or ``eval_samples``."""
        ds = self.make_val()
        limit = limit if limit is not None else self.eval_samples
        if limit is not None:
            ds = ds.take(limit)
        return self._finish(ds)

    def split_validation(self, fraction: float, seed: int) -> tuple[ImageData, ImageData]:
        """The validation split (its first ``eval_samples``) divided by a seeded draw into a part of ``fraction`` of
        the samples and the rest, each in the split's order: a search decides on the first, the second is held out."""
        n = self.eval_samples if self.eval_samples is not None else self.num_val
        if n is None:
            n = sum(1 for _ in self.make_val())
        chosen = np.zeros(n, bool)
        chosen[np.random.default_rng(seed).permutation(n)[: max(1, min(n - 1, int(round(fraction * n))))]] = True

        def part(mask: np.ndarray) -> ImageData:
            keep = tf.constant(mask)
            make = self.make_val

            def make_val() -> tf.data.Dataset:
                ds = make().take(n).enumerate().filter(lambda i, *element: tf.gather(keep, i))
                return ds.map(lambda i, *element: element if len(element) > 1 else element[0])

            return replace(self, make_val=make_val, num_val=int(mask.sum()), eval_samples=None, sized=None)

        return part(chosen), part(~chosen)

    def calibration_batches(self, num_samples: int, seed: int = 0, batch_size: int | None = None) -> tf.data.Dataset:
        """``num_samples`` training images spread over the split (seeded), without labels' use."""
        if self.train_arrays is not None:
            x, y = self.train_arrays
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(sample_count(x), size=min(num_samples, sample_count(x)), replace=False))
            ds = tf.data.Dataset.from_tensor_slices((take_samples(x, idx), y[idx]))
        else:
            buffer = max(self.shuffle_buffer, num_samples)
            ds = self.make_train().shuffle(buffer, seed=seed, reshuffle_each_iteration=False).take(num_samples)
        return self._finish(ds, batch_size)


def _input_dtype(x):
    """Floating inputs as float32, integer ones as int32; a dict of inputs (several model inputs) input by input."""
    if isinstance(x, dict):
        return {k: _input_dtype(v) for k, v in x.items()}
    return x.astype(np.int32) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)


def sample_count(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take_samples(x, idx: np.ndarray):
    return {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[idx]


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    batch_size: int,
    eval_samples: int | None = None,
    source: str | None = None,
) -> ImageData:
    """In-memory splits: inputs of any rank (floating ones as float32, integer ones such as token ids as int32),
    labels as int32 classes, or float32 for float labels (a regression's targets)."""
    x_train, x_val = _input_dtype(x_train), _input_dtype(x_val)
    y_train, y_val = _input_dtype(np.asarray(y_train)), _input_dtype(np.asarray(y_val))
    return ImageData(
        make_train=lambda: tf.data.Dataset.from_tensor_slices((x_train, y_train)),
        make_val=lambda: tf.data.Dataset.from_tensor_slices((x_val, y_val)),
        num_classes=num_classes,
        batch_size=batch_size,
        num_train=sample_count(x_train),
        num_val=sample_count(x_val),
        eval_samples=eval_samples,
        train_arrays=(x_train, y_train),
        source=source,
    )
