"""Hydra's joblib launcher, except that a worker process that dies (a signal, the OOM killer) fails its own job only.

``joblib.Parallel`` ends the whole sweep when one loky worker dies: the jobs running beside it are stopped and
the queued ones never run. Here the jobs go to loky's executor one future each. When a worker dies, the jobs
that had finished keep their results; the others are run again, one at a time in a fresh worker, so that a job
that kills its worker again is known: its run is ended FAILED with the signal named, and the sweep goes on.

Hydra admits launcher classes only from the ``hydra_plugins`` namespace, which this project's layout does not
ship; so the sweep's callback installs :func:`resilient_launch` as the launch function of the installed joblib
launcher (``hydra/launcher=joblib``) before the jobs start (:func:`install`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import as_completed

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib.externals.loky import get_reusable_executor
from joblib.externals.loky.process_executor import TerminatedWorkerError

from workbench import interrupts, keys

log = logging.getLogger(__name__)


def _workers(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def _signal_of(err: BaseException) -> str:
    """``SIGKILL(-9)`` from loky's message ("The exit codes of the workers are {SIGKILL(-9)}"), else the error's type."""
    found = re.search(r"\{([^}]*)\}", str(err))
    return found.group(1) if found else type(err).__name__


def install() -> None:
    """Make the installed joblib launcher launch through :func:`resilient_launch` (idempotent)."""
    _core.launch = resilient_launch


def resilient_launch(launcher: JoblibLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    """What ``hydra_plugins.hydra_joblib_launcher._core.launch`` does, surviving dead workers (module docstring)."""
    return _Launch(launcher).run(job_overrides, initial_job_idx)


class _Launch:
    def __init__(self, launcher: JoblibLauncher):
        assert launcher.config is not None and launcher.task_function is not None and launcher.hydra_context is not None
        self.config, self.task_function, self.hydra_context = launcher.config, launcher.task_function, launcher.hydra_context
        self.n_jobs = launcher.joblib.get("n_jobs")

    def run(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        workers = _workers(self.n_jobs)
        state = Singleton.get_state()
        jobs = {initial_job_idx + i: list(overrides) for i, overrides in enumerate(job_overrides)}
        log.info("joblib (loky) is launching %d jobs on %d workers; a worker that dies fails its own job only", len(jobs), workers)

        def submit(executor, idx):
            return executor.submit(_core.execute_job, idx, jobs[idx], self.hydra_context, self.config, self.task_function, state)

        results: dict[int, JobReturn] = {}
        executor = get_reusable_executor(max_workers=workers)
        futures = {submit(executor, idx): idx for idx in jobs}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except TerminatedWorkerError as err:
                self._stop_if_interrupted()
                log.error("a worker died (%s): the unfinished jobs run again, one at a time", _signal_of(err))
                break
        if len(results) == len(jobs):
            return [results[idx] for idx in sorted(jobs)]
        # the other futures of a broken executor fail too; whatever had finished is kept
        for future, idx in futures.items():
            if idx not in results and future.done() and future.exception() is None:
                results[idx] = future.result()
        self._end_orphaned_runs("KILLED", "stopped when another job's worker died; the job was run again")
        for idx in sorted(set(jobs) - set(results)):
            self._stop_if_interrupted()
            try:
                results[idx] = submit(get_reusable_executor(max_workers=1), idx).result()
            except TerminatedWorkerError as err:
                why = f"the job's worker process died ({_signal_of(err)})"
                log.error("job %d (%s): %s; the sweep goes on", idx, " ".join(jobs[idx]), why)
                self._end_orphaned_runs("FAILED", why)
                # as every failing job of ours: its run is FAILED, the job returns nothing, the sweep goes on (__main__)
                results[idx] = JobReturn(overrides=jobs[idx], status=JobStatus.COMPLETED, _return_value=None)
        return [results[idx] for idx in sorted(jobs)]

    @staticmethod
    def _stop_if_interrupted() -> None:
        """A sweep stopped by SIGTERM/Ctrl-C (relayed to the workers) stops: its jobs are not run again."""
        stop = interrupts.signalled()
        if stop is not None:
            raise stop

    def _end_orphaned_runs(self, status: str, why: str) -> None:
        """End ``status`` the sweep's RUNNING job runs whose process is gone (a dead worker cannot end its own)."""
        parent = os.environ.get(keys.ENV_PARENT_RUN_ID)
        if not parent:
            return
        from workbench.app import tracker_for
        from workbench.tracking.repair import end_if_gone

        tracker = tracker_for(self.config.paths.outputs_dir, self.config.tracking)
        running = tracker.client.search_runs(
            [tracker.experiment_id], f"tags.`{keys.TAG_PARENT}` = '{parent}' and attributes.status = 'RUNNING'"
        )
        for run in running:
            if end_if_gone(tracker.client, run, status, f"the sweep's driver: {why}").startswith("marked"):
                tracker.client.set_tag(run.info.run_id, keys.TAG_ERROR, why)
