"""The task function: validate → open the store → seed → build → run the stage(s) → log → summarise.

Returns ``sim/top1`` so Hydra sweepers can optimise it. Errors are raised, never printed here:
``workbench.__main__`` turns them into one console line and an exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from workbench import interrupts, keys
from workbench.config.schema import Config
from workbench.config.validate import ConfigError, node_name, validate
from workbench.registry import stage_names
from workbench.threads import configure_threads, seed_everything

log = logging.getLogger(__name__)


def _hydra_choices_and_overrides() -> tuple[dict, str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        return dict(hc.runtime.choices), " ".join(hc.overrides.task)
    except ValueError:  # not running under Hydra (e.g. compose API in tests)
        return {}, ""


def _text(value) -> str:
    """An enum's YAML value, or the value itself, as a string."""
    return str(getattr(value, "value", value))


def setting_tags(param_bw, output_bw, per_channel, param_scheme, output_scheme) -> dict[str, str]:
    """The tags that say which quantization setting a run is (its report groups by them)."""
    return {
        keys.TAG_SCHEME: f"{_text(param_scheme)}/{_text(output_scheme)}",
        keys.TAG_PARAM_BW: str(param_bw),
        keys.TAG_OUTPUT_BW: str(output_bw),
        keys.TAG_PER_CHANNEL: str(per_channel),
    }


def resolved(cfg: DictConfig) -> dict:
    """The composed config as plain data, interpolations resolved: the run's params and ``config.yaml`` (what was
    asked for). Everything below ``run`` reads this or the typed config, never the ``DictConfig``."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def run_tags(plain: dict, stage: str | None) -> dict[str, str]:
    """Tags of a run; ``stage`` None for a pipeline's parent run (reports skip runs without a stage)."""
    choices, overrides = _hydra_choices_and_overrides()
    q = plain["quant"]
    tags = {
        keys.TAG_MODEL: str(plain["model"]["name"]),
        keys.TAG_DATASET: str(plain["dataset"]["name"]),
        **setting_tags(q["param_bw"], q["output_bw"], q["per_channel"], q["param_scheme"], q["output_scheme"]),
        keys.TAG_OVERRIDES: overrides,
        **{f"choice.{k}": str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra")},
    }
    if "tensorflow" in sys.modules:  # the thread pools this job's TensorFlow was given (0: its default)
        tags[keys.TAG_THREADS] = str(sys.modules["tensorflow"].config.threading.get_intra_op_parallelism_threads())
    if stage is not None:
        tags[keys.TAG_STAGE] = stage
        tags[keys.TAG_RUN_TYPE] = keys.EVALUATION_RUN
    else:
        tags[keys.TAG_PIPELINE] = ",".join(str(s) for s in plain["pipeline"]["stages"])
    return tags


def tracker_for(outputs_dir: str, tracking):
    """The run's tracking store and experiment. A local store (SQLite, files) keeps artifacts under
    ``<outputs>/mlartifacts``; a tracking server keeps them where it is configured to (its artifact proxy),
    unless ``tracking.artifact_location`` says otherwise."""
    from workbench.tracking.mlflow_run import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking.uri, outputs_dir)
    local = not uri.startswith(("http://", "https://", "databricks"))
    default = os.path.join(outputs_dir, "mlartifacts") if local else None
    return Tracker(uri, tracking.experiment, tracking.artifact_location or default)


@contextmanager
def tracked_run(tracker, plain: dict, stage: str | None, parent_run_id: str | None = None) -> Iterator[tuple]:
    """One MLflow run (a stage's, or a pipeline's parent with ``stage`` None) and the result it logs.

    Params are the resolved config, ``config.yaml`` is logged first; whatever the block put into the
    ``StageResult`` is logged at the end, also when it raised (the run then ends FAILED or KILLED).
    """
    from workbench.reporting.describe import run_name
    from workbench.results import StageResult
    from workbench.tracking.mlflow_run import flatten

    container = {**plain, "stage": {"name": stage}} if stage is not None else plain
    model = str(plain["model"]["name"])
    name = run_name(stage, model, plain["quant"])
    result = StageResult()
    with tracker.run(name, run_tags(plain, stage), flatten(container), parent_run_id) as tracked:
        log.log(logging.INFO if stage else logging.DEBUG, "%s: MLflow run %s", name, tracked.run_id)
        tracked.log_text(OmegaConf.to_yaml(container), keys.ARTIFACT_CONFIG)
        error = None
        try:
            yield tracked, result
        except BaseException as err:
            error = f"{type(err).__name__}: {err}"
            raise
        finally:
            if result.simulated is not None:  # what ran, not what the config asked for
                name = record_simulated(tracked, result, stage, model, plain["quant"], name)
            describe(result, name, error)
            tracked.log_result(result, register_as=plain["export"]["register_as"])
            log_children(tracker, result, tracked.run_id)


