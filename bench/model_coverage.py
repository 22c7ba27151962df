"""What the workbench makes of the models users bring: the zoo of ``tests/model_zoo.py`` (random weights, small inputs).

Per model: layers after flattening (nested models inlined, composite layers split, ``keras.ops`` operations
wrapped), weight and output quantizers, the share of weight elements quantized and what the sim cannot quantize
(``coverage.csv``'s ``unsupported`` rows), and the tensors the int8 TFLite converter still leaves in float (W8A8,
BN folded + CLE, per-tensor, eight random calibration samples: a count of the converter's output, not an accuracy).
``--write`` puts the table into README's Models section.

    python bench/model_coverage.py [--write] [--models NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from doc_blocks import markdown_table, rewrite_block  # noqa: E402
from model_zoo import ZOO  # noqa: E402

from workbench.graph.flatten import flatten_with_report  # noqa: E402
from workbench.options import QuantSettings  # noqa: E402
from workbench.quantsim.coverage import coverage_table, summarize  # noqa: E402
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over  # noqa: E402
from workbench.quantsim.tflite import TFLiteConversionError, convert_to_int8_tflite, integer_report  # noqa: E402
from workbench.techniques import equalize_model  # noqa: E402


def measure(name: str) -> dict:
    keras.utils.set_random_seed(0)
    model = ZOO[name]()
    start = time.perf_counter()
    flat, report = flatten_with_report(model)
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(8, *t.shape[1:])).astype(np.float32) for t in model.inputs]
    equalized, _ = equalize_model(flat)
    sim = QuantizationSimModel(equalized, QuantSettings())
    sim.compute_encodings(forward_pass_over([xs if len(xs) > 1 else xs[0]]))
    summary = summarize(coverage_table(sim))
    try:
        floats = str(len(integer_report(convert_to_int8_tflite(sim))["float_tensors"]))
    except TFLiteConversionError as err:
        floats = f"conversion failed: {str(err)[:80]}"
    changes = [f"{len(report.inlined)} inlined"] * bool(report.inlined) + [f"{len(report.decomposed)} split"] * bool(report.decomposed)
    changes += [f"{len(report.wrapped)} ops wrapped"] * bool(report.wrapped)
    unsupported = sorted({why.split(":")[0] for why in summary.unsupported.values()})
    return {
        "model": name,
        "form": type(model).__name__,
        "layers (flat)": f"{len(flat.layers)}" + (f" ({', '.join(changes)})" if changes else ""),
        "weight / output quantizers": f"{len(sim.param_quantizers)} / {len(sim.output_quantizers)}",
        "weights quantized": f"{100 * summary.weights_quantized:.1f} %",
        "left float (unsupported)": ", ".join(unsupported) or "—",
        "int8 TFLite float tensors": floats,
        "seconds": f"{time.perf_counter() - start:.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite README's model-coverage block")
    parser.add_argument("--models", nargs="*", default=list(ZOO))
    args = parser.parse_args()
    rows = []
    for name in args.models:
        rows.append(measure(name))
        print(rows[-1], flush=True)
    text = (
        f"`python bench/model_coverage.py --write` on {time.strftime('%Y-%m-%d')} (tensorflow {__import__('tensorflow').__version__}, "
        f"keras {keras.__version__}; W8A8 per-tensor, BN folded + CLE; random weights, 32×32 inputs):\n\n" + markdown_table(rows)
    )
    print(text)
    if args.write:
        rewrite_block(ROOT / "README.md", "model-coverage", text)


if __name__ == "__main__":
    main()
