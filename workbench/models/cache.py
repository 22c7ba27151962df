"""A disk cache of models keyed by the settings that produced them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from typing import Callable

import keras

log = logging.getLogger(__name__)


def cache_key(spec: dict) -> str:
    """A short stable hash of a JSON-serialisable spec."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_model(cache_dir: str, name: str, spec: dict, build: Callable[[], keras.Model]) -> tuple[keras.Model, bool]:
    """Load ``name-<hash(spec)>.keras`` from ``cache_dir`` or build and store it; returns (model, hit)."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{name}-{cache_key(spec)}.keras")
    if os.path.exists(path):
        log.info("loading cached model %s", path)
        return keras.models.load_model(path, compile=False), True
    model = build()
    # write then rename, so parallel jobs never read a half-written file
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=cache_dir)
    os.close(fd)
    model.save(tmp)
    os.replace(tmp, path)
    with open(path[: -len(".keras")] + ".json", "w") as f:
        json.dump(spec, f, indent=2, sort_keys=True, default=str)
    log.info("cached model at %s", path)
    return model, False
