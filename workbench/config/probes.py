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


def module_problem(module: str) -> str | None:
    """Why ``module`` cannot be imported, found without importing it (its spec), or None."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package that does not exist
        found = None
    return None if found is not None else f"no module named {module!r} on the Python path"


ARRAY_KEYS = (("x", "y"), ("x_train", "y_train", "x_val", "y_val"))


def npz_problem(path: str, alone: bool = True) -> str | None:
    """Why ``path`` cannot be an arrays dataset file, from its zip entries (no arrays read): not an .npz, or
    without ``x`` and ``y`` (``alone``: or the four split arrays)."""
    if not path.endswith(".npz"):
        return "is not allowed: use an .npz file (numpy.savez) with arrays x and y"
    if not os.path.isfile(path):
        return "does not exist"
    try:
        with zipfile.ZipFile(path) as archive:
            # x.<input name> arrays (one per input of a multi-input model) stand for x
            keys = {name.removesuffix(".npy").partition(".")[0] for name in archive.namelist()}
    except zipfile.BadZipFile:
        return "is not an .npz file (numpy.savez writes a zip archive)"
    if any(set(wanted) <= keys for wanted in (ARRAY_KEYS if alone else ARRAY_KEYS[:1])):
        return None
    if alone and "x" in keys and "y" not in keys:
        return None  # inputs alone: for a label-free task (task=fidelity), checked when the run starts
    wanted = " or ".join(", ".join(w) for w in (ARRAY_KEYS if alone else ARRAY_KEYS[:1]))
    return f"has the arrays {', '.join(sorted(keys)) or 'none'}; it needs {wanted}"


def npz_array_shape(path: str, keys: tuple[str, ...] = ("x", "x_train")) -> tuple[int, ...] | None:
    """The shape of one sample of the first of ``keys`` in an .npz, from its array header (no array read)."""
    import numpy as np

    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            key = next((k for k in keys if f"{k}.npy" in names), None)
            if key is None:
                return None
            with archive.open(f"{key}.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, _ = read(f)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return tuple(int(v) for v in shape[1:])


def keras_input_shape(path: str) -> tuple | None:
    """A .keras file's (first) input shape without the batch axis, from its config.json; None if it does not say."""
    try:
        with zipfile.ZipFile(path) as archive:
            layers = json.loads(archive.read("config.json"))["config"].get("layers") or []
    except (KeyError, ValueError, TypeError, AttributeError, OSError, zipfile.BadZipFile):
        return None
    shapes = [layer["config"].get("batch_shape") for layer in layers if layer.get("class_name") == "InputLayer"]
    return tuple(shapes[0][1:]) if shapes and shapes[0] else None


def keras_archive_problem(path: str, custom_objects) -> str | None:
    """What a .keras file's config.json already shows (no TensorFlow): a subclassed model, a custom class
    nobody registers. An unreadable config is left to the loader."""
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
