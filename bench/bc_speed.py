"""Empirical bias correction cost next to one FP32 forward pass of the same samples.

ResNet50 (224x224, random weights), 64 samples: wall time of ``correct_bias`` (empirical, W8A8,
tf_enhanced) and of one FP32 forward pass over the same 64 images, in one process, and the ratio.
Target <= 10x (AIMET-torch 2.29 measures 79x on this kind of machine).

    python bench/bc_speed.py [--samples 64] [--repeats 2]
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

from workbench.options import QuantSettings
from workbench.techniques.bias_correction import correct_bias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_logical_devices()]}")
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    x = np.random.default_rng(0).uniform(-1, 1, (args.samples, 224, 224, 3)).astype(np.float32)
    forward = tf.function(lambda v: model(v, training=False))
    batches = [tf.constant(x[i : i + 32]) for i in range(0, len(x), 32)]
    forward(batches[0]).numpy()
    bc_t, fw_t = [], []
    for _ in range(args.repeats):  # alternate so machine drift hits both alike
        start = time.perf_counter()
        for b in batches:
            forward(b).numpy()
        fw_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, report = correct_bias(model, QuantSettings(), x[:16], x, "empirical")
        bc_t.append(time.perf_counter() - start)
    b, f = statistics.median(bc_t), statistics.median(fw_t)
    print(
        f"ResNet50 empirical BC ({len(report.corrected())} layers, {args.samples} samples) {b:6.2f} s  "
        f"FP32 forward of the same samples {f:6.2f} s  ratio {b / f:5.2f}x"
    )


if __name__ == "__main__":
    main()
