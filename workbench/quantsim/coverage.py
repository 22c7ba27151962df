"""The coverage account of a sim: every weight tensor and every op output, quantized or with its reason.

A number from a sim that leaves part of the network in float is optimistic. Each row here says what
stays float and why, in one of three kinds:

- ``user``: the user's own choice (``quant.overrides``, excluded layers);
- ``policy``: float by AIMET's default config (biases, normalization parameters, ops that only move
  data, the inner ops of a supergroup, integer tensors);
- ``unsupported``: the sim has no rule for it (a weight of a layer type without a rule, a shared layer's
  output, a layer with several outputs). A run with any such row is *partial*: tagged and marked in reports.

The sim's model is flattened first, so every ``keras.ops`` operation is a layer here (``OperationLayer``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from workbench.quantsim.rules import NO_RULE, weight_status
from workbench.quantsim.sim import QuantizationSimModel

USER_REASONS = ("excluded by the user", "left float by quant.overrides")
UNSUPPORTED_REASONS = (NO_RULE, "shared layer", "several outputs")


def reason_kind(reason: str) -> str:
    if any(reason.startswith(r) for r in USER_REASONS):
        return "user"
    if any(reason.startswith(r) for r in UNSUPPORTED_REASONS):
        return "unsupported"
    return "policy"


def coverage_table(sim: QuantizationSimModel) -> pd.DataFrame:
    """One row per weight tensor and per op output: layer, type, tensor, elements, quantized, reason, kind."""
    rows = []
    for name in sim.graph.order:
        layer = sim.graph.layer(name)
        kind = type(layer).__name__
        pq = sim.param_quantizers.get(name)
        skipped = sim.plan.skipped.get(name)
        for weight, elements, why in weight_status(layer):
            quantized = pq is not None and pq.weight == weight and pq.enabled
            if why is None and not quantized:
                why = skipped or "not quantized"
            rows.append(_row("weight", name, kind, f"{name}/{weight}", elements, quantized, why))
        quantized = name in sim.output_quantizers
        rows.append(_row("output", name, kind, f"{name}:0", None, quantized, None if quantized else skipped or "not quantized"))
    return pd.DataFrame(rows, columns=["kind", "layer", "type", "tensor", "elements", "quantized", "reason", "reason_kind"])


def _row(kind, layer, type_, tensor, elements, quantized, reason) -> dict:
    return {
        "kind": kind,
        "layer": layer,
        "type": type_,
        "tensor": tensor,
        "elements": elements,
        "quantized": bool(quantized),
        "reason": reason or "",
        "reason_kind": "" if quantized else reason_kind(reason or ""),
    }


@dataclass
class CoverageSummary:
    """The account in numbers: the share of weight elements quantized (of those AIMET's config quantizes,
    i.e. not float by policy), layers left float for a non-policy reason, and whether the sim is partial."""

    weights_quantized: float
    float_layers: dict[str, str] = field(default_factory=dict)  # layer → its first non-policy reason
    unsupported: dict[str, str] = field(default_factory=dict)  # layer → reason, for the unsupported ones

    @property
    def partial(self) -> bool:
        return bool(self.unsupported)

    def console_line(self) -> str | None:
        """'3 layers keep float weights or outputs: head (excluded by the user), …', or None when all is covered."""
        if not self.float_layers:
            return None
        items = list(self.float_layers.items())
        shown = ", ".join(f"{n} ({why})" for n, why in items[:5]) + (
            f", and {len(items) - 5} more (coverage.csv)" if len(items) > 5 else ""
        )
        noun = "layer keeps" if len(items) == 1 else "layers keep"
        return f"{len(items)} {noun} float weights or outputs: {shown}"


def summarize(table: pd.DataFrame) -> CoverageSummary:
    weights = table[table["kind"] == "weight"]
    counted = weights[weights["quantized"] | (weights["reason_kind"] != "policy")]
    total = float(counted["elements"].sum())
    share = float(counted.loc[counted["quantized"], "elements"].sum()) / total if total > 0 else 1.0
    gaps = table[~table["quantized"] & table["reason_kind"].isin(["user", "unsupported"])]
    float_layers: dict[str, str] = {}
    unsupported: dict[str, str] = {}
    for layer, reason, kind in zip(gaps["layer"], gaps["reason"], gaps["reason_kind"]):
        float_layers.setdefault(layer, reason)
        if kind == "unsupported":
            unsupported.setdefault(layer, reason)
    return CoverageSummary(share, float_layers, unsupported)
