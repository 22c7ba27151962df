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
