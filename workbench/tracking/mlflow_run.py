"""The MLflow writer: one run per stage execution, FAILED with its traceback on error.

Uses an explicit ``MlflowClient`` and run id (no fluent global state), so it behaves the
same in Hydra's parallel worker processes.
"""

from __future__ import annotations

import getpass
import glob
import json
import logging
import math
import os
import socket
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from workbench import interrupts, keys
from workbench.keys import ARTIFACT_TRACEBACK
from workbench.results import StageResult
from workbench.tracking.probe import TrackingUnavailable, resolve_tracking_uri

__all__ = ["RunNotEnded", "Tracker", "TrackedRun", "flatten", "open_client", "process_tags", "resolve_tracking_uri"]

log = logging.getLogger(__name__)
MAX_PARAM_LENGTH = 6000
SYSTEM_METRICS_INTERVAL_S = 10.0
TRAINING_KIND = "custom_model_development"  # the experiment kind (keys.TAG_EXPERIMENT_KIND) of model training
# The MLflow UI's shared view ("Share" on the runs table): an experiment tag ``mlflow.sharedViewState.<key>``
# holding the table's state as JSON, opened by ``?viewStateShareKey=<key>``. The workbench's view shows the
# figures that answer its questions as columns, newest runs first.
VIEW_KEY = "workbench"
VIEW_COLUMNS = (
    ("metrics", keys.FP32_TOP1),
    ("metrics", keys.SIM_TOP1),
    ("metrics", keys.TFLITE_TOP1),
    ("metrics", keys.SIM_DROP),
    ("metrics", keys.WEIGHTS_QUANTIZED),
    ("tags", keys.TAG_STAGE),
    ("tags", keys.TAG_COVERAGE),
)
BATCH = 100


def _process_start() -> float:
    import psutil

    return psutil.Process().create_time()


def process_tags() -> dict[str, str]:
    """Where a run executes (``workbench runs repair`` ends RUNNING runs whose process is gone), who ran
    it and from what (the UI's *Created by* and *Source*)."""
    tags = {
        keys.TAG_HOST: socket.gethostname(),
        keys.TAG_PID: str(os.getpid()),
        keys.TAG_PID_START: f"{_process_start():.2f}",
        keys.TAG_USER: _user(),
        keys.TAG_SOURCE_TYPE: "LOCAL",
        keys.TAG_SOURCE_NAME: "python -m workbench",
    }
    commit = _git_commit()
    if commit:
        tags[keys.TAG_GIT_COMMIT] = commit
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return str(os.getuid())


def _git_commit() -> str | None:
    """The project checkout's commit (MLflow's own reader), None outside a checkout."""
    from mlflow.utils.git_utils import get_git_commit

    return get_git_commit(str(Path(__file__).resolve().parent))


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts to dotted keys with string values (lists kept as their repr)."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = str(value)[:MAX_PARAM_LENGTH]
    return out


SQLITE_PREFIX = "sqlite:///"
STORE_LOCK_TIMEOUT_S = 300


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    return uri[len(SQLITE_PREFIX) :] if uri.startswith(SQLITE_PREFIX) else None


def open_client(uri: str) -> MlflowClient:
    """An MLflow client whose store exists and is migrated, safe when many processes start at once.

    Creating or migrating a SQLite store from several processes together corrupts it (each runs the
    schema migration); a file lock beside the database lets one process create it while the others
    wait, then open the finished store.
    """
    path = sqlite_path(uri)
    if path is None:
        return MlflowClient(tracking_uri=uri)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with FileLock(path + ".lock", timeout=STORE_LOCK_TIMEOUT_S):
        if not os.path.exists(path):
            _create_store(path)
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # migrates an older store, once
        except Exception as err:  # SQLAlchemy's and MLflow's errors alike: the store itself is damaged
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise TrackingUnavailable(
                f"tracking.uri={uri!r}: the store cannot be opened ({first}); if its creation was interrupted, move it "
                f"away (mv '{path}' '{path}.broken') and run again to start a new one"
            ) from None
    return client


