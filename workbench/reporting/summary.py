"""The closing lines of a run, a pipeline or a sweep: what the numbers are, and what they say."""

from __future__ import annotations

import math

import pandas as pd

from workbench import keys
from workbench.evaluation.statistics import BETTER, WORSE
from workbench.reporting.headline import Headline
from workbench.reporting.report import Report
from workbench.tracking.mlflow_run import ui_url


def _value(h: Headline, v: float) -> str:
    return "missing" if pd.isna(v) else h.text(v) + h.unit()


def _interval(h: Headline, row: pd.Series, low: str, high: str) -> str:
    return "" if pd.isna(row.get(low)) else f" [{h.text(row[low])}, {h.text(row[high])}]"


def closing_summary(report: Report, report_dir: str, run_label: str, run_id: str, tracking_uri: str, experiment_id: str) -> str:
    """FP32 and every stage's headline metric (top-1) with its 95 % interval and verdict, the best technique, where
    to look (the UI command, and the runs table with the workbench's columns)."""
    lines = []
    h = report.headline
    fp32_low, fp32_high = keys.ci_keys(h.fp32)
    for setting, rows in report.table.groupby("setting", sort=False):
        first = rows.iloc[0]
        fp32 = f" FP32 {h.label} {_value(h, first[h.fp32])}{_interval(h, first, fp32_low, fp32_high)}" if h.task.needs_labels else ""
        lines.append(f"== {setting} =={fp32}")
        for _, row in rows.iterrows():
            name = row.stage if row.variant == "-" else f"{row.stage} ({row.variant})"
            text = f"  {name:<28} sim {h.label} {_value(h, row[h.sim])}{_interval(h, row, 'ci_low', 'ci_high')}"
            if row.verdict in (BETTER, WORSE) or row.verdict.startswith("within"):
                p = "" if math.isnan(row.p_value) else f", {'McNemar' if h.task.binary else h.test_name} p={row.p_value:.2g}"
                text += f"  {h.delta(row.delta_vs_baseline)} vs baseline{p}: {row.verdict}"
            else:
                text += f"  ({row.verdict})"
            lines.append(text)
    for _, best in report.best.iterrows():
        lines.append(f"best technique at {best.setting}: {best.best}")
    if not report.excluded.empty:
        lines.append(f"{len(report.excluded)} run(s) left out of the comparison: see excluded.md")
    store = tracking_uri if tracking_uri.startswith(("sqlite:", "postgresql:", "mysql:", "file:")) else None
    lines += [
        f"({h.label} on the validation split with 95 % {h.interval} intervals; verdicts from the {h.test} on the same samples, p < 0.05)"
        if not h.task.binary
        else "(top-1 on the validation split with 95 % Wilson intervals; verdicts from an exact McNemar test on the same images, p < 0.05)",
        f"report: {report_dir}/report.html (Markdown for pull requests: report.md)",
        f"{run_label}: {run_id}",
    ]
    if store:
        lines += [f"open: mlflow ui --backend-store-uri {store}", f"  then: {ui_url(experiment_id)}"]
    else:
        lines.append(f"open: {ui_url(experiment_id, tracking_uri.rstrip('/'))}")
    return "\n".join(lines)
