"""Figures: pictures where people would rather look than read (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def channel_range_figure(before: dict[str, np.ndarray], after: dict[str, np.ndarray], layers: list[str], title: str):
    """Per-output-channel weight ranges of ``layers`` before and after a transform (log scale)."""
    fig, axes = plt.subplots(len(layers), 1, figsize=(9, 2.4 * max(1, len(layers))), squeeze=False)
    for ax, name in zip(axes[:, 0], layers):
        b = before[name]
        x = np.arange(len(b))
        ax.bar(x - 0.2, np.maximum(b, 1e-12), width=0.4, label="before", color="tab:red")
        if name in after:
            ax.bar(x + 0.2, np.maximum(after[name], 1e-12), width=0.4, label="after", color="tab:blue")
        ax.set_yscale("log")
        ax.set_ylabel("max |w|")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-1, len(b))
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("output channel")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_vs_bitwidth_figure(table):
    """sim/top1 against weight bitwidth, one line per stage (per activation bitwidth and granularity)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    frame = table.copy()
    parts = frame["setting"].str.extract(r"W(?P<w>\d+)A(?P<a>\d+)(?P<pc> per-channel)?")
    frame["w"] = parts["w"].astype(int)
    frame["group"] = "A" + parts["a"] + parts["pc"].fillna("")
    for (stage, group), rows in frame.groupby(["stage", "group"], sort=False):
        rows = rows.sort_values("w")
        ax.plot(rows["w"], 100 * rows["sim/top1"], marker="o", label=f"{stage} ({group})")
    fp32 = frame["fp32/top1"].dropna()
    if len(fp32):
        ax.axhline(100 * fp32.iloc[0], color="grey", linestyle="--", label="FP32")
    ax.set_xticks(sorted(frame["w"].unique()))
    ax.set_xlabel("weight bitwidth")
    ax.set_ylabel("sim top-1 (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def layer_sqnr_figure(sqnr, setting: str):
    """Per-layer output SQNR (dB, FP32 vs sim) per stage, layers in graph order."""
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(sqnr))
    for stage in sqnr.columns:
        ax.plot(x, sqnr[stage].to_numpy(dtype=float), marker=".", label=stage)
    ax.set_xticks(x)
    ax.set_xticklabels(sqnr.index, rotation=90, fontsize=6)
    ax.set_ylabel("output SQNR (dB)")
    ax.set_title(f"per-layer SQNR, {setting}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
