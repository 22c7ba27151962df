"""Training of the embedded models on first use: Adam + cosine decay, light shifts, exact BN statistics."""

from __future__ import annotations

import logging
import time

import keras
from tqdm import tqdm

from workbench import interrupts
from workbench.data.images import ImageData

log = logging.getLogger(__name__)


class _EpochLog(keras.callbacks.Callback):
    """One log line per epoch, and a progress bar on a terminal (tqdm; none when output is not a TTY)."""

    def __init__(self, epochs: int, steps: int | None):
        super().__init__()
        self.epochs = epochs
        self.start = time.perf_counter()
        self.bar = tqdm(total=epochs * steps if steps else None, desc="training", unit="step", disable=None, leave=False)

    def on_train_batch_end(self, batch, logs=None):
        interrupts.checkpoint()
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = {1, self.epochs} | {round(self.epochs * k / 4) for k in (1, 2, 3)}
        log.log(
            logging.INFO if epoch + 1 in shown else logging.DEBUG,
            "training epoch %d/%d: loss %.4f, top1 %.4f, val top1 %.4f (%.0f s)",
            epoch + 1,
            self.epochs,
            logs.get("loss", float("nan")),
            logs.get("accuracy", float("nan")),
            logs.get("val_accuracy", float("nan")),
            time.perf_counter() - self.start,
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
    per_epoch = int(train.cardinality().numpy()) if train.cardinality() > 0 else None
    model.fit(train, epochs=epochs, validation_data=data.val_batches(), verbose=0, shuffle=False, callbacks=[_EpochLog(epochs, per_epoch)])
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
