"""Quantsim evaluation overhead: FP32 vs sim forward passes over the same batches.

Prints, per model, the median wall time of one evaluation pass for the FP32 model and
for its quantsim (W8A8, calibrated), measured alternately in one process, and the
ratio sim/FP32. Target: <= 1.3x on CPU.

    python bench/quantsim_overhead.py [--batches 6] [--batch-size 32] [--repeats 5]
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

from workbench.models.mnist_mobilenet import build_mnist_mobilenet
from workbench.options import QuantSettings
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over


def _timed_pass(model: keras.Model, batches: list[tf.Tensor]) -> float:
    step = tf.function(lambda x: tf.reduce_sum(model(x, training=False)))
    step(batches[0])  # trace once
    start = time.perf_counter()
    for x in batches:
        step(x).numpy()
    return time.perf_counter() - start


def measure(name: str, model: keras.Model, shape: tuple[int, ...], n_batches: int, batch_size: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    batches = [tf.constant(rng.uniform(0, 1, (batch_size, *shape)).astype(np.float32)) for _ in range(n_batches)]
    sim = QuantizationSimModel(model, QuantSettings())
    sim.compute_encodings(forward_pass_over(batches[:2]))
    fp, q = [], []
    for _ in range(repeats):  # alternate so drift hits both sides alike
        fp.append(_timed_pass(model, batches))
        q.append(_timed_pass(sim.model, batches))
    fp_t, q_t = statistics.median(fp), statistics.median(q)
    print(
        f"{name:28s} activation quantizers {len(sim.output_quantizers):3d}  "
        f"fp32 {fp_t:7.3f} s  sim {q_t:7.3f} s  ratio sim/fp32 {q_t / fp_t:5.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_logical_devices()]}")
    keras.utils.set_random_seed(0)
    mobilenet = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    measure("MobileNetV2 224 (random)", mobilenet, (224, 224, 3), args.batches, args.batch_size, args.repeats)
    embedded = build_mnist_mobilenet()
    measure("mnist_mobilenet 28", embedded, (28, 28, 1), args.batches * 8, 256, args.repeats)


if __name__ == "__main__":
    main()
