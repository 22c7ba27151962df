"""Where a job runs: TensorFlow's thread pools per job (cores / jobs running at once) and the seeds.

Apart from the run lifecycle (``app.py``): the sweep callback asks which launcher runs a sweep, and
``python -m workbench.weights`` trains on one thread with the same seeding as a run.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def launcher_kind(launcher) -> str:
    """``joblib``, ``ray`` or ``other``: which Hydra launcher a ``hydra.launcher`` config node selects."""
    target = str((launcher or {}).get("_target_", "")).lower()
    return next((kind for kind in ("joblib", "ray") if kind in target), "other")


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine: the launcher's ``n_jobs`` (joblib; -1 = one
    per core), the CPUs a Ray job is given divide the cores likewise, 1 otherwise."""
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
    except ValueError:  # not under Hydra
        return 1
    kind = launcher_kind(launcher)
    if kind == "joblib":
        n = int(launcher.get("n_jobs") or 1)
        return _cores() if n < 0 else max(1, n)
    if kind == "ray":
        cpus = (launcher.get("ray") or {}).get("remote", {}).get("num_cpus")
        return max(1, _cores() // int(cpus)) if cpus else 1
    return 1


def thread_budget(threads: int | None) -> int | None:
    """TensorFlow's thread pool size for this job: ``threads`` when set, else cores / parallel jobs when
    several jobs share the machine (TensorFlow's own default, one pool per core per process, otherwise)."""
    if threads is not None:
        return int(threads) or None  # 0: TensorFlow's default
    jobs = parallel_jobs()
    return max(1, _cores() // jobs) if jobs > 1 else None


def configure_threads(threads: int | None) -> None:
    """Size TensorFlow's intra- and inter-op pools (before its first op; a reused worker keeps its pools)."""
    import tensorflow as tf

    budget = thread_budget(threads)
    if budget is None:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(budget)
        tf.config.threading.set_inter_op_parallelism_threads(budget)
        log.debug("TensorFlow thread pools: %d threads", budget)
    except RuntimeError:  # already initialised by an earlier job in this worker process
        pass


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
