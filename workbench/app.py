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


def run_tags(cfg: DictConfig) -> dict[str, str]:
    from workbench.tracking import keys

    choices, overrides = _hydra_choices_and_overrides()
    q = cfg.quant
    return {
        keys.TAG_STAGE: _text(cfg.stage.name),
        keys.TAG_MODEL: str(cfg.model.name),
        keys.TAG_DATASET: str(cfg.dataset.name),
        keys.TAG_SCHEME: _text(q.scheme),
        keys.TAG_PARAM_BW: str(q.param_bw),
        keys.TAG_OUTPUT_BW: str(q.output_bw),
        keys.TAG_PER_CHANNEL: str(q.per_channel),
        keys.TAG_OVERRIDES: overrides,
        **{f"choice.{k}": str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra")},
    }


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def run(cfg: DictConfig) -> float | None:
    try:
        validate(cfg, STAGE_NAMES)
    except ConfigError as err:
        print(f"workbench: error: {err}", file=sys.stderr)
        sys.exit(2)

    from workbench.results import StageResult
    from workbench.stages import get_stage
    from workbench.stages.setup import build_context, build_data, build_model
    from workbench.tracking import keys
    from workbench.tracking.mlflow_run import Tracker, flatten, resolve_tracking_uri

    stage_fn = get_stage(_text(cfg.stage.name))
    seed_everything(cfg.seed, cfg.deterministic)
    outputs = cfg.paths.outputs_dir
    uri = resolve_tracking_uri(cfg.tracking.uri, outputs)
    tracker = Tracker(uri, cfg.tracking.experiment, cfg.tracking.artifact_location or os.path.join(outputs, "mlartifacts"))
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    tags = run_tags(cfg)
    run_name = f"{tags[keys.TAG_STAGE]}-{cfg.model.name}-w{cfg.quant.param_bw}a{cfg.quant.output_bw}"
    result = StageResult()
    with tracker.start(run_name, tags, flatten(container), os.environ.get("WORKBENCH_PARENT_RUN_ID")) as tracked:
        log.info("MLflow run %s in %s", tracked.run_id, uri)
        tracked.log_text(OmegaConf.to_yaml(container), keys.ARTIFACT_CONFIG)
        try:
            with result.timed("data"):
                data = build_data(cfg)
            with result.timed("model"):
                model = build_model(cfg, data)
            stage_fn(build_context(cfg, model, data), result)
        finally:
            tracked.log_result(result)
    return result.metrics.get(keys.SIM_TOP1)
