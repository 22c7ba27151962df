"""Calibration cost: computing a sim's encodings vs one FP32 pass over the same samples.

ResNet50 at 224×224 (random weights, BN folded), W8A8, per scheme (`tf`, `tf_enhanced`): the wall time of
``compute_encodings`` over the calibration samples next to one FP32 forward pass over the same samples,
measured side by side in one process. Prints the ratios (target of issue 12: <= 1.5x for tf_enhanced).

The statistics run as the fused kernels of ``quantsim.fused`` (a batch's finite range in one pass, its
histogram counts in another) where they can be built, else as TensorFlow ops; the header says which. Two
floors, timed the same way: every quantized tensor read once more (``floor: one reduction``: a max, the least
a statistic needs), and every quantized tensor through TensorFlow's own histogram kernel alone (``floor: bare
bincount``: int bins of x, 512 of them, no range logic, no re-binning), the least a ``tf_enhanced`` histogram
built from TensorFlow ops needs. Target of issue 25: ``tf_enhanced`` <= 2.5x.

    python bench/calibration_speed.py [--samples 512] [--batch-size 32] [--model resnet50|mobilenet_v2] [--write]

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

from workbench.options import QuantSettings  # noqa: E402
from workbench.quantsim.fused import kernel_name  # noqa: E402
from workbench.quantsim.quantizer import FakeQuant  # noqa: E402
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over  # noqa: E402
from workbench.techniques import fold_batch_norms  # noqa: E402

MODELS = {"resnet50": keras.applications.ResNet50, "mobilenet_v2": keras.applications.MobileNetV2}
EXACT = FakeQuant.call


def _one_reduction(self, x):
    self.q_max.assign(tf.reduce_max(x))
    return x


def _bare_bincount(self, x):
    bins = tf.clip_by_value(tf.cast(tf.reshape(x, [-1]) * 64.0, tf.int32), 0, 511)
    self.q_max.assign(tf.cast(tf.reduce_max(tf.math.bincount(bins, minlength=512, maxlength=512)), tf.float32))
    return x


FLOORS = {"floor: one reduction": _one_reduction, "floor: bare bincount": _bare_bincount}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the figures into README.md")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_logical_devices()]}")
    keras.utils.set_random_seed(0)
    model, _ = fold_batch_norms(MODELS[args.model](weights=None, input_shape=(224, 224, 3)))
    rng = np.random.default_rng(0)
    n = args.samples // args.batch_size
    batches = [tf.constant(rng.uniform(-1, 1, (args.batch_size, 224, 224, 3)).astype(np.float32)) for _ in range(n)]
    step = tf.function(lambda x: model(x, training=False))
    step(batches[0])  # trace once

    def fp32_pass() -> float:
        start = time.perf_counter()
        for x in batches:
            step(x).numpy()
        return time.perf_counter() - start

    lines = [
        f"{args.model} 224, {n * args.batch_size} samples, median of {args.repeats} (each calibration next to an FP32 pass; "
        f"statistics as {kernel_name()} kernels):"
    ]
    print(lines[0], flush=True)
    for scheme in ("tf", "tf_enhanced"):
        ratios, seconds, quantizers = [], [], 0
        for _ in range(args.repeats):  # alternate, so that drift in the machine's speed hits both sides
            fp32 = fp32_pass()
            sim = QuantizationSimModel(model, QuantSettings(scheme=scheme))
            start = time.perf_counter()
            sim.compute_encodings(forward_pass_over(batches))
            seconds.append(time.perf_counter() - start)
            ratios.append(seconds[-1] / fp32)
            quantizers = len(sim.output_quantizers)
        lines.append(
            f"  {scheme:12s} calibration {statistics.median(seconds):6.1f} s  ratio calibration/FP32 {statistics.median(ratios):5.2f}x "
            f"(runs {min(ratios):.2f}-{max(ratios):.2f}x, {quantizers} quantizers)"
        )
        print(lines[-1], flush=True)
    sim = QuantizationSimModel(model, QuantSettings())
    sim.compute_encodings(forward_pass_over(batches[:1]))  # quantize mode: the floors replace the quantizer's call
    for floor, call in FLOORS.items():
        ratios = []
        try:
            FakeQuant.call = call
            sim_step = tf.function(lambda x: sim.model(x, training=False))
            sim_step(batches[0])
            for _ in range(args.repeats):
                fp32 = fp32_pass()
                start = time.perf_counter()
                for x in batches:
                    sim_step(x).numpy()
                ratios.append((time.perf_counter() - start) / fp32)
        finally:
            FakeQuant.call = EXACT
        lines.append(f"  {floor:21s} ratio/FP32 {statistics.median(ratios):5.2f}x (runs {min(ratios):.2f}-{max(ratios):.2f}x)")
        print(lines[-1], flush=True)
    if args.write:
        command = f"python bench/calibration_speed.py --samples {args.samples} --model {args.model} --repeats {args.repeats} --write"
        text = f"`{command}` on {time.strftime('%Y-%m-%d')} (CPU, {os.cpu_count()} cores):\n\n```\n" + "\n".join(lines) + "\n```"
        rewrite_block(ROOT / "README.md", "calibration-speed", text)


if __name__ == "__main__":
    main()
