"""AdaRound: accuracy and optimisation time against the number of iterations per layer.

On `model=mnist_mobilenet_v2` (BN folded + CLE, W4A8, per-tensor and per-channel weights, `quant.scheme`
default), for each `adaround.num_iterations` in the list: the AdaRound optimisation's wall time and the
sim's top-1 with its 95 % interval, next to round-to-nearest (the `cle` stage's sim) and FP32, all on
the 1,000 validation digits. The default iteration count is chosen from this table. ``--write`` puts it
into README's Performance section.

    python bench/adaround_speed.py [--iterations 100 250 500 1000] [--write]
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

from doc_blocks import markdown_table, rewrite_block  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from workbench.config.schema import register_configs  # noqa: E402
from workbench.config.validate import validate  # noqa: E402
from workbench.data.dataset import as_array  # noqa: E402
from workbench.evaluation.accuracy import predict_classes  # noqa: E402
from workbench.evaluation.statistics import wilson_interval  # noqa: E402
from workbench.options import AdaroundParameters  # noqa: E402
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over  # noqa: E402
from workbench.registry import stage_names  # noqa: E402
from workbench.stages.setup import build_data, build_model  # noqa: E402
from workbench.techniques.adaround import apply_adaround  # noqa: E402
from workbench.techniques.cross_layer_equalization import equalize_model  # noqa: E402


def _top1(model, data) -> str:
    p = predict_classes(model, data.val_batches())
    low, high = wilson_interval(int(p.correct.sum()), len(p.labels))
    return f"{100 * p.top1:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, nargs="+", default=[100, 250, 500, 1000])
    parser.add_argument("--write", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    register_configs()
    rows = []
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        for per_channel in (False, True):
            cfg = validate(
                compose(
                    "config",
                    [
                        "model=mnist_mobilenet_v2",
                        "quant.param_bw=4",
                        f"quant.per_channel={per_channel}",
                        f"paths.outputs_dir={ROOT / 'outputs'}",
                    ],
                ),
                stage_names(),
            )
            data = build_data(cfg)
            model = build_model(cfg, data)
            data = data.for_model(model.input_shape[1:])
            settings = cfg.quant
            equalized, _ = equalize_model(model)
            setting = f"W4A8 {'per-channel' if per_channel else 'per-tensor'}"
            calibration = forward_pass_over(data.calibration_batches(cfg.quant.calibration_samples, cfg.seed))
            nearest = QuantizationSimModel(equalized, settings)
            nearest.compute_encodings(calibration)
            rows.append({"setting": setting, "rounding": "FP32", "iterations": "", "time (s)": "", "top-1": _top1(model, data)})
            rows.append(
                {"setting": setting, "rounding": "nearest (cle)", "iterations": "", "time (s)": "", "top-1": _top1(nearest.model, data)}
            )
            print(rows[-2], rows[-1], flush=True)
            defaults = AdaroundParameters()
            samples = as_array(data.calibration_batches(defaults.num_batches * defaults.batch_size, cfg.seed, defaults.batch_size))
            for iterations in args.iterations:
                start = time.perf_counter()
                rounded, encodings, report = apply_adaround(equalized, settings, samples, AdaroundParameters(num_iterations=iterations))
                seconds = time.perf_counter() - start
                sim = QuantizationSimModel(rounded, settings)
                sim.compute_encodings(calibration, param_encodings=encodings)
                rows.append(
                    {
                        "setting": setting,
                        "rounding": f"AdaRound ({100 * report.mean_flip_fraction:.1f} % flipped)",
                        "iterations": str(iterations),
                        "time (s)": f"{seconds:.0f}",
                        "top-1": _top1(sim.model, data),
                    }
                )
                print(rows[-1], flush=True)
    table = markdown_table(rows)
    text = (
        f"`python bench/adaround_speed.py --write` on {time.strftime('%Y-%m-%d')} (`mnist_mobilenet_v2`, BN fold + CLE, "
        f"{defaults.num_batches}×{defaults.batch_size} samples, CPU, {os.cpu_count()} cores; time = the AdaRound optimisation "
        f"of all {len(report.layers)} layers):\n\n{table}"
    )
    print(text)
    if args.write:
        rewrite_block(ROOT / "README.md", "adaround-speed", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
