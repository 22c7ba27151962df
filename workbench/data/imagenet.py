"""ImageNet-style TFRecords as in the AIMET notebooks.

Each record holds ``image/encoded`` (JPEG bytes) and ``image/class/label`` (int64; the
common conversion script writes 1..1000, hence ``label_offset``). Images get the
standard evaluation transform: resize the shorter side to ``resize_size``, centre-crop
``image_size``, optional RGB→BGR, then ``(x − mean) / std`` in 0..255 units.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence

import tensorflow as tf

from workbench.data.images import ImageData

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


def find_tfrecords(folder: str, pattern: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, pattern)))


def encode_example(jpeg: bytes, label: int) -> bytes:
    """One serialized ``tf.train.Example`` in the layout this reader expects."""
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def probe_tfrecord(path: str) -> None:
    """Parse and decode the first record of ``path``; a one-line ValueError naming the file otherwise."""
    try:
        record = next(iter(tf.data.TFRecordDataset([path]).take(1)), None)
        if record is None:
            raise ValueError("it holds no records")
        example = tf.io.parse_single_example(record, FEATURES)
        tf.io.decode_jpeg(example["image/encoded"], channels=3)
    except (tf.errors.OpError, ValueError) as err:
        first = (getattr(err, "message", None) or str(err)).strip().splitlines()[0]
        first = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", first)  # TensorFlow's function and op names
        raise ValueError(
            f"{path} is not a TFRecord file of image/encoded (JPEG) + image/class/label (int64) examples: {first[:300]}"
        ) from None


def preprocess(image: tf.Tensor, image_size: int, resize_size: int, bgr: bool, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    ratio = float(resize_size) / tf.reduce_min(shape)
    new_hw = tf.cast(tf.round(shape * ratio), tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), new_hw, method="bilinear")
    top = (new_hw[0] - image_size) // 2
    left = (new_hw[1] - image_size) // 2
    image = image[top : top + image_size, left : left + image_size, :]
    image = tf.ensure_shape(image, (image_size, image_size, 3))
    if bgr:
        image = image[..., ::-1]
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def load_imagenet(
    path: str,
    train_pattern: str = "train*",
    valid_pattern: str = "valid*",
    image_size: int = 224,
    resize_size: int = 256,
    channel_order: str = "rgb",
    label_offset: int = 1,
    num_classes: int = 1000,
    mean: Sequence[float] = (127.5, 127.5, 127.5),
    std: Sequence[float] = (127.5, 127.5, 127.5),
    batch_size: int = 32,
    eval_samples: int | None = None,
    shuffle_buffer: int = 2048,
    *,
    name: str = "imagenet",
    seed: int = 0,
) -> ImageData:
    """Read train*/valid* TFRecord files from ``path`` (validation files are required).

    ``channel_order`` "bgr" flips the decoded RGB images; ``seed`` (the run's) is not needed here.
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order={channel_order!r} is not allowed: rgb or bgr")
    bgr = channel_order == "bgr"
    train_files = find_tfrecords(path, train_pattern)
    valid_files = find_tfrecords(path, valid_pattern)
    if not valid_files:
        raise FileNotFoundError(f"dataset.path={path!r} has no files matching {valid_pattern!r}")
    for files in (train_files[:1], valid_files[:1]):  # a cheap look before any pipeline is built
        for file in files:
            probe_tfrecord(file)
    mean, std = list(mean), list(std)

    def parse(record):
        ex = tf.io.parse_single_example(record, FEATURES)
        image = tf.io.decode_jpeg(ex["image/encoded"], channels=3)
        label = tf.cast(ex["image/class/label"], tf.int32) - label_offset
        return preprocess(image, image_size, resize_size, bgr, mean, std), label

    def make(files: list[str]):
        return lambda: tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)

    return ImageData(
        make_train=make(train_files or valid_files),
        make_val=make(valid_files),
        num_classes=num_classes,
        batch_size=batch_size,
        eval_samples=eval_samples,
        shuffle_buffer=shuffle_buffer,
        source=os.path.abspath(path),
    )
