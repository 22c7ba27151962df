"""Start-up checks that types cannot express, run before any TensorFlow work.

Each failure is one line naming the setting and what is allowed.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import zipfile

import yaml
from omegaconf import DictConfig, OmegaConf

from workbench.options import MAX_BITWIDTH, MIN_BITWIDTH, load_overrides, target_conflict

KERAS_SUFFIXES = (".keras", ".h5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# channels of the images each dataset yields (synthetic: its image_shape)
DATASET_CHANNELS = {"mnist": 1, "imagenet": 3, "image_folder": 3}


TFRECORD_FEATURES = ("image/encoded", "image/class/label")


def _tfrecord_problem(path: str) -> str | None:
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


def _keras_archive_problem(path: str, custom_objects) -> str | None:
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
    return _non_finite_weights(path)


def _non_finite_weights(path: str) -> str | None:
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


def _keras_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be a Keras model file, from its first bytes (no TensorFlow needed)."""
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        return "is not a Keras 3 model file (a .keras file is a zip archive; this one is not)"
    if path.endswith(".h5"):
        with open(path, "rb") as f:
            if f.read(8) != HDF5_SIGNATURE:
                return "is not an HDF5 model file (no HDF5 signature)"
    return None


REGISTERED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,255}")  # what every MLflow store accepts as a model name