def log_children(tracker, result, run_id: str) -> None:
    """The stage's steps as child runs of its run (also when it failed midway: the steps it finished)."""
    for child in result.children:
        with tracker.run(child.name or "step", child.tags, {}, run_id) as tracked:
            tracked.log_result(child)


def record_simulated(tracked, result, stage: str | None, model: str, quant: dict, name: str) -> str:
    """Setting tags and run name from the settings the stage simulated with, when they differ from the config's
    (the config's stay in the params and in ``requested``). Returns the run's name."""
    from workbench.reporting.describe import run_name

    s = result.simulated
    ran = setting_tags(s.param_bw, s.output_bw, s.per_channel, s.param_scheme, s.output_scheme)
    configured = setting_tags(quant["param_bw"], quant["output_bw"], quant["per_channel"], quant["param_scheme"], quant["output_scheme"])
    if ran == configured:
        return name
    plain = {**quant, "param_bw": s.param_bw, "output_bw": s.output_bw, "per_channel": s.per_channel}
    plain.update(param_scheme=_text(s.param_scheme), output_scheme=_text(s.output_scheme))
    result.tags.update(ran)
    result.tags[keys.TAG_REQUESTED] = name
    renamed = run_name(stage, model, plain)
    tracked.rename(renamed)
    log.info("%s simulated %s: run renamed %s", stage, renamed.split(" · ", 2)[-1], renamed)
    return renamed


def describe(result, name: str, error: str | None) -> None:
    """The run's Markdown description (``mlflow.note.content``), before what the stage wrote there itself."""
    from workbench.reporting.describe import run_description
    from workbench.reporting.headline import Headline, task_of

    headline = Headline(task_of(result.tags.get(keys.TAG_TASK_SPEC)))
    table = result.tables.get(headline.artifact)
    text = run_description(name, result.metrics, table, error, result.tags.get(keys.TAG_COVERAGE, ""), headline)
    own = result.tags.get(keys.TAG_DESCRIPTION)
    result.tags[keys.TAG_DESCRIPTION] = (text + (f"\n{own}" if own else ""))[: keys.MAX_TAG_LENGTH]


def _record_invalid_job(plain: dict, err: ConfigError, parent_run_id: str) -> None:
    """A sweep job with a value that is not allowed: a FAILED child run whose error is the one-line message."""
    stage = str(plain["stage"]["name"]) if plain.get("stage") is not None else None
    try:  # raising inside the run ends it FAILED with the message as its error tag and traceback.txt
        with tracked_run(tracker_for(plain["paths"]["outputs_dir"], SimpleNamespace(**plain["tracking"])), plain, stage, parent_run_id):
            raise err
    except ConfigError:
        pass


def run(cfg: DictConfig) -> float | None:
    """One stage (``+stage=NAME``) or, with no stage, the pipeline of ``pipeline.stages``.

    Raises :class:`ConfigError` or :class:`TrackingUnavailable` before any TensorFlow work; a sweep job
    with a bad value is first recorded as a FAILED child run of the sweep.
    """
    return run_and_id(cfg)[0]


