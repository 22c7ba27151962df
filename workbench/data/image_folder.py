"""The user's own images: a folder of class subfolders (Keras' ``image_dataset_from_directory`` layout).

``path/<class name>/<image>``: class names are the subfolder names in sorted order (label = position),
images are JPEG, PNG or BMP files (by extension, any case). The validation split is either a separate
folder with the same class subfolders (``validation_path``) or the last ``validation_split`` of the files
after a seeded shuffle. Images get the same evaluation transform as ``imagenet``: resize the shorter side
to ``resize_size``, centre-crop ``image_size``, optional RGB→BGR, ``(x − mean) / std`` in 0..255 units.
``image_size=None`` (the config's default) crops at the model's input size (``ImageData.for_model``), with
``resize_size`` = image_size · 256/224 unless given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from workbench import interrupts
from workbench.data.images import ImageData

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_IMAGE_SIZE = 224  # image_size=null and no model to follow (the Python API without a model)
IMAGENET_RESIZE_RATIO = 256 / 224


def _images_under(folder: str, seen_dirs: set[str], seen_files: set[str]) -> list[str]:
    """The image files below ``folder``, following symlinks but visiting each real directory once (a symlink
    loop ends) and listing each real file once (two links to one image are one image)."""
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        interrupts.checkpoint()  # a long walk still honours SIGTERM / Ctrl-C
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        for file in sorted(names):
            target = os.path.realpath(os.path.join(root, file))
            if file.lower().endswith(EXTENSIONS) and target not in seen_files:
                seen_files.add(target)
                found.append(os.path.join(root, file))
    return found


def list_image_folder(
    path: str, setting: str = "dataset.path", allow_empty_classes: bool = False
) -> tuple[list[str], list[str], list[int]]:
    """Class names, image files and their labels of a folder of class subfolders; a one-line
    ValueError naming ``setting`` when it is missing, empty, holds no images or an empty class folder
    (skipped instead with ``allow_empty_classes``)."""
    if not os.path.isdir(path):
        raise ValueError(f"{setting}={path!r} is not a folder: give a folder of class subfolders of JPEG/PNG/BMP images")
    candidates = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    seen_dirs, seen_files = {os.path.realpath(path)}, set()
    classes, files, labels = [], [], []
    for name in candidates:
        images = _images_under(os.path.join(path, name), seen_dirs, seen_files)
        if not images:
            if allow_empty_classes:
                log.warning("%s: class folder %r holds no JPEG/PNG/BMP images: skipped (dataset.allow_empty_classes)", setting, name)
                continue
            raise ValueError(
                f"{setting}: class folder {os.path.join(path, name)!r} holds no JPEG/PNG/BMP images: add images, remove the folder, "
                "or set dataset.allow_empty_classes=true"
            )
        files += images
        labels += [len(classes)] * len(images)
        classes.append(name)
    if len(classes) < 2 or not files:
        raise ValueError(
            f"{setting}={path!r} holds {len(classes)} class subfolder(s) and {len(files)} JPEG/PNG/BMP images: "
            "give a folder with one subfolder of images per class (at least 2 classes)"
        )
    return classes, files, labels


def _decode(file):
    import tensorflow as tf

    return tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)


def _probe(file: str, setting: str) -> None:
    """Decode one image; a one-line ValueError naming the file when it cannot be read."""
    import tensorflow as tf

    try:
        _decode(file)
    except (tf.errors.OpError, ValueError) as err:
        first = (getattr(err, "message", None) or str(err)).strip().splitlines()[0][:200]
        raise ValueError(f"{setting}: {file} is not a readable JPEG/PNG/BMP image ({first})") from None


def check_decodable(files: list[str], setting: str) -> None:
    """Decode every image once (in parallel, as the pipeline will), so that a corrupt file is named now, before any
    model work, not seconds into calibration as a TensorFlow error without a file name."""
    import tensorflow as tf

    indices = tf.data.Dataset.from_tensor_slices((tf.range(len(files)), tf.constant(files)))
    decoded = indices.map(lambda i, f: (i, tf.shape(_decode(f))[0]), num_parallel_calls=tf.data.AUTOTUNE)
    good = {int(i) for i, _ in decoded.ignore_errors().as_numpy_iterator()}
    bad = [f for i, f in enumerate(files) if i not in good]
    if bad:
        _probe(bad[0], setting)  # names the file with the decoder's own words
        raise ValueError(f"{setting}: {bad[0]} is not a readable JPEG/PNG/BMP image")


def load_image_folder(
    path: str,
    validation_path: str | None = None,
    validation_split: float = 0.2,
    image_size: int | None = None,
    resize_size: int | None = None,
    channel_order: str = "rgb",
    mean: Sequence[float] = (127.5, 127.5, 127.5),
    std: Sequence[float] = (127.5, 127.5, 127.5),
    batch_size: int = 32,
    eval_samples: int | None = None,
    allow_empty_classes: bool = False,
    *,
    name: str = "image_folder",
    seed: int = 0,
) -> ImageData:
    """Train/validation splits of a folder of class subfolders (see the module docstring)."""
    import tensorflow as tf

    from workbench.data.imagenet import preprocess

    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"dataset.channel_order={channel_order!r} is not allowed: rgb or bgr")
    classes, files, labels = list_image_folder(path, allow_empty_classes=allow_empty_classes)
    if validation_path:
        val_classes, val_files, val_labels = list_image_folder(validation_path, "dataset.validation_path", allow_empty_classes)
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
    check_decodable(train[0], "dataset.path")
    check_decodable(val[0], "dataset.validation_path" if validation_path else "dataset.path")
    bgr = channel_order == "bgr"

    def at_size(size: int) -> ImageData:
        resize = resize_size if resize_size is not None else round(size * IMAGENET_RESIZE_RATIO)

        def load(file, label):
            return preprocess(_decode(file), size, resize, bgr, mean, std), label

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
            # image_size=null: decoded at the model's input size (square crops: the smaller side)
            sized=None if image_size is not None else lambda h, w: at_size(min(h, w)),
        )

    return at_size(image_size if image_size is not None else DEFAULT_IMAGE_SIZE)
