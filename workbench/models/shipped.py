"""The embedded models' trained weights, shipped with the project: every clone starts from the same model.

Training is deterministic on one machine at one TensorFlow thread count, but not across thread counts or
CPUs (float sums in another order: the default model trained with 1 and 2 threads differs in its digest), so
figures measured on a model trained on first use would differ from machine to machine. An embedded model
whose settings are the shipped ones (model options, dataset, seed, classes: the cache spec without the Keras
version) is built and given these weights instead of being trained. ``python -m workbench.weights retrain``
writes them (one thread), ``python -m workbench.weights check`` retrains and compares the digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from workbench.models.cache import file_sha256

log = logging.getLogger(__name__)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
TRAINING_THREADS = 1  # the thread count the shipped weights were trained at (reproducible at this count)


def shipped_spec(spec: dict) -> dict:
    """The settings that identify a trained model as JSON reads them back, less the Keras version (weights
    load across versions)."""
    return {k: v for k, v in json.loads(json.dumps(spec, default=str)).items() if k != "keras"}


def manifest() -> dict[str, Any]:
    """Name → {spec, file, sha256, digest, trained}: what ships, and how it was made."""
    if not MANIFEST.exists():
        return {}
    with open(MANIFEST) as f:
        return json.load(f)


def values_digest(model: keras.Model) -> str:
    """A hash of the weight values in order: what training produced, whatever names Keras gave the layers
    (auto-generated names depend on what the process built before)."""
    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:16]


def machine() -> dict[str, str]:
    """What bit-for-bit retraining depends on: the CPU, TensorFlow and Keras versions, the thread count."""
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "tensorflow": tf.__version__, "keras": keras.__version__, "threads": str(TRAINING_THREADS)}


def load_shipped(name: str, spec: dict, build: Callable[[], keras.Model]) -> keras.Model | None:
    """``build()`` with the shipped weights of ``name`` when ``spec`` is the one they were trained with, else None.

    A file that does not match its recorded SHA-256, or weights that do not fit the built model (another Keras
    building the architecture differently), cost a warning and the model is trained instead.
    """
    entry = manifest().get(name)
    if entry is None or entry["spec"] != shipped_spec(spec):
        return None
    path = WEIGHTS_DIR / entry["file"]
    try:
        if file_sha256(path) != entry["sha256"]:
            raise ValueError("its SHA-256 does not match the manifest")
        model = build()
        model.load_weights(path)
    except Exception as err:  # unusable: train as any other setting would
        log.warning("shipped weights %s unusable (%s): training %s instead", path.name, str(err).splitlines()[0][:200], name)
        return None
    log.info("loading %s with its shipped weights (trained once, the same on every machine)", name)
    return model


def store_shipped(name: str, spec: dict, model: keras.Model) -> Path:
    """Write ``model``'s weights and its manifest entry (the retrain command)."""
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    path = WEIGHTS_DIR / f"{name}.weights.h5"
    bare = model.__class__.from_config(model.get_config())  # the weights alone: no optimizer state beside them
    bare.set_weights(model.get_weights())
    bare.save_weights(path)
    entries = manifest()
    entries[name] = {
        "spec": shipped_spec(spec),
        "file": path.name,
        "sha256": file_sha256(path),
        "digest": values_digest(model),
        "trained": machine(),
    }
    tmp = MANIFEST.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, MANIFEST)
    return path