def _create_store(path: str) -> None:
    """Create and migrate a new SQLite store under a temporary name, then move it into place: a store interrupted
    while it is created (kill -9, a full disk) leaves only a temporary file, never a half-migrated ``mlflow.db``."""
    folder = os.path.dirname(os.path.abspath(path))
    for stale in glob.glob(glob.escape(path) + ".creating-*"):  # left by a creator that was killed (we hold the lock)
        os.remove(stale)
    partial = f"{path}.creating-{os.getpid()}"
    try:
        MlflowClient(tracking_uri=SQLITE_PREFIX + partial).search_experiments(max_results=1)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    log.debug("created the tracking store %s (in %s)", path, folder)


@contextmanager
def _store_errors_quiet() -> Iterator[None]:
    """MLflow's SQL store logs each database error with its traceback before raising it; while a run ends, the
    workbench reports what matters itself (:class:`RunNotEnded`), in one line."""
    store_log = logging.getLogger("mlflow.store.db.utils")
    level = store_log.level
    store_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        store_log.setLevel(level)


def _database_error(err: BaseException) -> BaseException:
    """The database's own error under MLflow's and SQLAlchemy's wrappers (``database or disk is full``)."""
    seen = err
    while seen is not None:
        if getattr(seen, "orig", None) is not None:  # SQLAlchemy's DBAPIError keeps the driver's error
            return seen.orig
        seen = seen.__cause__ or seen.__context__
    return err


class RunNotEnded(RuntimeError):
    """The store refused a run's final status (a full disk, a store gone): the run stays RUNNING until
    ``python -m workbench.runs repair`` marks it FAILED (its process is gone by then)."""

    def __init__(self, run_id: str, status: str, uri: str, cause: BaseException):
        cause = _database_error(cause)
        why = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        super().__init__(
            f"run {run_id} could not be marked {status} ({why}): it stays RUNNING until "
            f"`python -m workbench.runs repair --tracking-uri {uri}` marks it FAILED, once the store can be written"
        )


def shared_view() -> str:
    """The runs table's state for :data:`VIEW_KEY`: the columns of :data:`VIEW_COLUMNS`, newest first."""
    columns = [f"{kind}.`{name}`" for kind, name in VIEW_COLUMNS]
    return json.dumps({"selectedColumns": columns, "orderByKey": "attributes.start_time", "orderByAsc": False})


