"""Model builders: keras.applications architectures, Keras files, the embedded model.

Nothing here downloads: keras.applications models are built with ``weights=None`` and
loaded from a local file when one is given.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping, Sequence

import keras

APPLICATIONS = {
    "mobilenet_v2": keras.applications.MobileNetV2,
    "resnet50": keras.applications.ResNet50,
}


def keras_application(name: str, input_shape: Sequence[int], num_classes: int, weights: str | None = None) -> keras.Model:
    """A keras.applications architecture, random init or weights from a local file."""
    if name not in APPLICATIONS:
        raise ValueError(f"model.name={name!r} is not a known application; allowed: {sorted(APPLICATIONS)}")
    model = APPLICATIONS[name](weights=None, input_shape=tuple(input_shape), classes=num_classes)
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"model.weights={weights!r} does not exist (weights are never downloaded)")
        model.load_weights(weights)
    return model


def import_object(spec: str):
    """``"package.module:Name"`` → the object (a custom layer class, a function)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"{spec!r} is not allowed: write custom objects as 'package.module:Name'")
    return getattr(importlib.import_module(module), attr)


def load_keras_file(path: str, custom_objects: Mapping[str, str] | None = None) -> keras.Model:
    """Any Keras 3 model file (.keras or .h5); ``custom_objects`` maps class names to 'module:Name'."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model.path={path!r} does not exist")
    objects = {name: import_object(spec) for name, spec in (custom_objects or {}).items()}
    try:
        model = keras.models.load_model(path, custom_objects=objects, compile=False)
    except (TypeError, ValueError) as err:
        missing = re.search(r"[Cc]ould not (?:locate|deserialize) class '([^']+)'", str(err))
        if missing:
            name = missing.group(1)
            raise ValueError(
                f"model.path={path!r} uses the custom class {name!r}, which is not registered: "
                f"pass it with +model.custom_objects.{name}=your_module:{name}"
            ) from None
        raise ValueError(f"model.path={path!r} could not be loaded: {str(err).strip().splitlines()[0][:300]}") from None
    return model


def build_mnist_mobilenet_v2(
    input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, alpha: float = 0.35, bn_momentum: float = 0.9
) -> keras.Model:
    """keras.applications.MobileNetV2 (random init, logits out) with a BN momentum that converges in a few epochs.

    Keras' 0.999 leaves the moving statistics unconverged after a few hundred steps; training
    re-estimates them exactly afterwards anyway (``recalibrate_batch_norm``).
    """
    model = keras.applications.MobileNetV2(
        input_shape=tuple(input_shape), alpha=alpha, weights=None, classes=num_classes, classifier_activation=None
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    return model
