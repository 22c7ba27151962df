"""Per-output-channel weight ranges (max |w|) of every Conv/Depthwise/Dense kernel."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from workbench.graph.functional import WEIGHTED_TYPES


def kernel_channel_ranges(kernel: np.ndarray, depthwise: bool = False) -> np.ndarray:
    k = np.abs(np.asarray(kernel))
    if depthwise:
        k = k.reshape(*k.shape[:-2], -1)
    return k.reshape(-1, k.shape[-1]).max(axis=0)


def channel_ranges(model: keras.Model) -> dict[str, np.ndarray]:
    """Layer name -> per-output-channel range, for every weighted layer."""
    return {
        layer.name: kernel_channel_ranges(layer.kernel.numpy(), isinstance(layer, keras.layers.DepthwiseConv2D))
        for layer in model.layers
        if isinstance(layer, WEIGHTED_TYPES) and getattr(layer, "kernel", None) is not None
    }


def _spread(r: np.ndarray) -> float:
    """max/min channel range (inf when a channel is all zero)."""
    lo = float(r.min())
    return float(r.max()) / lo if lo > 0 else float("inf")


def range_table(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for name, b in before.items():
        row = {"layer": name, "channels": len(b), "before_min": float(b.min()), "before_max": float(b.max()), "before_spread": _spread(b)}
        a = after.get(name)
        if a is not None:
            row.update(after_min=float(a.min()), after_max=float(a.max()), after_spread=_spread(a))
        rows.append(row)
    return pd.DataFrame(rows)


def most_uneven(before: dict[str, np.ndarray], k: int = 4) -> list[str]:
    """The ``k`` layers whose channel ranges differ most (max/min), zero channels last."""

    def key(name: str) -> float:
        s = _spread(before[name])
        return s if np.isfinite(s) else 0.0

    return sorted((n for n in before if len(before[n]) > 1), key=key, reverse=True)[:k]
