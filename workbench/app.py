"""The task function: validate → seed → open the MLflow run → build → run the stage → log.

Returns ``sim/top1`` so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig, OmegaConf

from workbench.config.validate import ConfigError, validate
from workbench.stages import STAGE_NAMES

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


def run_tags(cfg: DictConfig, stage: str | None) -> dict[str, str]:
    """Tags of a run; ``stage`` None for a pipeline's parent run (reports skip runs without a stage)."""
    from workbench.tracking import keys

    choices, overrides = _hydra_choices_and_overrides()
    q = cfg.quant
    tags = {
        keys.TAG_MODEL: str(cfg.model.name),
        keys.TAG_DATASET: str(cfg.dataset.name),
        keys.TAG_SCHEME: f"{_text(q.param_scheme)}/{_text(q.output_scheme)}",
        keys.TAG_PARAM_BW: str(q.param_bw),
        keys.TAG_OUTPUT_BW: str(q.output_bw),
        keys.TAG_PER_CHANNEL: str(q.per_channel),
        keys.TAG_OVERRIDES: overrides,
        **{f"choice.{k}": str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra")},
    }
    if stage is not None:
        tags[keys.TAG_STAGE] = stage
    else:
        tags[keys.TAG_PIPELINE] = ",".join(_text(s) for s in cfg.pipeline.stages)
    return tags


class Terminated(KeyboardInterrupt):
    """SIGTERM: ends the run like Ctrl-C (KILLED), then the process exits with 128 + 15."""

    exit_code = 143


def _terminate_as_interrupt() -> None:
    """SIGTERM ends the run like Ctrl-C: the MLflow run is marked KILLED and the store stays consistent."""
    import signal
    import threading

    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def run(cfg: DictConfig) -> float | None:
    """One stage (``+stage=NAME``) or, with no stage, the pipeline of ``pipeline.stages``."""
    from workbench.tracking.hydra_callback import PARENT_ENV
    from workbench.tracking.probe import TrackingUnavailable, check_tracking_uri, resolve_tracking_uri

    try:
        validate(cfg, STAGE_NAMES)
        check_tracking_uri(resolve_tracking_uri(cfg.tracking.uri, cfg.paths.outputs_dir))
    except TrackingUnavailable as err:  # nowhere to record a failed run: one line, exit code 2
        print(f"workbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    except ConfigError as err:
        if os.environ.get(PARENT_ENV) is None:  # a single run: one line and exit code 2, nothing recorded
            print(f"workbench: error: {err}", file=sys.stderr)
            sys.exit(2)
        _record_invalid_job(cfg, err, os.environ[PARENT_ENV])
        raise

    _terminate_as_interrupt()
    tracker = _tracker(cfg)  # before TensorFlow: a store problem shows in seconds
    import keras

    keras.backend.clear_session()  # launcher workers (joblib/loky) are reused across jobs
    seed_everything(cfg.seed, cfg.deterministic)
    log.info("MLflow tracking at %s, experiment %r", tracker.uri, cfg.tracking.experiment)
    if cfg.get("stage") is None:
        return run_pipeline(cfg, tracker)
    parent = os.environ.get(PARENT_ENV)
    top1, run_id = run_stage(cfg, tracker, _text(cfg.stage.name), parent)
    if parent is None:  # a sweep's summary comes at its end, from the Hydra callback
        out = os.path.join(cfg.paths.reports_dir, f"run-{run_id[:8]}")
        report_and_summarise(tracker, cfg.tracking.experiment, out, "run", run_id, like_run=run_id)
    return top1


def report_and_summarise(tracker, experiment: str, out_dir: str, label: str, run_id: str, **selection) -> None:
    """Write the comparison report and print the closing summary (a failure to report is only a warning)."""
    from workbench.reporting.report import ReportError, build_report
    from workbench.reporting.summary import closing_summary

    try:
        report = build_report(tracker.client, experiment, out_dir, **selection)
    except ReportError as err:
        log.warning("no report: %s", err)
        return
    print(closing_summary(report, out_dir, label, run_id, tracker.uri), flush=True)


def _tracker(cfg: DictConfig):
    from workbench.tracking.mlflow_run import Tracker, resolve_tracking_uri

    outputs = cfg.paths.outputs_dir
    uri = resolve_tracking_uri(cfg.tracking.uri, outputs)
    return Tracker(uri, cfg.tracking.experiment, cfg.tracking.artifact_location or os.path.join(outputs, "mlartifacts"))


def _record_invalid_job(cfg: DictConfig, err: ConfigError, parent_run_id: str) -> None:
    """A sweep job with a value that is not allowed: a FAILED child run carrying the one-line message."""
    from workbench.tracking.mlflow_run import flatten

    stage = _text(cfg.stage.name) if cfg.get("stage") is not None else None
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    name = f"{stage or 'pipeline'}-invalid"
    try:  # raising inside the run ends it FAILED with the message as its error tag and traceback.txt
        with _tracker(cfg).start(name, run_tags(cfg, stage), flatten(container), parent_run_id):
            raise err
    except ConfigError:
        pass


def run_stage(cfg: DictConfig, tracker, stage: str, parent_run_id: str | None = None, built: tuple | None = None) -> tuple[float | None, str]:
    """One MLflow run around one stage; ``built`` = (data, model) reuses what a pipeline built.

    Returns sim/top1 (None if never measured) and the run id."""
    from workbench.results import StageResult
    from workbench.stages import get_stage
    from workbench.stages.setup import build_context, build_data, build_model, check_pairing
    from workbench.tracking import keys
    from workbench.tracking.mlflow_run import flatten

    stage_fn = get_stage(stage)
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container["stage"] = {"name": stage}
    run_name = f"{stage}-{cfg.model.name}-w{cfg.quant.param_bw}a{cfg.quant.output_bw}"
    result = StageResult()
    with tracker.start(run_name, run_tags(cfg, stage), flatten(container), parent_run_id) as tracked:
        log.info("stage %s: MLflow run %s", stage, tracked.run_id)
        tracked.log_text(OmegaConf.to_yaml(container), keys.ARTIFACT_CONFIG)
        try:
            if built is None:
                with result.timed("data"):
                    data = build_data(cfg)
                with result.timed("model"):
                    model = build_model(cfg, data)
            else:
                data, model = built
            result.tags.update(check_pairing(model, data))
            stage_fn(build_context(cfg, model, data), result)
        finally:
            tracked.log_result(result)
    return result.metrics.get(keys.SIM_TOP1), tracked.run_id


def run_pipeline(cfg: DictConfig, tracker) -> float | None:
    """A parent run with one child run per stage (the model and data built once), then the report."""
    from workbench.results import StageResult
    from workbench.stages.setup import build_data, build_model
    from workbench.tracking import keys
    from workbench.tracking.mlflow_run import flatten

    stages = [_text(s) for s in cfg.pipeline.stages]
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    run_name = f"pipeline-{cfg.model.name}-w{cfg.quant.param_bw}a{cfg.quant.output_bw}"
    result = StageResult()
    last = None
    with tracker.start(run_name, run_tags(cfg, None), flatten(container)) as parent:
        log.info("pipeline %s: MLflow parent run %s", " -> ".join(stages), parent.run_id)
        parent.log_text(OmegaConf.to_yaml(container), keys.ARTIFACT_CONFIG)
        try:
            with result.timed("data"):
                data = build_data(cfg)
            with result.timed("model"):
                model = build_model(cfg, data)
            failed = []
            for i, stage in enumerate(stages, 1):
                log.info("pipeline stage %d/%d: %s", i, len(stages), stage)
                try:
                    top1, _ = run_stage(cfg, tracker, stage, parent.run_id, (data, model))
                    last = top1 if top1 is not None else last
                except Exception:  # the child run is FAILED with its traceback; the pipeline goes on
                    log.exception("stage %s failed", stage)
                    failed.append(stage)
            result.metrics[keys.PIPELINE_FAILED] = len(failed)
            out = os.path.join(cfg.paths.reports_dir, f"pipeline-{parent.run_id[:8]}")
            with result.timed("report"):
                report_and_summarise(tracker, cfg.tracking.experiment, out, "parent run", parent.run_id, parent_run_id=parent.run_id)
        finally:
            parent.log_result(result)
    return last
