"""Automatic mixed precision (AIMET's AMP): which layers can go to the lower bitwidths.

Candidates are (weight bits, activation bits) pairs; a quantizer group is a layer that owns quantizers
(its weights and its output quantizer take the candidate's bits). Cost: relative BitOps, Σ MACs × weight
bits × input-activation bits over the same sum at W8A8. Phases, as AIMET's:
1. sensitivity: with every group at the highest candidate, each group alone at each lower candidate;
2. a greedy Pareto front from all-highest to all-lowest: each step lowers the group whose next candidate
   costs the least accuracy (phase 1) per BitOps saved, and measures the accuracy of the new configuration;
3. the cheapest point whose accuracy is within ``allowed_accuracy_drop`` of FP32.
One calibration serves every candidate: the statistics do not depend on the bitwidth, encodings and
kernels are switched at run time (no retracing).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd

from workbench.graph.functional import WEIGHTED_TYPES
from workbench.options import Rounding
from workbench.quantsim.analysis import batched_logits, quantized_layers
from workbench.quantsim.encodings import Encoding
from workbench.quantsim.sim import QuantizationSimModel

Candidate = tuple[int, int]  # (weight bits, activation bits)
# (layer, weight bits) -> a kernel already on its grid and that grid (e.g. AdaRound's), used instead of round-to-nearest
RoundedKernels = dict[tuple[str, int], tuple[np.ndarray, Encoding]]
REFERENCE: Candidate = (8, 8)


def layer_macs(model: keras.Model) -> dict[str, int]:
    """Multiply-accumulates per sample of every Conv2D / DepthwiseConv2D / Dense layer."""
    macs = {}
    for layer in model.layers:
        if not isinstance(layer, WEIGHTED_TYPES) or getattr(layer, "kernel", None) is None:
            continue
        out = layer.output.shape
        positions = int(np.prod([d for d in out[1:-1]])) if len(out) > 2 else 1
        macs[layer.name] = positions * int(np.prod(layer.kernel.shape))
    return macs


def bitops(macs: dict[str, int], weight_bits: dict[str, int], input_bits: dict[str, int]) -> float:
    return float(sum(m * weight_bits[n] * input_bits[n] for n, m in macs.items()))


@dataclass
class MixedPrecisionResult:
    sensitivity: pd.DataFrame  # per group and lower candidate: top-1 with that group alone lowered
    front: pd.DataFrame  # step, group lowered, candidate, relative BitOps, top-1
    chosen: dict[str, Candidate] = field(default_factory=dict)
    step: int = 0  # the chosen point's step on the front
    relative_bitops: float = 1.0
    top1: float = 0.0
    fp32_top1: float = 0.0

    def overrides(self) -> dict[str, dict[str, int]]:
        """The chosen bitwidths in ``quant.overrides`` form (exact names, escaped)."""
        return {re.escape(n): {"param_bw": c[0], "output_bw": c[1]} for n, c in self.chosen.items()}


class _Switchboard:
    """Sets any group's bitwidths on a calibrated sim without retracing it."""

    def __init__(self, sim: QuantizationSimModel, candidates: list[Candidate], rounded: RoundedKernels | None = None):
        self.sim = sim
        s = sim.settings
        rng = np.random.default_rng(s.seed)
        self.kernels: dict[tuple[str, int], np.ndarray] = {}
        self.encodings: dict[tuple[str, str, int], Encoding] = {}
        weight_bits = sorted({c[0] for c in candidates})
        output_bits = sorted({c[1] for c in candidates})
        for name, pq in sim.param_quantizers.items():
            for bw in weight_bits:
                if rounded is not None and (name, bw) in rounded:
                    self.kernels[(name, bw)], enc = rounded[(name, bw)]
                else:
                    enc = sim.param_encoding_at(name, bw)
                    self.kernels[(name, bw)] = pq.quantized_kernel(Rounding(s.rounding), rng, enc)
                self.encodings[("param", name, bw)] = enc
        for name, analyzer in sim.analyzers.items():
            for bw in output_bits:
                self.encodings[("output", name, bw)] = analyzer.compute_encoding(bw)

    def apply(self, config: dict[str, Candidate]) -> None:
        for name, (wbw, obw) in config.items():
            if name in self.sim.param_quantizers:
                self.sim.param_quantizers[name].variable(self.sim.layers_by_name[name]).assign(self.kernels[(name, wbw)])
                self.sim.param_quantizers[name].encoding = self.encodings[("param", name, wbw)]
            if name in self.sim.output_quantizers:
                self.sim.output_quantizers[name].load_grid(self.encodings[("output", name, obw)])


