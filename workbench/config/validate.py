"""Start-up checks that types cannot express, run before any TensorFlow work.

Each failure is one line naming the setting and what is allowed.
"""

from __future__ import annotations

import os
import re

import yaml
from omegaconf import DictConfig, OmegaConf

from workbench.config.probes import positive
from workbench.options import MAX_BITWIDTH, MIN_BITWIDTH, AdaroundParameters, QuantSettings, load_overrides, options_of

REGISTERED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,255}")  # what every MLflow store accepts as a model name


class ConfigError(ValueError):
    """A setting has a value that is not allowed."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False, allow_none: bool = False) -> None:
    message = positive(OmegaConf.select(cfg, key), key, allow_zero, allow_none)
    _require(message is None, message or "")


def validate(cfg: DictConfig, stages: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` for the first setting that is not allowed."""
    if cfg.get("stage") is None:
        _require(len(cfg.pipeline.stages) > 0, f"pipeline.stages is empty: list some of {', '.join(stages)} (or add +stage=NAME)")
        for name in cfg.pipeline.stages:
            _require(str(name) in stages, f"pipeline.stages: {str(name)!r} is not a stage; allowed: {', '.join(stages)}")
    else:
        name = str(cfg.stage.name)
        _require(name in stages, f"stage.name={name!r} is not allowed; allowed: {', '.join(stages)}")
    q = cfg.quant
    # the option types check their own fields (once, in their __post_init__): bitwidths, percentile, target
    _options(QuantSettings, q, "quant")
    _positive(cfg, "quant.calibration_samples")
    if q.overrides:
        _require(os.path.isfile(q.overrides), f"quant.overrides={q.overrides!r} is not a file: give a YAML/JSON file of per-layer settings")
        try:
            load_overrides(q.overrides)
        except (ValueError, TypeError, OSError) as err:
            raise ConfigError(f"quant.overrides={q.overrides!r}: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"quant.overrides={q.overrides!r} is not readable YAML/JSON: {str(err).splitlines()[0]}") from None
    name = cfg.export.register_as
    _require(
        name is None or (isinstance(name, str) and REGISTERED_NAME.fullmatch(name) is not None),
        f"export.register_as={name!r} is not allowed: a registered model name of letters, digits, '.', '_', '-' and spaces "
        "(no '/', ':' or '%'), at most 256 characters",
    )
    _positive(cfg, "tracking.sqnr_samples", allow_zero=True)
    _positive(cfg, "threads", allow_zero=True, allow_none=True)
    _require(cfg.verbosity in (0, 1, 2), f"verbosity={cfg.verbosity!r} is not allowed: 0 (quiet), 1 (progress, default) or 2 (everything)")
    for key in ("num_quant_samples", "num_bias_correct_samples", "batch_size"):
        _positive(cfg, f"bc.{key}")
    _positive(cfg, "qat.epochs", allow_zero=True)
    _positive(cfg, "qat.decay_steps")
    _positive(cfg, "qat.batch_size")
    _require(cfg.qat.learning_rate > 0, f"qat.learning_rate={cfg.qat.learning_rate!r} is not allowed: use a value > 0")
    _options(AdaroundParameters, cfg.adaround, "adaround")
    _positive(cfg, "analyze.eval_samples")
    _positive(cfg, "amp.eval_samples")
    candidates = [list(c) for c in cfg.amp.candidates]
    _require(
        len(candidates) >= 2
        and all(len(c) == 2 and all(isinstance(b, int) and MIN_BITWIDTH <= b <= MAX_BITWIDTH for b in c) for c in candidates),
        f"amp.candidates={candidates!r} is not allowed: two or more [weight bits, activation bits] pairs in "
        f"{MIN_BITWIDTH}..{MAX_BITWIDTH}, e.g. [[8,8],[4,8]]",
    )
    drop = cfg.amp.allowed_accuracy_drop
    _require(0.0 <= drop <= 1.0, f"amp.allowed_accuracy_drop={drop!r} is not allowed: a fraction in [0, 1] (0.01 = 1 point)")
    _positive(cfg, "analyze.top_k")
    a = cfg.adaround
    _require(
        a.fold_batch_norms or not a.cle,
        "adaround.cle=true needs adaround.fold_batch_norms=true (CLE folds first): set adaround.cle=false too",
    )
    _require(bool(cfg.tracking.experiment), "tracking.experiment must be a non-empty name")

    problems = [message for group in ("dataset", "model") for message in config_problems(cfg[group])]
    _require(not problems, problems[0] if problems else "")
    d, m = cfg.dataset, cfg.model
    channels, takes = image_channels(d), input_channels(m)
    if takes == 1 and channels is not None and channels > 1:  # (only such a model has an input_shape to name)
        raise ConfigError(
            f"model={m.name} takes 1-channel images (model.input_shape={list(m.input_shape)}) but dataset={d.name} "
            f"gives {channels}-channel images: set model.input_shape=[H, W, {channels}]"
        )


def _options(kind: type, node, prefix: str) -> None:
    """Build the option type ``kind`` from the node's keys it has (``overrides`` is a file here, checked above
    or below on its own): its own check's message, prefixed with the node's name, becomes the ConfigError."""
    values = {k: v for k, v in dict(node).items() if k != "overrides"}
    try:
        options_of(kind, values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{prefix}.{err}") from None


def _schema_of(node: DictConfig) -> type | None:
    kind = OmegaConf.get_type(node)
    return kind if isinstance(kind, type) else None


def config_problems(node: DictConfig) -> list[str]:
    """What the node's schema type says is wrong with its values (``problems``; nothing for a type without one)."""
    kind = _schema_of(node)
    return list(kind.problems(node)) if kind is not None and hasattr(kind, "problems") else []


def image_channels(node: DictConfig) -> int | None:
    """The channels of the images a dataset node yields, None when its type does not say."""
    kind = _schema_of(node)
    return kind.image_channels(node) if kind is not None and hasattr(kind, "image_channels") else None


def input_channels(node: DictConfig) -> int | None:
    """The channels a model node takes (its ``input_shape``), None for a model file (read when it is loaded)."""
    shape = node["input_shape"] if "input_shape" in node else None  # a structured node refuses .get of a key it lacks
    return int(shape[-1]) if shape is not None and len(shape) else None
