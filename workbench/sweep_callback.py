"""The Hydra callback that owns a sweep's parent MLflow run.

``on_multirun_start`` creates the experiment and one parent run before any job starts (so parallel
jobs never race to create them) and hands its id to the jobs through ``WORKBENCH_PARENT_RUN_ID``
(inherited by launcher worker processes; Ray's workers get it in their ``runtime_env``), also writing
it to a ``parent_run_id`` file in the sweep directory;
each job's run becomes its child. ``on_multirun_end`` writes the sweep's comparison report, logs it
to the parent run and ends it.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from workbench import interrupts, keys

log = logging.getLogger(__name__)
PARENT_ENV = keys.ENV_PARENT_RUN_ID


def _hand_to_ray_workers(config: DictConfig, run_id: str) -> None:
    """Ray's workers do not inherit the driver's environment: the parent run id travels in the job's
    ``runtime_env`` (the Ray launcher passes ``hydra.launcher.ray.init`` to ``ray.init`` after this callback)."""
    from workbench.threads import launcher_kind

    if launcher_kind(config.hydra.get("launcher")) != "ray":
        return
    with read_write(config), open_dict(config):
        env_vars = {**(OmegaConf.select(config, "hydra.launcher.ray.init.runtime_env.env_vars") or {}), PARENT_ENV: run_id}
        OmegaConf.update(config, "hydra.launcher.ray.init.runtime_env.env_vars", env_vars, merge=True, force_add=True)


class SweepParentRun(Callback):
    def __init__(self) -> None:
        self.run_id: str | None = None
        self.tracker = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from workbench.app import tracker_for
        from workbench.reporting.describe import sweep_name
        from workbench.threads import launcher_kind
        from workbench.tracking.mlflow_run import process_tags
        from workbench.tracking.probe import TrackingUnavailable, check_tracking_uri, resolve_tracking_uri

        outputs = config.paths.outputs_dir
        uri = resolve_tracking_uri(config.tracking.uri, outputs)
        try:
            check_tracking_uri(uri)
        except TrackingUnavailable as err:
            print(f"workbench: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        self.tracker = tracker_for(config.paths.outputs_dir, config.tracking)
        overrides = list(config.hydra.overrides.task)
        tags = {
            "sweep": " ".join(overrides),
            keys.TAG_DESCRIPTION: f"Hydra sweep `python -m workbench -m {' '.join(overrides)}`.",
            **process_tags(),
        }
        run = self.tracker.client.create_run(self.tracker.experiment_id, run_name=sweep_name(overrides), tags=tags)
        self.run_id = run.info.run_id
        os.environ[PARENT_ENV] = self.run_id
        sweep_dir = config.hydra.sweep.dir
        os.makedirs(sweep_dir, exist_ok=True)
        with open(os.path.join(sweep_dir, keys.PARENT_RUN_FILE), "w") as f:
            f.write(self.run_id)
        _hand_to_ray_workers(config, self.run_id)
        log.info("sweep parent MLflow run %s", self.run_id)
        if launcher_kind(config.hydra.get("launcher")) == "joblib":
            from workbench.launcher import install

            install()  # a worker that dies fails its own job; the others run
            interrupts.relay_to_workers()  # SIGTERM: every worker ends its run KILLED, then the sweep stops
        atexit.register(self._end_if_open, "KILLED")  # a sweep stopped by SIGTERM/Ctrl-C still ends its runs

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None:
            return
        from workbench.app import report_and_summarise

        status = "FAILED"
        try:
            status = self._final_status()
            out = os.path.join(config.paths.reports_dir, f"sweep-{self.run_id[:8]}")
            text = report_and_summarise(
                self.tracker, config.tracking.experiment, out, "sweep parent run", self.run_id, parent_run_id=self.run_id
            )
            if text:
                description = self.tracker.client.get_run(self.run_id).data.tags.get(keys.TAG_DESCRIPTION, "")
                self.tracker.client.set_tag(self.run_id, keys.TAG_DESCRIPTION, f"{description}\n\n{text}"[: keys.MAX_TAG_LENGTH])
        finally:
            self.tracker.client.set_terminated(self.run_id, status)
            os.environ.pop(PARENT_ENV, None)

    def _end_if_open(self, status: str) -> None:
        """At exit: the parent, and every job run whose worker process was killed before it could end its run
        (joblib kills the remaining workers when a sweep is stopped), end with ``status``."""
        if self.run_id is None:
            return
        from workbench.tracking.repair import end_if_gone

        client = self.tracker.client
        running = client.search_runs(
            [self.tracker.experiment_id], f"tags.`{keys.TAG_PARENT}` = '{self.run_id}' and attributes.status = 'RUNNING'"
        )
        for child in running:
            end_if_gone(client, child, status, "the sweep's driver when the sweep stopped")
        if client.get_run(self.run_id).info.status == "RUNNING":
            client.set_terminated(self.run_id, status)

    def _final_status(self) -> str:
        """FINISHED when any job finished, FAILED when every job failed (or none ran)."""
        children = self.tracker.client.search_runs(
            [self.tracker.experiment_id], f"tags.`{keys.TAG_PARENT}` = '{self.run_id}'", max_results=10000
        )
        return "FINISHED" if any(r.info.status == "FINISHED" for r in children) else "FAILED"
