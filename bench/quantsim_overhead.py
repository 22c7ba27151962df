"""Quantsim evaluation overhead: FP32 vs sim forward passes over the same batches.

Per model (BN folded, as the deployable baseline runs it), the median wall time of one evaluation pass
of the FP32 model and of its calibrated W8A8 sim, alternated in one process, as the ratio sim/FP32, for
formulations of the activation quantizer's quantize form:

- ``exact``: the project's `FakeQuant` as the sim runs it (Δ·clip(rint(x/Δ), o, o + steps): AIMET's grid and
  rounding; on the CPU in one custom kernel, ``quantsim.fused``), behind the ``tf.cond`` on its mode variable
  that lets a traced sim switch between passthrough and quantize;
- ``exact_four_ops``: the same values from four element-wise TensorFlow ops (RealDiv, Rint, the clip's
  Minimum and Maximum, Mul), the form a GPU or a machine without a C++ compiler runs;
- ``exact_no_mode_branch``: ``exact`` with the mode fixed when traced (no ``tf.cond``): what the mode
  variable costs is the difference between the two columns;
- ``tf_fake_quant_op``: TensorFlow's fused ``fake_quant_with_min_max_vars`` (1 kernel; rounds half up and
  multiplies by a recomputed inverse scale, so it leaves AIMET's grid by an ulp at times);
- ``xla_quantizer``: the exact formula compiled by XLA (``jit_compile``) as its own cluster;
- ``floor_one_kernel``: not a quantizer, one element-wise multiply per quantized tensor: the least that any
  quantizer run as its own kernel after the layer costs (one more read and write of the tensor).

Compiling the whole model with XLA would fuse the quantizer into the convolution, but XLA's CPU convolutions
take 30-40x TensorFlow's (measured on both models), so it is not offered on CPU.

Targets: issue 12's <= 1.15x; issue 25's ``exact`` within 0.1x of ``floor_one_kernel`` (the last column,
measured in the same run). ``--write`` puts the table into README's Performance section.

    python bench/quantsim_overhead.py [--batches 6] [--batch-size 32] [--repeats 5] [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from doc_blocks import markdown_table, rewrite_block  # noqa: E402

from workbench.models.mnist_mobilenet import build_mnist_mobilenet  # noqa: E402
from workbench.options import QuantSettings  # noqa: E402
from workbench.quantsim.fused import kernel_name  # noqa: E402
from workbench.quantsim.quantizer import FakeQuant, Mode  # noqa: E402
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over  # noqa: E402
from workbench.techniques import fold_batch_norms  # noqa: E402

EXACT = FakeQuant._quantize


def _tf_fake_quant_op(self, inputs):
    s = self.scale.value
    return tf.quantization.fake_quant_with_min_max_vars(inputs, self.q_min.value * s, self.q_max.value * s, num_bits=self.bitwidth)


@tf.function(jit_compile=True)
def _xla_qdq(x, scale, q_min, q_max):
    return tf.clip_by_value(tf.math.rint(x / scale), q_min, q_max) * scale


def _xla_quantizer(self, inputs):
    return _xla_qdq(inputs, self.scale.value, self.q_min.value, self.q_max.value)


def _floor_one_kernel(self, inputs):
    return inputs * self.scale.value


# name -> (the quantize form, whether the mode is fixed when traced)
VARIANTS: dict[str, tuple[Callable, bool]] = {
    "exact": (EXACT, False),
    "exact_four_ops": (FakeQuant._quantize_four_ops, False),
    "exact_no_mode_branch": (EXACT, True),
    "tf_fake_quant_op": (_tf_fake_quant_op, False),
    "xla_quantizer": (_xla_quantizer, False),
    "floor_one_kernel": (_floor_one_kernel, False),
}


def _timed_pass(model: keras.Model, batches: list[tf.Tensor]) -> float:
    step = tf.function(lambda x: tf.reduce_sum(model(x, training=False)))
    step(batches[0])  # trace once
    start = time.perf_counter()
    for x in batches:
        step(x).numpy()
    return time.perf_counter() - start


def measure(name: str, model: keras.Model, shape: tuple[int, ...], n_batches: int, batch_size: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    batches = [tf.constant(rng.uniform(0, 1, (batch_size, *shape)).astype(np.float32)) for _ in range(n_batches)]
    sim = QuantizationSimModel(model, QuantSettings())
    sim.compute_encodings(forward_pass_over(batches[:2]))
    fp: list[float] = []
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for _ in range(repeats):  # alternate so drift hits every side alike
            fp.append(_timed_pass(model, batches))
            for variant, (form, static) in VARIANTS.items():
                FakeQuant._quantize = form
                for q in sim.output_quantizers.values():
                    q.modes = (Mode.QUANTIZE,) if static else (Mode.PASSTHROUGH, Mode.QUANTIZE)
                times[variant].append(_timed_pass(sim.model, batches))
    finally:
        FakeQuant._quantize = EXACT
    fp_t = statistics.median(fp)
    row = {"model (BN folded)": name, "activation quantizers": str(len(sim.output_quantizers)), "FP32 pass (s)": f"{fp_t:.2f}"}
    for variant, values in times.items():
        ratios = sorted(v / f for v, f in zip(values, fp))
        row[f"{variant} sim/FP32"] = f"{statistics.median(values) / fp_t:.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f})"
    gap = (statistics.median(times["exact"]) - statistics.median(times["floor_one_kernel"])) / fp_t
    row["exact − floor"] = f"{gap:+.2f}×"
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    print(f"TensorFlow {tf.__version__}, devices: {devices}, the sim's quantizer: {kernel_name()}")
    keras.utils.set_random_seed(0)
    rows = []
    mobilenet, _ = fold_batch_norms(keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)))
    rows.append(
        measure(f"MobileNetV2 224 (random, batch {args.batch_size})", mobilenet, (224, 224, 3), args.batches, args.batch_size, args.repeats)
    )
    embedded, _ = fold_batch_norms(build_mnist_mobilenet())
    rows.append(measure("mnist_mobilenet 28 (batch 256)", embedded, (28, 28, 1), args.batches * 8, 256, args.repeats))
    table = markdown_table(rows)
    text = (
        f"`python bench/quantsim_overhead.py --repeats {args.repeats} --write` on {time.strftime('%Y-%m-%d')} "
        f"({'GPU' if 'GPU' in devices else f'CPU, {os.cpu_count()} cores'}, TensorFlow {tf.__version__}; median, range over "
        f"{args.repeats} alternated repeats; the sim's quantizer ran as `{kernel_name()}`; targets ≤ 1.15×, and "
        f"`exact` within 0.1× of `floor_one_kernel`):\n\n{table}"
    )
    print(text)
    if args.write:
        rewrite_block(ROOT / "README.md", "quantsim-overhead", text)


if __name__ == "__main__":
    main()
