"""Empirical bias correction cost next to one FP32 forward pass of the same samples.

ResNet50 (224x224, random weights), 64 samples: wall time of ``correct_bias`` (empirical, W8A8, the
default scheme) and of one FP32 forward pass over the same 64 images, in one process, the ratio and the
process's peak RSS. Target <= 10x (AIMET-torch 2.29 measures 79x on this kind of machine).

    python bench/bc_speed.py [--samples 64] [--repeats 2] [--write]

``--write`` puts the figures into README's Performance section.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from doc_blocks import rewrite_block  # noqa: E402

from workbench.options import QuantSettings  # noqa: E402
from workbench.techniques.bias_correction import correct_bias  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write the figures into README.md")
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
        _, report = correct_bias(model, QuantSettings(), x[:16], x, mode="empirical")
        bc_t.append(time.perf_counter() - start)
    b, f = statistics.median(bc_t), statistics.median(fw_t)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    line = (
        f"ResNet50 empirical BC ({len(report.corrected())} layers, {args.samples} samples) {b:6.2f} s  "
        f"FP32 forward of the same samples {f:6.2f} s  ratio {b / f:5.2f}x  peak RSS {peak_gb:.1f} GB"
    )
    print(line)
    if args.write:
        text = (
            f"`python bench/bc_speed.py --samples {args.samples} --repeats {args.repeats} --write` on {time.strftime('%Y-%m-%d')} "
            f"(median of {args.repeats}; CPU, {os.cpu_count()} cores; target ≤ 10×, AIMET-torch 2.29: 79×):\n\n```\n{line}\n```"
        )
        rewrite_block(ROOT / "README.md", "bc-speed", text)


if __name__ == "__main__":
    main()
