"""Cheap probes of the files and values a config names, run before TensorFlow is imported (no TensorFlow
here): each returns why a value cannot be used, in words that follow the setting's name, or None."""

from __future__ import annotations

import io
import json
import os
import zipfile

KERAS_SUFFIXES = (".keras", ".h5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


TFRECORD_FEATURES = ("image/encoded", "image/class/label")


def tfrecord_problem(path: str) -> str | None:
    """Why ``path`` cannot hold the ImageNet-style records, from its first record's bytes (no TensorFlow).

    A TFRecord record is a little-endian uint64 length, 4 CRC bytes, the serialized Example, 4 CRC bytes;
    a feature key that is absent from the bytes is absent from the Example. (A deeper check, parsing and
    decoding the record, runs when the data is built.)
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        length = int.from_bytes(head[:8], "little") if len(head) == 12 else 0
        if length == 0 or 12 + length + 4 > size:
            return "is not a TFRecord file (its first record's length does not fit the file)"
        record = f.read(length)
    missing = [key for key in TFRECORD_FEATURES if key.encode() not in record]
    return f"has records without the required feature(s) {', '.join(missing)}" if missing else None


def keras_archive_problem(path: str, custom_objects) -> str | None:
    """What a .keras file's config.json already shows (no TensorFlow): a subclassed model, a custom class
    nobody registers, a model input that is not an image batch. An unreadable config is left to the loader."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        layers = config["config"].get("layers")
    except (KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile):
        return None
    if layers is None:
        return f"holds a subclassed model ({config.get('class_name')}): the workbench rewrites graphs of layers (functional or Sequential)"
    for layer in layers:
        package, _, name = (layer.get("registered_name") or "").rpartition(">")
        if package and package != "workbench" and name not in custom_objects:
            return f"uses the custom class {name!r}, which is not registered: pass it with +model.custom_objects.{name}=your_module:{name}"
        shape = layer.get("config", {}).get("batch_shape") if layer.get("class_name") == "InputLayer" else None
        if shape is not None and len(shape) != 4:
            return f"takes inputs of shape {tuple(shape)}, not an image batch (N, H, W, C): the workbench quantizes image classifiers"
    return non_finite_weights(path)


def non_finite_weights(path: str) -> str | None:
    """A weight with NaN/Inf in the archive's ``model.weights.h5`` (h5py, no TensorFlow): its sim would not be the model."""
    import h5py
    import numpy as np

    try:
        with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            found: list[str] = []

            def visit(name: str, node) -> None:
                if found or not isinstance(node, h5py.Dataset) or node.dtype.kind != "f":
                    return
                values = node[()]
                bad = int(np.size(values) - np.isfinite(values).sum())
                if bad:
                    found.append(f"{name}: {bad} of {np.size(values)} values NaN or infinite, in model.weights.h5")

            weights.visititems(visit)
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None
    return f"has non-finite weights ({found[0]}): the workbench quantizes models whose weights are finite" if found else None


def keras_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be a Keras model file, from its first bytes (no TensorFlow needed)."""
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        return "is not a Keras 3 model file (a .keras file is a zip archive; this one is not)"
    if path.endswith(".h5"):
        with open(path, "rb") as f:
            if f.read(8) != HDF5_SIGNATURE:
                return "is not an HDF5 model file (no HDF5 signature)"
    return None
