"""The embedded default model: a small MobileNetV2-family classifier and its training.

Depthwise-separable inverted-residual blocks with batch norm, ReLU6 and residual adds,
about 35k parameters at ``width=16``. BN momentum defaults to 0.9: Keras' MobileNetV2
value (0.999) leaves the moving statistics unconverged after a few hundred steps.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import keras

from workbench.data.images import ImageData

log = logging.getLogger(__name__)

# (expansion, output-channel multiple of width, stride) per inverted-residual block
BLOCKS = ((1, 1.0, 1), (4, 1.5, 2), (4, 1.5, 1), (4, 2.0, 2), (4, 2.0, 1))


def _conv_bn(x, filters: int, kernel: int, stride: int, momentum: float, name: str, relu6: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if relu6 else x


def _inverted_residual(x, expansion: int, out_ch: int, stride: int, momentum: float, name: str):
    in_ch = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn(y, in_ch * expansion, 1, 1, momentum, f"{name}_expand")
    y = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_dw_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = _conv_bn(y, out_ch, 1, 1, momentum, f"{name}_project", relu6=False)
    if stride == 1 and in_ch == out_ch:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def build_mnist_mobilenet(
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, width: int = 16, bn_momentum: float = 0.9
) -> keras.Model:
    inputs = keras.Input(tuple(input_shape), name="image")
    x = _conv_bn(inputs, width, 3, 2, bn_momentum, "stem")
    for i, (expansion, mult, stride) in enumerate(BLOCKS):
        x = _inverted_residual(x, expansion, int(round(width * mult)), stride, bn_momentum, f"block{i}")
    x = _conv_bn(x, width * 8, 1, 1, bn_momentum, "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist_mobilenet")


class _EpochLog(keras.callbacks.Callback):
    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log.info(
            "training epoch %d/%d: loss %.4f, top1 %.4f, val top1 %.4f (%.0f s)",
            epoch + 1, self.epochs, logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
            logs.get("val_accuracy", float("nan")), time.perf_counter() - self.start,
        )


def train_classifier(
    model: keras.Model, data: ImageData, epochs: int, batch_size: int, learning_rate: float, augment: bool, seed: int
) -> keras.Model:
    """Adam with cosine decay on sparse cross-entropy; light random shifts when ``augment``."""
    train = data.train_batches(batch_size=batch_size, seed=seed)
    if augment:
        shift = keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed)
        train = train.map(lambda x, y: (shift(x, training=True), y))
    steps = max(1, epochs * int(train.cardinality().numpy()) if train.cardinality() > 0 else epochs * 100)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train, epochs=epochs, validation_data=data.val_batches(), verbose=0, shuffle=False, callbacks=[_EpochLog(epochs)])
    recalibrate_batch_norm(model, data.train_batches(batch_size=batch_size, shuffle=False))
    return model


def recalibrate_batch_norm(model: keras.Model, batches) -> None:
    """Set BN moving statistics to the average of the batch statistics over ``batches``.

    Momentum t/(t + 1) at batch t turns the moving average into an exact running mean, so
    the statistics match the final weights on un-augmented data (no lag, no batch noise).
    """
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return
    saved = [bn.momentum for bn in bns]
    try:
        for t, (x, _) in enumerate(batches):
            for bn in bns:
                bn.momentum = t / (t + 1.0)
            model(x, training=True)
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum
