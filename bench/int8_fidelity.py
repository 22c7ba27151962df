"""How well the simulation predicts the int8 runtime: sim logits vs the int8 TFLite model, image by image.

For each embedded model and a MobileNetV3Small-style model (keras.applications MobileNetV3Small, alpha 0.75,
random init: hard-swish, squeeze-excite with hard-sigmoid; this script trains it on the embedded digits at
32×32×3 and caches it), BN folded, W8A8, per-tensor and per-channel weights, and each sim target
(`quant.target=aimet`: AIMET's default config; `quant=tflite`: the TFLite runtime's grids and integer kernels),
the sim is calibrated on 1,000 training digits and converted to a fully integer TFLite model from its own
encodings (`quantsim/tflite.py`); both run the 1,000 validation digits. Printed per setting: argmax agreement,
the share of logits within 1 and 2 LSB of each other (LSB = the int8 output tensor's scale), the worst
difference in LSB and how many tensors of the int8 model are float. ``--tensors`` also prints, for the tflite
target, every quantized tensor's agreement in network order (where differences start and how they grow).
``--write`` puts the table into README's Performance section.

    python bench/int8_fidelity.py [--write] [--tensors] [--model-path my_model.keras]
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

import numpy as np  # noqa: E402
from doc_blocks import markdown_table, rewrite_block  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from workbench.config.schema import register_configs  # noqa: E402
from workbench.config.validate import validate  # noqa: E402
from workbench.models.cache import cached_model  # noqa: E402
from workbench.models.training import train_classifier  # noqa: E402
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over  # noqa: E402
from workbench.quantsim.tflite import Int8Runner, convert_to_int8_tflite, integer_report, tensor_agreement  # noqa: E402
from workbench.registry import stage_names  # noqa: E402
from workbench.stages.setup import build_data, build_model  # noqa: E402
from workbench.techniques import fold_batch_norms  # noqa: E402

MODELS = ("mnist_mobilenet", "mnist_mobilenet_v2")
V3 = "mobilenet_v3_small_digits"
V3_SPEC = {"alpha": 0.75, "input_shape": [32, 32, 3], "epochs": 10, "batch_size": 64, "learning_rate": 0.003, "bn_momentum": 0.9}


def mobilenet_v3_digits(cfg, data):
    """MobileNetV3Small (alpha 0.75, random init) trained on the digits at 32×32×3, cached by its settings."""
    import keras

    def train():
        keras.utils.set_random_seed(cfg.seed)
        model = keras.applications.MobileNetV3Small(
            input_shape=tuple(V3_SPEC["input_shape"]),
            alpha=V3_SPEC["alpha"],
            minimalistic=False,
            weights=None,
            include_preprocessing=False,
            classes=data.num_classes,
            classifier_activation=None,
            dropout_rate=0.0,
        )
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = V3_SPEC["bn_momentum"]
        trained = train_classifier(model, data, V3_SPEC["epochs"], V3_SPEC["batch_size"], V3_SPEC["learning_rate"], True, cfg.seed)
        return trained, {}

    spec = {**V3_SPEC, "seed": cfg.seed, "keras": keras.__version__, "num_classes": data.num_classes}
    model, _, _ = cached_model(str(Path(cfg.paths.cache_dir) / "models"), V3, spec, train)
    return model


def runner_blob(sim: QuantizationSimModel) -> bytes:
    return convert_to_int8_tflite(sim)


def compare(cfg, label: str, tensors: bool = False, v3: bool = False) -> dict:
    data = build_data(cfg)
    if v3:
        data = data.for_model(V3_SPEC["input_shape"])
        model = mobilenet_v3_digits(cfg, data)
    else:
        model = build_model(cfg, data)
        data = data.for_model(model.input_shape[1:])
    folded, _ = fold_batch_norms(model)
    sim = QuantizationSimModel(folded, cfg.quant)
    sim.compute_encodings(forward_pass_over(data.calibration_batches(cfg.quant.calibration_samples, cfg.seed)))
    images = np.concatenate([x.numpy() for x, _ in data.val_batches()])
    sim_logits = sim.model.predict(images, batch_size=256, verbose=0)
    start = time.perf_counter()
    blob = runner_blob(sim)
    runner = Int8Runner(blob)
    int_logits, lsb = runner.logits(images), float(runner.lsb)
    seconds = time.perf_counter() - start
    diff = np.abs(sim_logits - int_logits) / lsb
    if tensors:
        import pandas as pd

        print(f"{label}: every quantized tensor, 200 validation images")
        print(pd.DataFrame(tensor_agreement(sim, blob, images[:200])).to_string(index=False), flush=True)
    return {
        "model, W8A8": label,
        "argmax agreement": f"{100 * np.mean(sim_logits.argmax(-1) == int_logits.argmax(-1)):.1f} %",
        "logits within 1 LSB": f"{100 * np.mean(diff <= 1.0 + 1e-3):.1f} %",
        "within 2 LSB": f"{100 * np.mean(diff <= 2.0 + 1e-3):.1f} %",
        "worst": f"{diff.max():.0f} LSB",
        "float tensors": len(integer_report(blob)["float_tensors"]),
        "convert + run (s)": f"{seconds:.0f}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the table into README.md")
    parser.add_argument("--model-path", help="also measure this Keras file (on the embedded digits)")
    parser.add_argument("--tensors", action="store_true", help="per-tensor agreement for the tflite target")
    args = parser.parse_args(argv)
    register_configs()
    rows = []
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cases = [(m, [f"model={m}"]) for m in MODELS] + [(V3, ["model=mnist_mobilenet_v2"])]  # V3: the digits at 32×32×3
        if args.model_path:
            cases.append((Path(args.model_path).name, ["model=keras_file", f"model.path={args.model_path}"]))
        for name, overrides in cases:
            for target in ("aimet", "tflite"):
                for per_channel in (False, True):
                    quant = ["quant=tflite"] if target == "tflite" else []
                    chosen = [*overrides, *quant, f"quant.per_channel={per_channel}", f"paths.outputs_dir={ROOT / 'outputs'}"]
                    cfg = validate(compose("config", chosen), stage_names())
                    label = f"{name}, {'per-channel' if per_channel else 'per-tensor'}, target {target}"
                    rows.append(compare(cfg, label, args.tensors and target == "tflite", v3=name == V3))
                    print(rows[-1], flush=True)
    table = markdown_table(rows)
    text = (
        f"`python bench/int8_fidelity.py --write` on {time.strftime('%Y-%m-%d')} (`quant.scheme` default, BN folded; "
        f"target aimet: AIMET's default config; target tflite: `quant=tflite`; LiteRT interpreter; 1,000 validation digits):\n\n{table}"
    )
    print(text)
    if args.write:
        rewrite_block(ROOT / "README.md", "int8-fidelity", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
