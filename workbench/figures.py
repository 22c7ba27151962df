"""Figures: pictures where people would rather look than read (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


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


def accuracy_vs_bitwidth_figure(table, sim: str = "sim/top1", fp32: str = "fp32/top1", percent: bool = True):
    """The sim's metric (``sim``: sim/top1, with its 95 % interval) against weight bitwidth, one line per stage and
    remaining setting; ``percent``: the metric is a fraction, shown in %."""
    scale = 100.0 if percent else 1.0
    fig, ax = plt.subplots(figsize=(8, 4.5))
    frame = table.dropna(subset=["param_bw"]).copy()
    frame["group"] = frame["setting"].str.replace(r"^W\d+", "", regex=True).str.strip()
    groups = list(frame.groupby(["stage", "variant", "group"], sort=False))
    offsets = np.linspace(-0.2, 0.2, len(groups)) if len(groups) > 1 else [0.0]
    markers = "osD^vP*Xh<>"
    for i, (offset, ((stage, variant, group), rows)) in enumerate(zip(offsets, groups)):
        rows = rows.sort_values("param_bw")
        y = scale * rows[sim].to_numpy(float)
        err = np.abs(scale * rows[["ci_low", "ci_high"]].to_numpy(float).T - y)
        label = " ".join(x for x in (stage, "" if variant == "-" else f"({variant})", group) if x)
        # each line its own marker, drawn half transparent and spread sideways: coinciding points stay visible
        ax.errorbar(
            rows["param_bw"] + offset, y, yerr=np.nan_to_num(err), marker=markers[i % len(markers)], capsize=3, alpha=0.8, label=label
        )
    reference = frame[fp32].dropna()
    if len(reference) and reference.nunique() == 1:
        ax.axhline(scale * reference.iloc[0], color="grey", linestyle="--", label="FP32")
    ax.set_xticks(sorted(frame["param_bw"].unique()))
    ax.set_xlabel("weight bitwidth (points spread sideways so that they do not hide each other)")
    name = "top-1" if sim == "sim/top1" else sim.split("/", 1)[1]
    ax.set_ylabel(f"sim {name}{' (%)' if percent else ''}, 95 % interval")
    ax.legend(fontsize=7)
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


def sensitivity_figure(table, fp32_top1: float, quantized_top1: float):
    """Per quantized layer, in network order: the top-1 drop with only it quantized, and the top-1 won back
    with all but it quantized."""
    fig, ax = plt.subplots(figsize=(max(8, 0.18 * len(table)), 4.5))
    x = np.arange(len(table))
    ax.bar(x - 0.2, 100 * table["drop_alone"].to_numpy(float), width=0.4, color="tab:red", label="drop with only this layer quantized")
    ax.bar(x + 0.2, 100 * table["gain_if_float"].to_numpy(float), width=0.4, color="tab:blue", label="gain with this layer left float")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels(table["layer"], rotation=90, fontsize=6)
    ax.set_ylabel("top-1 points")
    ax.set_title(f"per-layer sensitivity (FP32 {100 * fp32_top1:.1f} %, all quantized {100 * quantized_top1:.1f} %), network order")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def range_histograms_figure(observed: dict, encodings: dict, layers: list[str]):
    """Histograms of what the named layers output, with each output encoding's range drawn."""
    fig, axes = plt.subplots(len(layers), 1, figsize=(8, 2.2 * max(1, len(layers))), squeeze=False)
    for ax, name in zip(axes[:, 0], layers):
        values = np.asarray(observed[name]).ravel()
        ax.hist(values, bins=128, color="tab:grey", log=True)
        if name in encodings:
            enc = encodings[name]
            for edge in (float(enc.min[0]), float(enc.max[0])):
                ax.axvline(edge, color="tab:red", linestyle="--")
        ax.set_title(f"{name} output (dashed: encoding range)", fontsize=9)
    fig.tight_layout()
    return fig


def pareto_front_figure(front, chosen_step: int, fp32_top1: float, allowed_drop: float):
    """Accuracy against relative BitOps along AMP's greedy front, the chosen point ringed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(100 * front["relative_bitops"], 100 * front["top1"], marker=".", color="tab:blue", label="greedy front")
    pick = front[front["step"] == chosen_step].iloc[0]
    ax.scatter([100 * pick["relative_bitops"]], [100 * pick["top1"]], s=120, facecolors="none", edgecolors="tab:red", label="chosen")
    ax.axhline(100 * (fp32_top1 - allowed_drop), color="grey", linestyle="--", label=f"FP32 − {100 * allowed_drop:.1f} pt")
    ax.set_xlabel("BitOps relative to W8A8 (%)")
    ax.set_ylabel("top-1 on the search images (%)")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
