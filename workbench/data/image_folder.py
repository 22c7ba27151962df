"""The user's own images: a folder of class subfolders (Keras' ``image_dataset_from_directory`` layout).

``path/<class name>/<image>``: class names are the subfolder names in sorted order (label = position),
images are JPEG, PNG or BMP files (by extension, any case). The validation split is either a separate
folder with the same class subfolders (``validation_path``) or the last ``validation_split`` of the files
after a seeded shuffle. Images get the same evaluation transform as ``imagenet``: resize the shorter side
to ``resize_size``, centre-crop ``image_size``, optional RGB→BGR, ``(x − mean) / std`` in 0..255 units.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from workbench.data.images import ImageData

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_image_folder(path: str, setting: str = "dataset.path") -> tuple[list[str], list[str], list[int]]:
    """Class names, image files and their labels of a folder of class subfolders; a one-line
    ValueError naming ``setting`` when it is missing, empty or holds no images."""
    if not os.path.isdir(path):
        raise ValueError(f"{setting}={path!r} is not a folder: give a folder of class subfolders of JPEG/PNG/BMP images")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        for root, _, names in sorted(os.walk(os.path.join(path, name), followlinks=True)):
            for file in sorted(names):
                if file.lower().endswith(EXTENSIONS):
                    files.append(os.path.join(root, file))
                    labels.append(label)
    if len(classes) < 2 or not files:
        raise ValueError(
            f"{setting}={path!r} holds {len(classes)} class subfolder(s) and {len(files)} JPEG/PNG/BMP images: "
            "give a folder with one subfolder of images per class (at least 2 classes)"
        )
    return classes, files, labels


def _probe(file: str, setting: str) -> None:
    """Decode one image; a one-line ValueError naming the file when it cannot be read."""
    import tensorflow as tf

    try:
        tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as err:
        first = (getattr(err, "message", None) or str(err)).strip().splitlines()[0][:200]
        raise ValueError(f"{setting}: {file} is not a readable JPEG/PNG/BMP image ({first})") from None


def load_image_folder(
    path: str,
    validation_path: str | None = None,
    validation_split: float = 0.2,
    image_size: int = 224,
    resize_size: int = 256,
    channel_order: str = "rgb",
    mean: Sequence[float] = (127.5, 127.5, 127.5),
    std: Sequence[float] = (127.5, 127.5, 127.5),
    batch_size: int = 32,
    eval_samples: int | None = None,
    *,
    name: str = "image_folder",
    seed: int = 0,
) -> ImageData:
    """Train/validation splits of a folder of class subfolders (see the module docstring)."""
    import tensorflow as tf

    from workbench.data.imagenet import preprocess

    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"dataset.channel_order={channel_order!r} is not allowed: rgb or bgr")
    classes, files, labels = list_image_folder(path)
    if validation_path:
        val_classes, val_files, val_labels = list_image_folder(validation_path, "dataset.validation_path")
        if val_classes != classes:
            raise ValueError(
                f"dataset.validation_path={validation_path!r} has classes {val_classes[:5]}... but dataset.path has {classes[:5]}...: "
                "both need the same class subfolders"
            )
        train = (files, labels)
        val = (val_files, val_labels)
    else:
        if not 0.0 < validation_split < 1.0:
            raise ValueError(
                f"dataset.validation_split={validation_split!r} is not allowed: a fraction in (0, 1), or give dataset.validation_path"
            )
        order = np.random.default_rng(seed).permutation(len(files))
        n_val = max(1, int(round(len(files) * validation_split)))
        if n_val >= len(files):
            raise ValueError(f"dataset.path={path!r} has {len(files)} images: too few to keep {validation_split:.0%} for validation")
        pick = lambda idx: ([files[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
        train, val = pick(np.sort(order[:-n_val])), pick(np.sort(order[-n_val:]))
    _probe(train[0][0], "dataset.path")
    _probe(val[0][0], "dataset.validation_path" if validation_path else "dataset.path")
    bgr = channel_order == "bgr"

    def load(file, label):
        image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
        return preprocess(image, image_size, resize_size, bgr, mean, std), label

    def make(split: tuple[list[str], list[int]]):
        names, ints = tf.constant(split[0]), tf.constant(split[1], tf.int32)
        return lambda: tf.data.Dataset.from_tensor_slices((names, ints)).map(load, num_parallel_calls=tf.data.AUTOTUNE)

    return ImageData(
        make_train=make(train),
        make_val=make(val),
        num_classes=len(classes),
        batch_size=batch_size,
        num_train=len(train[0]),
        num_val=len(val[0]),
        eval_samples=eval_samples,
        source=os.path.abspath(path),
    )
