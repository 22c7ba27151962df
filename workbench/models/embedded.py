"""Model builders as config targets, and the embedded models (shipped weights, or trained on first use).

Every ``model`` config names a builder with ``_target_``; Hydra's ``instantiate`` calls it with every
key of the config (``name`` included) and a :class:`BuildContext`. Adding a model is a YAML file under
``conf/model/`` and such a function (docs/extending.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

from workbench.data.images import ImageData
from workbench.models.cache import cached_model
from workbench.models.kws import build_kws_conv1d
from workbench.models.mnist_mobilenet import build_mnist_mobilenet
from workbench.models.segmenter import build_digit_segmenter
from workbench.models.shipped import load_shipped
from workbench.models.training import train_classifier
from workbench.models.zoo import build_mnist_mobilenet_v2, keras_application, load_keras_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildContext:
    """What a model builder may need besides its own options."""

    data: ImageData
    cache_dir: str = "outputs/cache"
    seed: int = 0
    dataset: Mapping[str, Any] = field(default_factory=dict)  # the dataset's config: part of a trained model's cache key
    # retraining (python -m workbench.weights): neither the shipped weights nor the cache; called with
    # (name, spec, model) after training
    on_trained: Callable[[str, dict, keras.Model], None] | None = None


def _trained(name: str, context: BuildContext, options: dict, build: Callable[[], keras.Model]) -> keras.Model:
    """``build()`` with the shipped weights when the settings are the shipped ones (``models.shipped``), else
    trained on the context's data, or loaded from the cache keyed by every setting."""
    dataset = {k: v for k, v in context.dataset.items() if k not in ("eval_samples", "batch_size", "_target_")}
    spec = {
        "model": {"name": name, **options},
        "dataset": dataset,
        "num_classes": context.data.num_classes,
        "seed": context.seed,
        "keras": keras.__version__,
    }

    if context.on_trained is None:
        model = load_shipped(name, spec, build)
        if model is not None:
            return model

    def train() -> tuple[keras.Model, dict]:
        why = "retraining its shipped weights" if context.on_trained else "first use; cached afterwards"
        log.info("training %s for %d epochs (%s)", name, options["epochs"], why)
        data = context.data.for_model(options["input_shape"])
        model = train_classifier(
            build(), data, options["epochs"], options["batch_size"], options["learning_rate"], options["augment"], context.seed
        )
        return model, {}

    if context.on_trained is not None:
        model, _ = train()
        context.on_trained(name, spec, model)
        return model
    model, _, hit = cached_model(os.path.join(context.cache_dir, "models"), name, spec, train)
    if hit:
        log.info("loading cached model %s (trained on first use)", name)
    else:
        log.info("trained %s, cached in %s", name, os.path.join(context.cache_dir, "models"))
    return model


def mnist_mobilenet(
    name: str, context: BuildContext, *, input_shape: Sequence[int], width: int, bn_momentum: float, **training
) -> keras.Model:
    """The embedded default: a small MobileNetV2-family network trained on the chosen dataset."""
    options = {"input_shape": list(input_shape), "width": width, "bn_momentum": bn_momentum, **training}
    return _trained(name, context, options, lambda: build_mnist_mobilenet(input_shape, context.data.num_classes, width, bn_momentum))


def mnist_mobilenet_v2(
    name: str, context: BuildContext, *, input_shape: Sequence[int], alpha: float, bn_momentum: float, **training
) -> keras.Model:
    """keras.applications MobileNetV2 (random init) trained on the chosen dataset."""
    options = {"input_shape": list(input_shape), "alpha": alpha, "bn_momentum": bn_momentum, **training}
    return _trained(name, context, options, lambda: build_mnist_mobilenet_v2(input_shape, context.data.num_classes, alpha, bn_momentum))


def kws_conv1d(name: str, context: BuildContext, *, input_shape: Sequence[int], width: int, bn_momentum: float, **training) -> keras.Model:
    """The embedded keyword spotter (Conv1D over cepstral frames) trained on the chosen dataset."""
    options = {"input_shape": list(input_shape), "width": width, "bn_momentum": bn_momentum, **training}
    return _trained(name, context, options, lambda: build_kws_conv1d(input_shape, context.data.num_classes, width, bn_momentum))


def digit_segmenter(
    name: str, context: BuildContext, *, input_shape: Sequence[int], width: int, bn_momentum: float, **training
) -> keras.Model:
    """The embedded segmentation model (a small U-Net, per-pixel classes) trained on the chosen dataset."""
    options = {"input_shape": list(input_shape), "width": width, "bn_momentum": bn_momentum, **training}
    return _trained(name, context, options, lambda: build_digit_segmenter(input_shape, context.data.num_classes, width, bn_momentum))


def application(
    name: str, context: BuildContext, *, input_shape: Sequence[int], num_classes: int, weights: str | None = None
) -> keras.Model:
    """A keras.applications architecture named ``name``: random init or a local weights file."""
    return keras_application(name, input_shape, num_classes, weights)


def keras_file(name: str, context: BuildContext, *, path: str, custom_objects: Mapping[str, str] | None = None) -> keras.Model:
    """A Keras model file given by the user."""
    return load_keras_file(path, custom_objects)
