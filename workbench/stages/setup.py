"""From the typed config to what the stages are given: data, model, stage context."""

from __future__ import annotations

import logging
from typing import Any

import keras
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from workbench.config.schema import Config, plain
from workbench.config.validate import ConfigError, same_shape, shape_mismatch
from workbench.data.images import ImageData
from workbench.evaluation.tasks import Classification, Regression, Segmentation, Task
from workbench.graph.flatten import flatten_with_report
from workbench.graph.functional import FunctionalGraph, producer_name
from workbench.graph.health import weight_problems
from workbench.stages.context import StageContext

log = logging.getLogger(__name__)


def _instantiate(node: Any, **kwargs):
    """Hydra's ``instantiate`` of a typed node (or a schema-less dict), the builder's own error raised as it is."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def build_data(config: Config) -> ImageData:
    """The ``dataset`` node's builder (its ``_target_``) called with its keys and the run's seed."""
    return _instantiate(config.dataset, seed=config.seed, _convert_="all")


def build_task(config: Config, model: keras.Model | None = None) -> Task:
    """The ``task`` node's Task (its ``_target_``; its values were checked by ``config.validate``); a segmentation
    task's class count from ``model``'s output when not given."""
    task = _instantiate(config.task)
    if isinstance(task, Segmentation) and task.num_classes is None and model is not None:
        index = classifier_output_index(model, 0, config.eval.output, task)
        task = Segmentation(num_classes=int((model.output_shape if index is None else model.output_shape[index])[-1]))
    return task


def build_model(config: Config, data: ImageData) -> keras.Model:
    """The ``model`` node's builder's model (:func:`built_model`) as one flat graph."""
    return flat_model(built_model(config, data))


def built_model(config: Config, data: ImageData, **context) -> keras.Model:
    """The ``model`` node's builder (its ``_target_``) called with its keys and a BuildContext (``context``
    sets its other fields, e.g. ``on_trained``), the model as the builder returns it."""
    from workbench.models.embedded import BuildContext

    context = {"cache_dir": config.paths.cache_dir, **context}
    builder = _instantiate(config.model, _partial_=True, _convert_="all")  # the context is no config: passed apart
    return builder(context=BuildContext(data=data, seed=config.seed, dataset=plain(config.dataset), **context))


def flat_model(model: keras.Model) -> keras.Model:
    """The model as one flat functional graph (``graph.flatten``), with one console line on what was inlined or split.

    A model with non-finite weights (or negative BN variances) is refused in one line: its sim would not be the model.
    """
    problems = weight_problems(model)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"the model has non-finite weights: {problems[0]}{more}; the workbench quantizes models whose weights are finite")
    flat, report = flatten_with_report(model)
    if report.inlined:
        log.info("flattened %d nested models into one graph: %s", len(report.inlined), ", ".join(dict.fromkeys(report.inlined)))
    if report.decomposed:
        log.info("split %d composite layers into their quantizable primitives: %s", len(report.decomposed), ", ".join(report.decomposed))
    for name, why in report.kept_whole.items():
        log.warning("%s kept whole (%s): its weights stay float", name, why)
    return flat


def output_names(model: keras.Model) -> list[str]:
    """The names of the layers that produce the model's outputs, in order."""
    return [producer_name(t) for t in model.outputs]


def classifier_output_index(model: keras.Model, num_classes: int, requested: str | None, task: Task | None = None) -> int | None:
    """Which output the task reads (``eval.output``): None for a single-output model, else its index; one line if unclear
    (a classifier's is the only output of ``num_classes`` classes; another task's must be named)."""
    names = output_names(model)
    if requested is not None:
        if requested not in names:
            raise ConfigError(f"eval.output={requested!r} is not an output of the model: its outputs are {', '.join(names)}")
        return names.index(requested) if len(names) > 1 else None
    if len(names) == 1:
        return None
    if task is not None and not isinstance(task, Classification):
        raise ConfigError(
            f"the model has {len(names)} outputs ({', '.join(names)}): set eval.output=NAME to the one task={task.name} reads"
        )
    matching = [i for i, t in enumerate(model.outputs) if len(t.shape) == 2 and t.shape[-1] == num_classes]
    if len(matching) != 1:
        raise ConfigError(
            f"the model has {len(names)} outputs ({', '.join(names)}) and {len(matching)} of them give {num_classes} classes: "
            "set eval.output=NAME to the classification output"
        )
    return matching[0]


def _image_notes(shape: tuple, sample: tuple[int, ...]) -> dict[str, str]:
    """How images (N, H, W, C) are adapted to the model's input: a one-line error if they cannot be."""
    if len(sample) != 3:
        raise ConfigError(f"the model takes images of shape {shape[1:]} but the dataset gives inputs of shape {sample}")
    h, w, c = sample
    notes = {}
    if shape[3] is not None and c != shape[3]:
        if c != 1:
            raise ConfigError(f"the model takes {shape[3]}-channel images but the dataset gives {c}-channel images")
        notes["data.adapted"] = f"1-channel images repeated to {shape[3]} channels"
    if shape[1:3] != (None, None) and (h, w) != tuple(shape[1:3]):
        notes["data.resized"] = f"{h}x{w} resized to {shape[1]}x{shape[2]}"
    return notes