def choose_mixed_precision(
    sim: QuantizationSimModel,
    images: np.ndarray,
    labels: np.ndarray,
    candidates: list[Candidate],
    allowed_accuracy_drop: float,
    batch_size: int = 256,
    progress: Callable[[str], None] | None = None,
    rounded: RoundedKernels | None = None,
) -> MixedPrecisionResult:
    """AMP on a sim calibrated at the highest candidate (its analyzers kept); ``rounded`` supplies kernels
    for some (layer, weight bits) candidates, e.g. AdaRounded ones."""
    candidates = sorted({(int(w), int(a)) for w, a in candidates}, key=lambda c: (c[0] * c[1], c), reverse=True)
    highest = candidates[0]
    groups = quantized_layers(sim)
    board = _Switchboard(sim, candidates, rounded)
    predict = batched_logits(sim.model, batch_size)
    labels = np.asarray(labels)
    macs = layer_macs(sim.fp_model)
    sources = {n: sim.input_quantizer(n) for n in macs}
    reference = bitops(macs, dict.fromkeys(macs, REFERENCE[0]), dict.fromkeys(macs, REFERENCE[1]))

    def cost(config: dict[str, Candidate]) -> float:
        weight_bits = {n: config[n][0] if n in config and n in sim.param_quantizers else 32 for n in macs}
        input_bits = {n: config[s][1] if s in config else 32 for n, s in sources.items()}
        return bitops(macs, weight_bits, input_bits) / reference

    def top1(config: dict[str, Candidate]) -> float:
        board.apply(config)
        return float(np.mean(predict(images).argmax(-1) == labels))

    fp32 = float(np.mean(batched_logits(sim.fp_model, batch_size)(images).argmax(-1) == labels))
    config = dict.fromkeys(groups, highest)
    base = top1(config)
    # phase 1: each group alone at each lower candidate
    sens_rows, sensitivity = [], {}
    for g in groups:
        for c in candidates[1:]:
            acc = top1({**config, g: c})
            sensitivity[(g, c)] = acc
            sens_rows.append({"group": g, "param_bw": c[0], "output_bw": c[1], "top1": acc, "drop": base - acc})
        board.apply({g: highest})
        if progress is not None:
            progress("sensitivity")
    # phase 2: greedy front, highest to lowest
    front: list[dict[str, Any]] = [
        {"step": 0, "group": "", "param_bw": highest[0], "output_bw": highest[1], "relative_bitops": cost(config), "top1": base}
    ]
    level = dict.fromkeys(groups, 0)
    while True:
        options = []
        for g in groups:
            if level[g] + 1 >= len(candidates):
                continue
            nxt = candidates[level[g] + 1]
            saved = cost(config) - cost({**config, g: nxt})
            if saved <= 0:  # e.g. an output quantizer whose candidates only differ in weight bits
                continue
            loss = max(base - sensitivity[(g, nxt)], 0.0)
            options.append(((loss + 1e-9) / max(saved, 1e-12), g, nxt))
        if not options:
            break
        _, g, nxt = min(options)
        config[g] = nxt
        level[g] += 1
        front.append(
            {"step": len(front), "group": g, "param_bw": nxt[0], "output_bw": nxt[1], "relative_bitops": cost(config), "top1": top1(config)}
        )
        if progress is not None:
            progress("front")
    # phase 3: the cheapest configuration within the allowed drop (replayed from the front)
    frame = pd.DataFrame(front)
    ok = frame[frame["top1"] >= fp32 - allowed_accuracy_drop]
    pick = int(ok.sort_values(["relative_bitops", "step"]).iloc[0]["step"]) if not ok.empty else 0
    chosen = dict.fromkeys(groups, highest)
    for row in front[1 : pick + 1]:
        chosen[row["group"]] = (row["param_bw"], row["output_bw"])
    board.apply(dict.fromkeys(groups, highest))
    return MixedPrecisionResult(
        sensitivity=pd.DataFrame(sens_rows),
        front=frame,
        chosen=chosen,
        step=pick,
        relative_bitops=float(frame.loc[pick, "relative_bitops"]),
        top1=float(frame.loc[pick, "top1"]),
        fp32_top1=fp32,
    )
