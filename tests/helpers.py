"""Small models for the tests."""

import os

import keras
import numpy as np

from workbench.models.mnist_mobilenet import build_mnist_mobilenet

# overrides of a fast `python -m workbench` on small generated 8×8×3 images (subprocess tests)
# the embedded model, made tiny, on generated data: an end-to-end run in seconds
TINY_EMBEDDED = [
    "dataset=synthetic",
    "dataset.num_train=256",
    "dataset.num_val=128",
    "model.epochs=2",
    "model.width=8",
    "quant.calibration_samples=64",
    "tracking.sqnr_samples=64",
]

SMALL_SYNTHETIC = [
    "dataset=synthetic",
    "dataset.image_shape=[8,8,3]",
    "dataset.num_classes=4",
    "dataset.num_train=64",
    "dataset.num_val=32",
    "quant.calibration_samples=16",
    "tracking.sqnr_samples=0",
]

# (builder, input shape) of the models every function-preservation test runs on
REFERENCE_MODELS = [
    (lambda: keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=10), (64, 64, 3)),
    (lambda: keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10), (64, 64, 3)),
    (lambda: build_mnist_mobilenet(), (28, 28, 1)),
]
REFERENCE_MODEL_IDS = ["mobilenet_v2", "resnet50", "mnist_mobilenet"]


def small_convnet(seed: int = 0) -> keras.Model:
    """conv+BN+ReLU6, depthwise, a residual add+ReLU, pooling, dense: every placement rule once."""
    keras.utils.set_random_seed(seed)
    i = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(i)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.Conv2D(8, 1, name="pw")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(4, name="dense")(x)
    model = keras.Model(i, out)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 0.5, 8), rng.normal(0, 0.5, 8), rng.uniform(0.5, 2, 8)])
    return model


def randomize_batch_norms(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random γ, β, moving mean and variance in every BN, so folding has something to do."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            weights = []
            if layer.gamma is not None:
                weights.append(rng.uniform(0.5, 1.5, c))
            if layer.beta is not None:
                weights.append(rng.normal(0, 0.5, c))
            weights += [rng.normal(0, 0.5, c), rng.uniform(0.5, 2.0, c)]
            layer.set_weights(weights)
    return model


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.max(np.abs(reference - other)) / max(np.max(np.abs(reference)), 1e-12))


@keras.saving.register_keras_serializable(package="workbench_tests")
class SubclassedNet(keras.Model):
    """A subclassed model (no functional graph): the workbench must refuse it in one line."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flat = keras.layers.Flatten()
        self.dense = keras.layers.Dense(4)

    def call(self, x):
        return self.dense(self.flat(x))


def tiny_model(name: str, context, *, filters: int = 4) -> keras.Model:
    """A model builder as a config target (docs/extending.md): its options plus a BuildContext."""
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(filters, 3, name="conv")(i)
    out = keras.layers.Dense(context.data.num_classes)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(i, out, name=name)


def hard_layer_model(width: int, outlier: float, seed: int = 0) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """Dense "first" → Dense "hard" → Dense "last"; "hard" carries one weight ``outlier`` (others ~N(0, 0.4)),
    so a coarse per-tensor grid zeroes its other weights. Returns the model, 400 inputs and the FP32 labels."""
    rng = np.random.default_rng(seed)
    i = keras.Input((16,))
    x = keras.layers.Dense(width, activation="relu", name="first")(i)
    x = keras.layers.Dense(width, activation="relu", name="hard")(x)
    model = keras.Model(i, keras.layers.Dense(4, name="last")(x))
    for name in ("first", "hard", "last"):
        layer = model.get_layer(name)
        kernel = rng.normal(0, 0.4, layer.kernel.shape).astype(np.float32)
        if name == "hard":
            kernel[0, 0] = outlier
        layer.set_weights([kernel, np.full(layer.bias.shape, 0.1, np.float32)])
    images = rng.normal(0, 1, (400, 16)).astype(np.float32)
    return model, images, model.predict(images, verbose=0).argmax(-1)  # FP32 is right by construction


def context_of(model, data, settings, out, calibration_samples=1000, sqnr_samples=256, seed=0, eval_output=None, **options):
    """A StageContext of ``model`` and ``data``: a typed Config with ``settings`` as its ``quant`` node, outputs under
    ``out`` (cache and exports), and technique option nodes (e.g. amp=AmpConfig(...))."""
    from dataclasses import replace

    from workbench.config.schema import Config, PathsConfig, TrackingConfig
    from workbench.stages.context import StageContext

    out = str(out)
    config = Config(
        quant=replace(settings, calibration_samples=calibration_samples, seed=seed),
        tracking=TrackingConfig(sqnr_samples=sqnr_samples),
        paths=PathsConfig(outputs_dir=out, cache_dir=os.path.join(out, "cache"), reports_dir=os.path.join(out, "reports")),
        seed=seed,
        **options,
    )
    return StageContext(model=model, data=data, config=config, eval_output=eval_output)


def stage_context(tmp_path, settings, **options):
    """A StageContext on 8×8×3 synthetic data and ``small_convnet``, with technique options (e.g. amp=AmpConfig(...))."""
    from workbench.data.synthetic import make_synthetic

    data = make_synthetic(num_train=128, num_val=48, num_classes=4, image_shape=(8, 8, 3), seed=0, batch_size=16)
    return context_of(small_convnet(), data, settings, tmp_path, calibration_samples=32, sqnr_samples=0, **options)


def tf_splits(n: int = 32, seed: int = 0):
    """A user's data function for ``dataset=callable``: (train, validation) tf.data.Datasets of (x, y), x (5, 3)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 5, 3)).astype(np.float32), rng.integers(0, 3, n)
    return tf.data.Dataset.from_tensor_slices((x, y)), tf.data.Dataset.from_tensor_slices((x[: n // 2], y[: n // 2]))


def top2(outputs, labels):
    """A user's metric (``task=custom task.score=helpers:top2``): the label among the two highest outputs."""
    best = np.argsort(outputs, axis=-1)[:, -2:]
    return (best == np.asarray(labels).reshape(-1, 1)).any(axis=1).astype(float)
