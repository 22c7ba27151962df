"""Wall time of BN fold + CLE next to one FP32 forward pass of 32 images, in one process.

Targets (AIMET-torch on this kind of machine: 1.7 s ResNet50, 0.94 s MobileNetV2) are about
<= 0.6x (ResNet50) and <= 1.1x (MobileNetV2) of one TF forward pass of 32 images at 224x224.

    python bench/cle_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from workbench.techniques import equalize_model


def _forward_time(model: keras.Model, x: tf.Tensor) -> float:
    step = tf.function(lambda v: model(v, training=False))
    step(x).numpy()
    start = time.perf_counter()
    step(x).numpy()
    return time.perf_counter() - start


def _cle_time(model: keras.Model) -> tuple[float, int]:
    start = time.perf_counter()
    _, report = equalize_model(model)
    return time.perf_counter() - start, len(report.sets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (32, 224, 224, 3)).astype(np.float32))
    print(f"TensorFlow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_logical_devices()]}")
    for name, ctor in (("ResNet50", keras.applications.ResNet50), ("MobileNetV2", keras.applications.MobileNetV2)):
        model = ctor(weights=None, input_shape=(224, 224, 3))
        cle, fwd = [], []
        for _ in range(args.repeats):  # alternate so machine drift hits both alike
            t, sets = _cle_time(model)
            cle.append(t)
            fwd.append(_forward_time(model, x))
        c, f = statistics.median(cle), statistics.median(fwd)
        print(f"{name:12s} fold+CLE {c:6.2f} s ({sets} CLS sets)  forward(32x224) {f:6.2f} s  ratio {c / f:5.2f}x")


if __name__ == "__main__":
    main()
