"""A disk cache of models keyed by the settings that produced them.

Each ``<name>-<key>.keras`` has a JSON sidecar with its spec, extra data and the file's SHA-256: a file
that does not match (truncated, corrupt) or does not load is rebuilt, never trusted. The cache is optional:
a folder that cannot be written only costs a warning. Files are group-readable, so a shared outputs
folder works for a team or a cluster; one process builds a given entry while the others wait for it (a file
lock beside it), so the jobs of a sweep do not build the same transform side by side.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable

import keras
import numpy as np

log = logging.getLogger(__name__)
FILE_MODE = 0o664


def cache_key(spec: dict) -> str:
    """A short stable hash of a JSON-serialisable spec."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_digest(model: keras.Model) -> str:
    """A hash of a model's architecture and weights: the same however the model was obtained.

    The compile configuration (optimizer, loss) is left out: a freshly trained model and the same model
    reloaded from disk with ``compile=False`` are the same source for a transform.
    """
    config = json.loads(model.to_json())
    config.pop("compile_config", None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for w in model.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load(path: str, sidecar: str) -> tuple[keras.Model, dict] | None:
    """The cached model and extra data, or None (with a warning) when the entry is corrupt."""
    try:
        with open(sidecar) as f:
            meta = json.load(f)
        if "sha256" not in meta:
            raise ValueError("written without a SHA-256 by an older version")
        if meta["sha256"] != file_sha256(path):
            raise ValueError("its SHA-256 does not match the one recorded when it was written")
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # any unreadable entry is rebuilt
        log.warning("cached model %s is unusable (%s): rebuilding it", path, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None
    log.debug("loading cached model %s", path)
    return model, meta.get("extra") or {}


def _write_atomically(cache_dir: str, target: str, write: Callable[[str], None]) -> None:
    """Write then rename, so parallel jobs never read a half-written file."""
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(target)[1], dir=cache_dir)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _store(cache_dir: str, path: str, sidecar: str, spec: dict, model: keras.Model, extra: dict) -> None:
    _write_atomically(cache_dir, path, model.save)

    def write_sidecar(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump({"spec": spec, "extra": extra, "sha256": file_sha256(path)}, f, indent=2, sort_keys=True, default=str)

    _write_atomically(cache_dir, sidecar, write_sidecar)


def cached_model(cache_dir: str, name: str, spec: dict, build: Callable[[], tuple[keras.Model, dict]]) -> tuple[keras.Model, dict, bool]:
    """Load ``name-<hash(spec)>.keras`` (and its JSON sidecar) or build and store both.

    ``build`` returns the model and a JSON-serialisable dict (e.g. a transform report).
    Returns (model, dict, cache hit).
    """
    path = os.path.join(cache_dir, f"{name}-{cache_key(spec)}.keras")
    sidecar = path[: -len(".keras")] + ".json"
    if (loaded := _stored(path, sidecar)) is not None:
        return (*loaded, True)
    with _building(cache_dir, path):
        if (loaded := _stored(path, sidecar)) is not None:  # another process built it while this one waited
            return (*loaded, True)
        model, extra = build()
        try:
            _store(cache_dir, path, sidecar, spec, model, extra)
            log.debug("cached model at %s", path)
        except OSError as err:
            log.warning("could not cache the model in %s (%s): continuing without the cache", cache_dir, err.strerror or err)
    return model, extra, False


def _stored(path: str, sidecar: str) -> tuple[keras.Model, dict] | None:
    if os.path.exists(path) and os.path.exists(sidecar):
        return _load(path, sidecar)
    return None


@contextlib.contextmanager
def _building(cache_dir: str, path: str):
    """Hold ``path``'s build lock (a file beside it) while the entry is built; without one where the folder cannot
    be written (the build then runs unshared, as without a cache)."""
    from filelock import FileLock, Timeout

    try:
        os.makedirs(cache_dir, exist_ok=True)
        lock = FileLock(path + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process that is building %s", os.path.basename(path))
            lock.acquire()
    except OSError as err:
        log.debug("no build lock for %s (%s)", path, err)
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
