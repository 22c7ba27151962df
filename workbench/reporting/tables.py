"""Tables for people: accuracies in %, p-values to 3 digits, short run ids; GitHub Markdown.

Shared by the Markdown report (``report.py``) and the HTML one (``html.py``), so neither imports the other.
"""

from __future__ import annotations

import math

import pandas as pd

from workbench import keys

MISSING = "missing"
PERCENT = [
    keys.FP32_TOP1,
    *keys.ci_keys(keys.FP32_TOP1),
    keys.SIM_TOP1,
    "ci_low",
    "ci_high",
    "drop_vs_fp32",
    "delta_vs_baseline",
    keys.TFLITE_TOP1,
]


def readable(table: pd.DataFrame, percent: list[str] | None = None) -> pd.DataFrame:
    """The comparison for people: accuracies (the ``percent`` columns, top-1's by default) in %, p-values to 3
    digits, short run ids."""
    percent = PERCENT if percent is None else percent
    frame = table.drop(columns=[c for c in ("param_bw", "output_bw", "per_channel") if c in table])
    for c in percent:
        if c in frame:
            frame[c] = frame[c].map(lambda v: MISSING if pd.isna(v) else f"{100 * v:.1f}")
    frame = frame.rename(columns={c: f"{c} (%)" for c in percent if c in frame})
    if "p_value" in frame:
        frame["p_value"] = frame["p_value"].map(lambda v: "-" if pd.isna(v) else f"{v:.3g}")
    if "run_id" in frame:
        frame["run_id"] = frame["run_id"].str[:8]
    return frame


def to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table; NaN shows as 'missing', never as 0."""

    def cell(v) -> str:
        if isinstance(v, float):
            return MISSING if math.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    frame = frame.reset_index() if frame.index.name is not None else frame
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"