def run_and_id(cfg: DictConfig) -> tuple[float | None, str, str]:
    """:func:`run`, with the id of the MLflow run it made (the pipeline's parent run without a stage) and the
    tracking URI it is in."""
    from workbench.tracking.probe import check_tracking_uri, resolve_tracking_uri

    parent = os.environ.get(keys.ENV_PARENT_RUN_ID)
    plain = resolved(cfg)
    try:
        config = validate(cfg, stage_names())  # typed from here on
    except ConfigError as err:
        if parent is not None:
            _record_invalid_job(plain, err, parent)
        raise
    check_tracking_uri(resolve_tracking_uri(config.tracking.uri, config.paths.outputs_dir))

    interrupts.install()  # SIGTERM/Ctrl-C: the run ends KILLED at the next checkpoint
    tracker = tracker_for(config.paths.outputs_dir, config.tracking)  # before TensorFlow: a store problem shows in seconds
    configure_threads(config.threads)
    import keras

    keras.backend.clear_session()  # launcher workers (joblib/loky) are reused across jobs
    seed_everything(config.seed, config.deterministic)
    log.debug("MLflow tracking at %s, experiment %r", tracker.uri, config.tracking.experiment)
    if config.stage is None:
        return (*run_pipeline(config, plain, tracker), tracker.uri)
    top1, run_id = run_stage(config, plain, tracker, config.stage.name, parent)
    if parent is None:  # a sweep's summary comes at its end, from the Hydra callback
        out = os.path.join(config.paths.reports_dir, f"run-{run_id[:8]}")
        report_and_summarise(tracker, config.tracking.experiment, out, "run", run_id, like_run=run_id)
    return top1, run_id, tracker.uri


def report_and_summarise(tracker, experiment: str, out_dir: str, label: str, run_id: str, **selection) -> str | None:
    """Write the comparison report and print the closing summary (a failure to report is only a warning).

    Returns the report as Markdown (a parent run's description), None when there was nothing to report.
    """
    from workbench.reporting.report import ReportError, build_report
    from workbench.reporting.summary import closing_summary

    interrupts.checkpoint()  # a signal after the last run: no report
    try:
        report = build_report(tracker.client, experiment, out_dir, title=f"workbench report: {label} {run_id[:8]}", **selection)
    except ReportError as err:
        log.warning("no report: %s", err)
        return None
    except OSError as err:  # a full disk, a folder that cannot be written: the runs are already complete
        log.error("no report: %s could not be written (%s); the runs are recorded, rerun `python -m workbench.report`", out_dir, err)
        return None
    print(closing_summary(report, out_dir, label, run_id, tracker.uri, tracker.experiment_id), flush=True)
    return report.markdown()


def _build(config: Config, result) -> tuple:
    from workbench.stages.setup import build_data, build_model

    with result.timed("data"):
        data = build_data(config)
    with result.timed("model"):
        model = build_model(config, data)
    return data, model


def run_stage(
    config: Config, plain: dict, tracker, stage: str, parent_run_id: str | None = None, built: tuple | None = None
) -> tuple[float | None, str]:
    """One MLflow run around one stage; ``built`` = (data, model) reuses what a pipeline built.

    Returns the sim's headline metric (``sim/top1`` for classification; None if never measured) and the run id.
    """
    from workbench import registry
    from workbench.reporting.headline import task_spec
    from workbench.stages.setup import build_context, build_task, check_pairing
    from workbench.tracking.datasets import dataset_inputs

    stage_fn = registry.get(stage).function()
    with tracked_run(tracker, plain, stage, parent_run_id) as (tracked, result):
        data, model = built if built is not None else _build(config, result)
        try:
            task = build_task(config, model)
            result.tags.update({keys.TAG_TASK: task.name, keys.TAG_TASK_METRIC: task.metric, keys.TAG_TASK_SPEC: task_spec(task)})
            result.tags.update(check_pairing(model, data, config.eval.output, config.eval.allow_class_mismatch, task))
            stage_fn(build_context(config, model, data, task), result)
        finally:  # what the data was used for, also when the stage failed midway
            name = node_name(config.dataset)
            tracked.log_inputs(dataset_inputs(name, data.source, stage, result.metrics, result.tags, config.seed))
    return result.metrics.get(keys.metric_key("sim", result.tags.get(keys.TAG_TASK_METRIC, keys.CLASSIFICATION_METRIC))), tracked.run_id