class ConfigError(ValueError):
    """A setting has a value that is not allowed."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False, allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and allow_none:
        return
    low = 0 if allow_zero else 1
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= low,
        f"{key}={value!r} is not allowed: use an integer >= {low}" + (" or null" if allow_none else ""),
    )


def _missing(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return OmegaConf.is_missing(node, leaf)


def validate(cfg: DictConfig, stages: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` for the first setting that is not allowed."""
    if cfg.get("stage") is None:
        _require(len(cfg.pipeline.stages) > 0, f"pipeline.stages is empty: list some of {', '.join(stages)} (or add +stage=NAME)")
        for name in cfg.pipeline.stages:
            _require(str(name) in stages, f"pipeline.stages: {str(name)!r} is not a stage; allowed: {', '.join(stages)}")
    else:
        name = str(cfg.stage.name)
        _require(name in stages, f"stage.name={name!r} is not allowed; allowed: {', '.join(stages)}")
    q = cfg.quant
    for key in ("param_bw", "output_bw"):
        bw = q[key]
        _require(
            isinstance(bw, int) and MIN_BITWIDTH <= bw <= MAX_BITWIDTH,
            f"quant.{key}={bw!r} is not allowed: bitwidths are integers in {MIN_BITWIDTH}..{MAX_BITWIDTH}",
        )
    _positive(cfg, "quant.calibration_samples")
    _require(50.0 <= float(q.percentile) <= 100.0, f"quant.percentile={q.percentile!r} is not allowed: use a value in [50, 100]")
    conflict = target_conflict(q)
    _require(conflict is None, f"quant.{conflict}")
    if q.overrides:
        _require(os.path.isfile(q.overrides), f"quant.overrides={q.overrides!r} is not a file: give a YAML/JSON file of per-layer settings")
        try:
            load_overrides(q.overrides)
        except (ValueError, TypeError, OSError) as err:
            raise ConfigError(f"quant.overrides={q.overrides!r}: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"quant.overrides={q.overrides!r} is not readable YAML/JSON: {str(err).splitlines()[0]}") from None
    name = cfg.export.register_as
    _require(
        name is None or (isinstance(name, str) and REGISTERED_NAME.fullmatch(name) is not None),
        f"export.register_as={name!r} is not allowed: a registered model name of letters, digits, '.', '_', '-' and spaces "
        "(no '/', ':' or '%'), at most 256 characters",
    )
    _positive(cfg, "tracking.sqnr_samples", allow_zero=True)
    _positive(cfg, "threads", allow_zero=True, allow_none=True)
    _require(cfg.verbosity in (0, 1, 2), f"verbosity={cfg.verbosity!r} is not allowed: 0 (quiet), 1 (progress, default) or 2 (everything)")
    for key in ("num_quant_samples", "num_bias_correct_samples", "batch_size"):
        _positive(cfg, f"bc.{key}")
    _positive(cfg, "qat.epochs", allow_zero=True)
    _positive(cfg, "qat.decay_steps")
    _positive(cfg, "qat.batch_size")
    _require(cfg.qat.learning_rate > 0, f"qat.learning_rate={cfg.qat.learning_rate!r} is not allowed: use a value > 0")
    for key in ("num_batches", "num_iterations", "batch_size"):
        _positive(cfg, f"adaround.{key}")
    _positive(cfg, "analyze.eval_samples")
    _positive(cfg, "amp.eval_samples")
    candidates = [list(c) for c in cfg.amp.candidates]
    _require(
        len(candidates) >= 2
        and all(len(c) == 2 and all(isinstance(b, int) and MIN_BITWIDTH <= b <= MAX_BITWIDTH for b in c) for c in candidates),
        f"amp.candidates={candidates!r} is not allowed: two or more [weight bits, activation bits] pairs in "
        f"{MIN_BITWIDTH}..{MAX_BITWIDTH}, e.g. [[8,8],[4,8]]",
    )
    drop = cfg.amp.allowed_accuracy_drop
    _require(0.0 <= drop <= 1.0, f"amp.allowed_accuracy_drop={drop!r} is not allowed: a fraction in [0, 1] (0.01 = 1 point)")
    _positive(cfg, "analyze.top_k")
    a = cfg.adaround
    _require(
        0.0 <= a.default_warm_start < 1.0, f"adaround.default_warm_start={a.default_warm_start!r} is not allowed: use a value in [0, 1)"
    )
    _require(a.default_reg_param >= 0, f"adaround.default_reg_param={a.default_reg_param!r} is not allowed: use a value >= 0")
    _require(a.learning_rate > 0, f"adaround.learning_rate={a.learning_rate!r} is not allowed: use a value > 0")
    _require(
        a.fold_batch_norms or not a.cle,
        "adaround.cle=true needs adaround.fold_batch_norms=true (CLE folds first): set adaround.cle=false too",
    )
    beta = list(a.default_beta_range)
    _require(
        len(beta) == 2 and min(beta) > 0,
        f"adaround.default_beta_range={beta!r} is not allowed: two values > 0, from and to (e.g. [20, 2])",
    )
    _require(bool(cfg.tracking.experiment), "tracking.experiment must be a non-empty name")

    d = cfg.dataset
    _positive(cfg, "dataset.batch_size")
    _positive(cfg, "dataset.eval_samples", allow_none=True)
    if d.name == "mnist":
        _require(
            isinstance(d.val_size, int) and 1 <= d.val_size <= 4999,
            f"dataset.val_size={d.val_size!r} is not allowed: use an integer in 1..4999",
        )
    elif d.name == "synthetic":
        for key in ("num_train", "num_val"):
            _positive(cfg, f"dataset.{key}")
        _require(d.num_classes >= 2, f"dataset.num_classes={d.num_classes!r} is not allowed: use an integer >= 2")
        _require(
            len(d.image_shape) == 3 and all(v >= 1 for v in d.image_shape),
            f"dataset.image_shape={list(d.image_shape)!r} is not allowed: use [H, W, C]",
        )
    elif d.name == "imagenet":
        _require(not _missing(cfg, "dataset.path"), "dataset.path is missing: give the folder that holds the train*/valid* TFRecord files")
        _require(os.path.isdir(d.path), f"dataset.path={d.path!r} is not a folder")
        valid = sorted(glob.glob(os.path.join(d.path, d.valid_pattern)))
        _require(bool(valid), f"dataset.path={d.path!r} has no files matching dataset.valid_pattern={d.valid_pattern!r}")
        for first in (valid[0], *sorted(glob.glob(os.path.join(d.path, d.train_pattern)))[:1]):
            problem = _tfrecord_problem(first)
            _require(problem is None, f"dataset.path: {first} {problem}")
    elif d.name == "image_folder":
        _require(not _missing(cfg, "dataset.path"), "dataset.path is missing: give a folder with one subfolder of images per class")
        for key in ("path", "validation_path"):
            folder = d.get(key)
            _require(folder is None or os.path.isdir(folder), f"dataset.{key}={folder!r} is not a folder")
        _require(
            d.validation_path is not None or 0.0 < d.validation_split < 1.0,
            f"dataset.validation_split={d.validation_split!r} is not allowed: a fraction in (0, 1), or give dataset.validation_path",
        )
    if d.name in ("imagenet", "image_folder"):
        image, resize = d.image_size, d.resize_size
        _require(
            (image is None or image >= 1) and (resize is None or resize >= (image or 1)),
            f"dataset.image_size={image} / dataset.resize_size={resize} are not allowed: need resize_size >= image_size >= 1",
        )
        _require(
            len(d.mean) == 3 and len(d.std) == 3 and all(s > 0 for s in d.std),
            "dataset.mean and dataset.std must be 3 values each, std > 0",
        )

    m = cfg.model
    if m.name == "keras_file":
        _require(not _missing(cfg, "model.path"), "model.path is missing: give a local .keras or .h5 file")
        _require(str(m.path).endswith(KERAS_SUFFIXES), f"model.path={m.path!r} is not allowed: use a .keras or .h5 file")
        _require(os.path.isfile(m.path), f"model.path={m.path!r} does not exist")
        problem = _keras_file_problem(m.path)
        if problem is None and m.path.endswith(".keras"):
            problem = _keras_archive_problem(m.path, m.get("custom_objects") or {})
        _require(problem is None, f"model.path={m.path!r} {problem}")
    elif m.name in ("mobilenet_v2", "resnet50"):
        _require(
            m.weights is None or os.path.isfile(m.weights),
            f"model.weights={m.weights!r} does not exist: give a local file or null (weights are never downloaded)",
        )
        _require(len(m.input_shape) == 3, f"model.input_shape={list(m.input_shape)!r} is not allowed: use [H, W, C]")
    if m.name != "keras_file":
        channels = DATASET_CHANNELS.get(d.name, d.get("image_shape", [0, 0, 0])[-1])
        _require(
            not (m.input_shape[-1] == 1 and channels > 1),
            f"model={m.name} takes 1-channel images (model.input_shape={list(m.input_shape)}) but dataset={d.name} "
            f"gives {channels}-channel images: set model.input_shape=[H, W, {channels}]",
        )
    if m.name in ("mnist_mobilenet", "mnist_mobilenet_v2"):
        _positive(cfg, "model.epochs", allow_zero=True)
        if m.name == "mnist_mobilenet":
            _positive(cfg, "model.width")
        else:
            _require(m.alpha > 0, f"model.alpha={m.alpha!r} is not allowed: use a value > 0 (e.g. 0.35)")
        _positive(cfg, "model.batch_size")
        _require(m.learning_rate > 0, f"model.learning_rate={m.learning_rate!r} is not allowed: use a value > 0")
        _require(0.0 <= m.bn_momentum < 1.0, f"model.bn_momentum={m.bn_momentum!r} is not allowed: use a value in [0, 1)")
