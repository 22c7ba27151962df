"""Wall time of BN fold + CLE next to one FP32 forward pass of 32 images, in one process.

Targets (AIMET-torch on this kind of machine: 1.7 s ResNet50, 0.94 s MobileNetV2) are about
<= 0.6x (ResNet50) and <= 1.1x (MobileNetV2) of one TF forward pass of 32 images at 224x224.

    python bench/cle_speed.py [--repeats 3] [--write]

``--write`` puts the figures into README's Performance section.
"""

from __future__ import annotations

import argparse
import os
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

from workbench.techniques import equalize_model  # noqa: E402


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
    parser.add_argument("--write", action="store_true", help="write the figures into README.md")
    args = parser.parse_args()
    lines = []
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
        lines.append(f"{name:12s} fold+CLE {c:6.2f} s ({sets} CLS sets)  forward(32x224) {f:6.2f} s  ratio {c / f:5.2f}x")
        print(lines[-1], flush=True)
    if args.write:
        text = (
            f"`python bench/cle_speed.py --repeats {args.repeats} --write` on {time.strftime('%Y-%m-%d')} (BN fold + CLE with "
            f"high-bias absorption, random weights, next to one FP32 forward pass of 32 images at 224×224, median; CPU, "
            f"{os.cpu_count()} cores; targets ≤ 0.6× ResNet50, ≤ 1.1× MobileNetV2; AIMET-torch 1.7 s / 0.94 s):\n\n```\n"
            + "\n".join(lines)
            + "\n```"
        )
        rewrite_block(ROOT / "README.md", "cle-speed", text)


if __name__ == "__main__":
    main()
