"""A disk cache of models keyed by the settings that produced them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from typing import Callable

import keras
import numpy as np

log = logging.getLogger(__name__)


def cache_key(spec: dict) -> str:
    """A short stable hash of a JSON-serialisable spec."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_digest(model: keras.Model) -> str:
    """A hash of a model's architecture and weights: identifies a source model for caching."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:16]


def cached_model(
    cache_dir: str, name: str, spec: dict, build: Callable[[], tuple[keras.Model, dict]]
) -> tuple[keras.Model, dict, bool]:
    """Load ``name-<hash(spec)>.keras`` (and its JSON sidecar) or build and store both.

    ``build`` returns the model and a JSON-serialisable dict (e.g. a transform report).
    Returns (model, dict, cache hit).
    """
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{name}-{cache_key(spec)}.keras")
    sidecar = path[: -len(".keras")] + ".json"
    if os.path.exists(path) and os.path.exists(sidecar):
        log.info("loading cached model %s", path)
        with open(sidecar) as f:
            extra = json.load(f).get("extra") or {}
        return keras.models.load_model(path, compile=False), extra, True
    model, extra = build()
    # write then rename, so parallel jobs never read a half-written file
    for target, write in ((sidecar, None), (path, model.save)):
        fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(target)[1], dir=cache_dir)
        os.close(fd)
        if write is None:
            with open(tmp, "w") as f:
                json.dump({"spec": spec, "extra": extra}, f, indent=2, sort_keys=True, default=str)
        else:
            write(tmp)
        os.replace(tmp, target)
    log.info("cached model at %s", path)
    return model, extra, False
