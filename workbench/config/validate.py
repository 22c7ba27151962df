"""The composed config to the typed one, checked: once, in ``app.run``, before any TensorFlow work.

After :func:`validate` only the schema's dataclasses (``config.schema.Config``) travel: no ``DictConfig``
below ``app.run``. Each failure is one line naming the setting and what is allowed: a missing value with its
type's hint, a field's own check (``__post_init__``) prefixed with its node, then the checks across nodes.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from workbench.config.schema import Config


class ConfigError(ValueError):
    """A setting has a value that is not allowed."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: DictConfig, stages: tuple[str, ...]) -> Config:
    """The typed, checked config; :class:`ConfigError` for the first setting that is not allowed."""
    _missing_values(cfg)
    config = typed(cfg)
    if config.stage is None:
        _require(len(config.pipeline.stages) > 0, f"pipeline.stages is empty: list some of {', '.join(stages)} (or add +stage=NAME)")
        for name in config.pipeline.stages:
            _require(str(name) in stages, f"pipeline.stages: {str(name)!r} is not a stage; allowed: {', '.join(stages)}")
    else:
        name = str(config.stage.name)
        _require(name in stages, f"stage.name={name!r} is not allowed; allowed: {', '.join(stages)}")
    nodes = (config.dataset, config.model, config.task)
    problems = [message for node in nodes if hasattr(node, "problems") for message in node.problems()]
    _require(not problems, problems[0] if problems else "")
    _check_task(config)
    want, got = takes_shape(config.model), sample_shape(config.dataset)
    if want is None or got is None:
        return config
    if len(want) == len(got) == 3:  # images: resized, and 1 channel repeated to 3, but not 3 made into 1
        named = config.model["input_shape"] if isinstance(config.model, dict) else getattr(config.model, "input_shape", None)
        if want[-1] == 1 and got[-1] is not None and got[-1] > 1 and named is not None:  # (a file has no input_shape to set)
            raise ConfigError(
                f"model={node_name(config.model)} takes 1-channel images (model.input_shape={list(named)}) "
                f"but dataset={node_name(config.dataset)} gives {got[-1]}-channel images: set model.input_shape=[H, W, {got[-1]}]"
            )
    elif not same_shape(want, got):  # other inputs are fed as they are
        raise ConfigError(shape_mismatch(want, got))
    return config


def _check_task(config: Config) -> None:
    """The task builds (its own checks, e.g. a custom metric's name), and the stage can measure it."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        task = instantiate(config.task)
    except InstantiationException as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        raise ConfigError(str(cause) if str(cause).startswith("task.") else f"task: {cause}") from None
    stage = None if config.stage is None else str(config.stage.name)
    if not task.has_loss() and (stage == "qat" or (stage is None and "qat" in config.pipeline.stages)):
        hint = "set task.training_loss to a Keras loss name" if task.name == "custom" else "it has no labels to train on"
        raise ConfigError(f"task={task.name}: +stage=qat fine-tunes on a loss and this task has none: {hint}")
    ranking = [n for n in ((stage,) if stage is not None else config.pipeline.stages) if n in ("analyze", "mixed_precision", "autoquant")]
    if not task.binary and ranking:
        what = "techniques" if ranking[0] == "autoquant" else "layers"
        raise ConfigError(f"+stage={ranking[0]} ranks {what} by their top-1: it takes task=classification (this run's is task={task.name})")


def same_shape(want: tuple, got: tuple) -> bool:
    """Whether inputs of shape ``got`` fit a model input of shape ``want`` (None: any size)."""
    return len(want) == len(got) and all(w is None or g is None or int(w) == int(g) for w, g in zip(want, got))


def shape_mismatch(want: tuple, got: tuple) -> str:
    want, got = (tuple(None if v is None else int(v) for v in shape) for shape in (want, got))
    return f"the model takes inputs of shape {want} but the dataset gives {got}: give data of the model's input shape"


def _missing_values(cfg: DictConfig) -> None:
    """A required value left at ``???``: one line with what its type says to give."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if not missing:
        return
    group, _, key = missing[0].rpartition(".")
    kind = OmegaConf.get_type(OmegaConf.select(cfg, group)) if group else None
    hint = getattr(kind, "hints", {}).get(key, f"give {missing[0]}=VALUE")
    raise ConfigError(f"{missing[0]} is missing: {hint}")


def typed(cfg: DictConfig) -> Config:
    """``OmegaConf.to_object`` node by node, so a field's own check (a ValueError) is prefixed with its node's name."""
    kind = OmegaConf.get_type(cfg)
    assert isinstance(kind, type) and issubclass(kind, Config), kind
    values: dict[str, Any] = {}
    for name in cfg:
        node = cfg[name]
        try:
            values[str(name)] = OmegaConf.to_object(node) if OmegaConf.is_config(node) else node
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{name}.{err}") from None
    try:
        return kind(**values)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None


def node_name(node: Any) -> str:
    """A dataset's or model's ``name`` (a config without a schema type is a plain dict)."""
    return str(node["name"] if isinstance(node, dict) else node.name)


def sample_shape(dataset: Any) -> tuple | None:
    """The shape of one input a dataset yields, None when its type cannot say before loading (or it has no type)."""
    return dataset.sample_shape() if hasattr(dataset, "sample_shape") else None


def takes_shape(model: Any) -> tuple | None:
    """The shape of one input a model takes: its type's (``input_shape``, a file's config), a schema-less node's
    ``input_shape``, else None."""
    if isinstance(model, dict):
        return tuple(model["input_shape"]) if model.get("input_shape") else None
    return model.takes_shape() if hasattr(model, "takes_shape") else None