def check_pairing(
    model: keras.Model, data: ImageData, requested: str | None = None, allow_class_mismatch: bool = False, task: Task | None = None
) -> dict[str, str]:
    """Whether ``data`` can feed ``model`` and its labels the ``task`` (classification when None): a one-line
    error if not, else notes (tags) on what is adapted."""
    FunctionalGraph.from_model(model)  # a subclassed model is refused here, in one line
    notes = _check_input(model, data) if len(model.inputs) == 1 else _check_inputs(model, data)
    if task is None or isinstance(task, Classification):
        notes |= _check_outputs(model, data, requested, allow_class_mismatch)
    else:
        notes |= _check_task_outputs(model, data, requested, task)
    for key, note in notes.items():
        log.warning("%s: %s", key, note)
    return notes


def _check_input(model: keras.Model, data: ImageData) -> dict[str, str]:
    """One model input: images adapted (resized, channels repeated), any other input of the model's shape."""
    shape = tuple(model.input_shape)
    sample = next(iter(data.sized_for(shape[1:3] if len(shape) == 4 else ()).val_batches(limit=1)))[0]
    if isinstance(sample, dict):
        raise ConfigError(f"the model has one input but the dataset gives {len(sample)} ({', '.join(sorted(sample))})")
    if len(shape) == 4:
        return _image_notes(shape, tuple(int(v) for v in sample.shape[1:]))
    if not same_shape(shape[1:], tuple(sample.shape[1:])):  # not images: fed as they are
        raise ConfigError(shape_mismatch(shape[1:], tuple(sample.shape[1:])))
    return {}


def _check_inputs(model: keras.Model, data: ImageData) -> dict[str, str]:
    """Several model inputs: the data's inputs a dict with one array of the right shape per input name."""
    names = [producer_name(t) for t in model.inputs]
    sample = next(iter(data.val_batches(limit=1)))[0]
    if not isinstance(sample, dict) or set(sample) != set(names):
        given = ", ".join(sorted(sample)) if isinstance(sample, dict) else "one array"
        raise ConfigError(
            f"the model has {len(names)} inputs ({', '.join(names)}) but the dataset gives {given}: "
            f"give one array per input, named x.<input name> in the .npz (x.{names[0]}, ...)"
        )
    for name, tensor in zip(names, model.inputs):
        want, got = tuple(tensor.shape[1:]), tuple(sample[name].shape[1:])
        if not same_shape(want, got):
            raise ConfigError(f"input {name}: " + shape_mismatch(want, got))
    return {}


def _check_outputs(model: keras.Model, data: ImageData, requested: str | None, allow_class_mismatch: bool) -> dict[str, str]:
    """Which output top-1 reads, and whether its class count is the dataset's (notes, or a one-line error)."""
    notes = {}
    index = classifier_output_index(model, data.num_classes, requested)
    outputs = (model.output_shape if index is None else model.output_shape[index])[-1]
    if index is not None:
        notes["eval.output"] = f"top-1 reads {output_names(model)[index]!r}; the other outputs are quantized and reported by SQNR"
    if data.num_classes == 0:
        raise ConfigError("the dataset's labels are floats, not classes: set task=regression (or task=custom with your metric)")
    if outputs != data.num_classes:
        mismatch = f"the model has {outputs} outputs, the dataset {data.num_classes} classes"
        if not allow_class_mismatch:
            raise ConfigError(
                f"{mismatch}: top-1 would compare unrelated classes; use a model and dataset that agree "
                "(eval.allow_class_mismatch=true runs anyway)"
            )
        notes["data.class_mismatch"] = mismatch
    return notes


def _check_task_outputs(model: keras.Model, data: ImageData, requested: str | None, task: Task) -> dict[str, str]:
    """The output another task reads, against the labels' shape: per-pixel classes for segmentation, the output's
    own shape for regression; a label-free task reads any output."""
    index = classifier_output_index(model, 0, requested, task)
    shape = tuple(model.output_shape if index is None else model.output_shape[index])[1:]
    notes = (
        {"eval.output": f"task={task.name} reads {output_names(model)[index]!r}; the others are reported by SQNR"}
        if index is not None
        else {}
    )
    if not task.needs_labels:
        return notes
    labels = tuple(next(iter(data.val_batches(limit=1)))[1].shape[1:])
    if isinstance(task, Segmentation):
        want = shape[:-1]
        if not same_shape(want, labels) or (task.num_classes is not None and shape[-1] != task.num_classes):
            raise ConfigError(
                f"task=segmentation reads per-pixel classes: the model's output {shape} needs labels of shape {want} "
                f"and {task.num_classes or shape[-1]} channels, the dataset gives labels of shape {labels}"
            )
    elif isinstance(task, Regression):
        if not same_shape(shape, labels) and not (shape == (1,) and labels == ()):
            raise ConfigError(f"task=regression compares outputs with labels: the model's output is {shape}, the labels {labels}")
    return notes


def build_context(config: Config, model: keras.Model, data: ImageData, task: Task | None = None) -> StageContext:
    task = task if task is not None else build_task(config, model)
    return StageContext(
        model=model,
        data=data.for_model(model.input_shape[1:]) if len(model.inputs) == 1 else data,
        config=config,
        eval_output=classifier_output_index(model, data.num_classes, config.eval.output, task),
        task=task,
    )