def ui_url(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's runs table of an experiment, with the workbench's columns (its shared view)."""
    return f"{host}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"


class Tracker:
    """Where runs go: a tracking URI, an experiment, and its artifact location."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        self.uri = uri
        self.client = open_client(uri)
        path = sqlite_path(uri)
        if path is None:
            self.experiment_id = self._experiment(experiment, artifact_location)
        else:
            with FileLock(path + ".lock", timeout=STORE_LOCK_TIMEOUT_S):
                self.experiment_id = self._experiment(experiment, artifact_location)

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if keys.TAG_SHARED_VIEW_PREFIX + VIEW_KEY not in exp.tags:  # an experiment made before the view existed, or by hand
                try:
                    self.client.set_experiment_tag(exp.experiment_id, keys.TAG_SHARED_VIEW_PREFIX + VIEW_KEY, shared_view())
                except MlflowException as err:  # a read-only server: the UI still works, with its default columns
                    log.debug("could not set the runs table view on %s: %s", name, err)
            return exp.experiment_id
        location = Path(artifact_location).resolve().as_uri() if artifact_location and "://" not in artifact_location else artifact_location
        tags = {keys.TAG_EXPERIMENT_KIND: TRAINING_KIND, keys.TAG_SHARED_VIEW_PREFIX + VIEW_KEY: shared_view()}
        try:  # a model-training experiment (its kind), with the workbench's runs-table view (ui_url opens it)
            return self.client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException:
            # another process created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, str], parent_run_id: str | None = None) -> TrackedRun:
        """A new RUNNING run with its params; ended FAILED if logging them fails. :meth:`run` also ends it."""
        tags = {**process_tags(), **tags}
        if parent_run_id:
            tags[keys.TAG_PARENT] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        tracked = TrackedRun(self.client, run.info.run_id, self.uri)
        try:
            tracked.log_params(params)
            tracked.watch_system()
        except BaseException as err:
            tracked.end(err)
            raise
        return tracked

    @contextmanager
    def run(
        self, run_name: str, tags: Mapping[str, str], params: Mapping[str, str], parent_run_id: str | None = None
    ) -> Iterator[TrackedRun]:
        """A run that ends FINISHED, FAILED (with its traceback) or KILLED: no run starts after a signal, and
        one that finishes after a signal (no checkpoint came) is KILLED; its start and end are never cut."""
        interrupts.checkpoint()
        tracked = None
        try:
            with interrupts.held():
                tracked = self.start(run_name, tags, params, parent_run_id)
            yield tracked
        except BaseException as err:
            if tracked is not None:
                tracked.end(err)
            raise
        tracked.end(interrupts.signalled())
        interrupts.checkpoint()


class TrackedRun:
    """A started run: what it logs, and :meth:`end` with FINISHED, FAILED or KILLED."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str | None = None):
        self.client = client
        self.run_id = run_id
        self.uri = uri or client.tracking_uri
        self._monitor = None

    def watch_system(self, interval_s: float = SYSTEM_METRICS_INTERVAL_S) -> None:
        """MLflow's system metrics (CPU, memory, GPU when present) every ``interval_s`` while the run lasts."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s, tracking_uri=self.uri)
            self._monitor.start()
        except Exception as err:  # psutil missing, or a store that refuses: the run goes on without them
            log.debug("no system metrics: %s", err)
            self._monitor = None

    def end(self, error: BaseException | None) -> None:
        """FINISHED without ``error``; KILLED for an interrupt or exit; FAILED with the traceback otherwise.
        A signal arriving meanwhile is raised once the final status is written.

        The traceback and error tag are best effort (a full disk may refuse them); the status is not: when the
        store refuses it, :class:`RunNotEnded` says that the run stays RUNNING and what marks it later.
        """
        with interrupts.held(), _store_errors_quiet():
            if self._monitor is not None:
                self._monitor.finish()
                self._monitor = None
            status = "FINISHED" if error is None else "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"
            if error is not None:
                text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
                for record in (
                    lambda: self.client.log_text(self.run_id, text, ARTIFACT_TRACEBACK),
                    lambda: self.client.set_tag(self.run_id, keys.TAG_ERROR, f"{type(error).__name__}: {error}"[:5000]),
                ):
                    try:
                        record()
                    except Exception as err:  # the status below matters more than the details
                        log.debug("run %s: could not record its error (%s)", self.run_id, err)
            try:
                self.client.set_terminated(self.run_id, status)
            except Exception as err:
                raise RunNotEnded(self.run_id, status, self.uri, err) from (error or err)

    def rename(self, name: str) -> None:
        """The run's name in the UI (``mlflow.runName``)."""
        self.client.update_run(self.run_id, name=name)

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and not math.isnan(float(v))]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_inputs(self, datasets: list) -> None:
        """The run's datasets (MLflow ``DatasetInput``s); a store that cannot take them is only a warning."""
        if not datasets:
            return
        try:
            self.client.log_inputs(self.run_id, datasets=datasets)
        except MlflowException as err:
            log.warning("datasets not logged: %s", err)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_file(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, path, artifact_path)

    def log_result(self, result: StageResult, register_as: str | None = None) -> None:
        """Write everything a stage produced: metrics, tags, tables (CSV), JSON, figures (PNG), and the
        exported model as an MLflow model (registered as ``register_as`` when given)."""
        self.log_metrics(result.metrics)
        for key, values in result.series.items():
            for step, value in values.items():
                self.log_metrics({key: value}, step=step)
        self.set_tags(result.tags)
        for artifact_path, local in result.directories.items():
            self.client.log_artifacts(self.run_id, local, artifact_path)
        with tempfile.TemporaryDirectory() as tmp:
            for name, table in result.tables.items():
                path = os.path.join(tmp, os.path.basename(name))
                table.to_csv(path, index=False)
                self.log_file(path, os.path.dirname(name) or None)
            for name, doc in result.documents.items():
                text = json.dumps(doc, indent=2)
                self.client.log_text(self.run_id, text, name)
                if not name.endswith(".json"):  # the MLflow UI previews .json files only
                    self.client.log_text(self.run_id, text, name + ".json")
            for name, fig in result.figures.items():
                self.client.log_figure(self.run_id, fig, name)
        if result.exported is not None:
            from workbench.tracking.models import log_exported_model

            tags = self.client.get_run(self.run_id).data.tags
            try:
                log_exported_model(self.uri, self.run_id, result.exported, tags, result.metrics, register_as)
            except Exception as err:  # the files are logged under export/ already: say so, keep the run's result
                log.error("the exported model was not logged as an MLflow model: %s", err)
                self.set_tags({"model.error": f"{type(err).__name__}: {err}"[:5000]})
