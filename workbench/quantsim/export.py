"""Encodings in AIMET's JSON layouts (0.6.1 and 1.0.0) and back into a sim."""

from __future__ import annotations

import json
import os

import numpy as np

from workbench.quantsim.encodings import Encoding, infer_steps
from workbench.quantsim.sim import QuantizationSimModel

ACTIVATION_SUFFIX = ":0"


def _activation_name(layer_name: str) -> str:
    return f"{layer_name}{ACTIVATION_SUFFIX}"


def _quantizer_args(sim: QuantizationSimModel) -> dict:
    s = sim.settings
    return {
        "activation_bitwidth": s.output_bw,
        "dtype": "int",
        "is_symmetric": bool(s.param_symmetric),
        "param_bitwidth": s.param_bw,
        "per_channel_quantization": bool(s.per_channel),
        # AIMET has one scheme for all quantizers; ours may differ for weights and activations
        "quant_scheme": _aimet_scheme(s.output_scheme),
        "param_quant_scheme": _aimet_scheme(s.param_scheme),
        "activation_quant_scheme": _aimet_scheme(s.output_scheme),
    }


def _aimet_scheme(scheme) -> str:
    return scheme.value if scheme.range_learning else f"post_training_{scheme.value}"


def encodings_json(sim: QuantizationSimModel, version: str = "0.6.1") -> dict:
    """The sim's encodings as AIMET's JSON (``version`` 0.6.1 or 1.0.0)."""
    params = {sim.param_quantizers[n].tensor_name: e for n, e in sim.param_encodings().items()}
    acts = {_activation_name(n): e for n, e in sim.output_encodings().items()}
    if version == "0.6.1":
        return {
            "version": "0.6.1",
            "activation_encodings": {k: e.to_dicts() for k, e in acts.items()},
            "param_encodings": {k: e.to_dicts() for k, e in params.items()},
            "quantizer_args": _quantizer_args(sim),
        }
    if version == "1.0.0":

        def entry(name: str, enc: Encoding) -> dict:
            return {
                "name": name,
                "dtype": "INT",
                "enc_type": "PER_CHANNEL" if enc.num_channels > 1 else "PER_TENSOR",
                "bw": int(enc.bitwidth),
                "is_sym": bool(enc.symmetric),
                "scale": [float(v) for v in enc.scale],
                "offset": [int(v) for v in enc.offset],
            }

        return {
            "version": "1.0.0",
            "activation_encodings": [entry(k, e) for k, e in acts.items()],
            "param_encodings": [entry(k, e) for k, e in params.items()],
            "excluded_layers": sorted(sim.excluded_layers),
            "quantizer_args": _quantizer_args(sim),
        }
    raise ValueError(f"encodings version {version!r} is not supported; allowed: 0.6.1, 1.0.0")


def _from_entry(entry: dict) -> Encoding:
    bw, sym = int(entry["bw"]), bool(entry["is_sym"])
    offset = np.asarray(entry["offset"], np.float32)
    return Encoding(bw, infer_steps(bw, sym, offset), sym, np.asarray(entry["scale"], np.float32), offset)


def load_encodings(sim: QuantizationSimModel, data: dict) -> None:
    """Set a sim's encodings from AIMET JSON (either version), matching tensors by name."""
    by_tensor = {pq.tensor_name: n for n, pq in sim.param_quantizers.items()}
    by_act = {_activation_name(n): n for n in sim.output_quantizers}
    if data.get("version") == "1.0.0":
        params = {by_tensor[e["name"]]: _from_entry(e) for e in data["param_encodings"]}
        acts = {by_act[e["name"]]: _from_entry(e) for e in data["activation_encodings"]}
    else:
        params = {by_tensor[k]: Encoding.from_dicts(v) for k, v in data["param_encodings"].items()}
        acts = {by_act[k]: Encoding.from_dicts(v) for k, v in data["activation_encodings"].items()}
    sim.set_encodings(params, acts)


def export_model(sim: QuantizationSimModel, directory: str, prefix: str = "model") -> dict[str, str]:
    """The float model with every weight change and no fake-quant ops (``<prefix>.keras``) plus its
    encodings in both JSON layouts, ready for a target toolchain; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = export_encodings(sim, directory, prefix)
    model_path = os.path.join(directory, f"{prefix}.keras")
    sim.fp_model.save(model_path)
    paths["model"] = model_path
    return paths


def export_encodings(sim: QuantizationSimModel, directory: str, prefix: str = "model") -> dict[str, str]:
    """Write ``<prefix>.encodings`` (0.6.1) and ``<prefix>_v1.encodings`` (1.0.0); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for version, name in (("0.6.1", f"{prefix}.encodings"), ("1.0.0", f"{prefix}_v1.encodings")):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            json.dump(encodings_json(sim, version), f, indent=2)
        paths[version] = path
    return paths