def run_pipeline(config: Config, plain: dict, tracker) -> tuple[float | None, str]:
    """A parent run with one child run per stage (the model and data built once), then the report; the last stage's
    headline metric and the parent run's id."""
    stages = list(config.pipeline.stages)
    last = None
    with tracked_run(tracker, plain, None) as (parent, result):
        log.info("pipeline %s: MLflow parent run %s", " → ".join(stages), parent.run_id)
        built = _build(config, result)
        failed = []
        for i, stage in enumerate(stages, 1):
            log.debug("pipeline stage %d/%d: %s", i, len(stages), stage)
            try:
                top1, _ = run_stage(config, plain, tracker, stage, parent.run_id, built)
                last = top1 if top1 is not None else last
            except Exception:  # the child run is FAILED with its traceback; the pipeline goes on
                log.exception("stage %s failed", stage)
                failed.append(stage)
        result.metrics[keys.PIPELINE_FAILED] = len(failed)
        out = os.path.join(config.paths.reports_dir, f"pipeline-{parent.run_id[:8]}")
        with result.timed("report"):
            text = report_and_summarise(tracker, config.tracking.experiment, out, "parent run", parent.run_id, parent_run_id=parent.run_id)
        if text:
            result.tags[keys.TAG_DESCRIPTION] = text
    return last, parent.run_id


@dataclass
class AutoQuantAnswer:
    """What ``+stage=autoquant`` found: the choice judged on the held-out images, its search figure beside it."""

    run_id: str
    tracking_uri: str
    choice: str  # "adaround · tf/tf_enhanced"
    stopped: str  # why the search ended
    target_met: bool  # on the search images
    held_out_met: bool  # the held-out drop against FP32 within the allowed drop too
    top1: float  # the choice, held-out images
    interval: tuple[float, float]  # its 95 % Wilson interval
    fp32_top1: float  # FP32, the same held-out images
    search_top1: float  # the choice on the search images it was chosen on (optimistic by the choice)
    verdict: str  # against the configured deployable baseline on the held-out images (exact McNemar)
    recipe: str  # the overrides that rerun the choice: python -m workbench <recipe> <the run's model and dataset>
    steps: Any  # pandas DataFrame: the decision path (autoquant_steps.csv)


def autoquant(*overrides: str, allowed_accuracy_drop: float = 0.01) -> AutoQuantAnswer:
    """``python -m workbench +stage=autoquant autoquant.allowed_accuracy_drop=DROP OVERRIDES`` from Python.

    ``overrides`` are the command line's (``"model=keras_file"``, ``"model.path=my.keras"``, ``"quant.param_bw=4"``,
    ``"paths.outputs_dir=runs"``): the same validation, the same MLflow run, report and recipe. Call it outside
    another Hydra application (it composes ``conf/`` itself)."""
    import tempfile

    import pandas as pd
    from hydra import compose, initialize_config_dir

    from workbench.config.help import CONF_DIR
    from workbench.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+stage=autoquant", f"autoquant.allowed_accuracy_drop={allowed_accuracy_drop}", *overrides])
    from mlflow.tracking import MlflowClient

    _, run_id, uri = run_and_id(cfg)
    client = MlflowClient(uri)
    found = client.get_run(run_id)
    m, t = found.data.metrics, found.data.tags
    with tempfile.TemporaryDirectory() as tmp:
        steps = pd.read_csv(client.download_artifacts(run_id, keys.ARTIFACT_AUTOQUANT_STEPS, tmp))
    low, high = keys.ci_keys(keys.SIM_TOP1)
    return AutoQuantAnswer(
        run_id=run_id,
        tracking_uri=uri,
        choice=t[keys.TAG_AUTOQUANT_CHOICE],
        stopped=t[keys.TAG_AUTOQUANT_STOPPED],
        target_met=bool(m[keys.AUTOQUANT_TARGET_MET]),
        held_out_met=bool(m[keys.AUTOQUANT_HELD_OUT_MET]),
        top1=m[keys.SIM_TOP1],
        interval=(m[low], m[high]),
        fp32_top1=m[keys.FP32_TOP1],
        search_top1=m[keys.AUTOQUANT_SEARCH_TOP1],
        verdict=t[keys.TAG_AUTOQUANT_VERDICT],
        recipe=t[keys.TAG_AUTOQUANT_RECIPE],
        steps=steps,
    )
