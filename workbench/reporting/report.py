"""Comparison reports: MLflow runs read back into pandas, tables and plots written to disk.

``python -m workbench.report --experiment NAME [--parent RUN_ID]`` writes, under
``outputs/reports/<experiment>/``: a stage × setting table of ``sim/top1`` with the drop vs FP32
and the recovery vs baseline (CSV, Markdown, HTML), the per-layer SQNR across stages, and two
plots (accuracy vs weight bitwidth per stage; per-layer SQNR per stage).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field

import pandas as pd
from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from workbench.tracking import keys

STAGE_ORDER = ["baseline", "bn_fold", "cle", "bc", "qat"]
METRICS = [keys.FP32_TOP1, keys.SIM_TOP1, keys.TRANSFORMED_TOP1, keys.TFLITE_TOP1, keys.MEAN_SQNR_DB]
MISSING = "missing"


class ReportError(ValueError):
    """Nothing to report on: the message says why in plain words."""


def load_runs(client: MlflowClient, experiment: str, parent_run_id: str | None = None) -> pd.DataFrame:
    """One row per run: ids, status, stage and settings tags, and the compared metrics (NaN if absent)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"experiment {experiment!r} does not exist in this tracking store")
    query = f"tags.`{keys.TAG_PARENT}` = '{parent_run_id}'" if parent_run_id else ""
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if keys.TAG_STAGE not in tags:
            continue  # e.g. a sweep's parent run
        row = {
            "run_id": run.info.run_id,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "stage": tags.get(keys.TAG_STAGE),
            "model": tags.get(keys.TAG_MODEL),
            "dataset": tags.get(keys.TAG_DATASET),
            "scheme": tags.get(keys.TAG_SCHEME),
            "param_bw": int(tags.get(keys.TAG_PARAM_BW, 0) or 0),
            "output_bw": int(tags.get(keys.TAG_OUTPUT_BW, 0) or 0),
            "per_channel": tags.get(keys.TAG_PER_CHANNEL) == "True",
        }
        row.update({m: metrics.get(m, math.nan) for m in METRICS})
        rows.append(row)
    if not rows:
        where = f"under parent run {parent_run_id}" if parent_run_id else f"in experiment {experiment!r}"
        raise ReportError(f"no stage runs {where}: nothing to report")
    frame = pd.DataFrame(rows)
    frame["setting"] = frame.apply(lambda r: f"W{r.param_bw}A{r.output_bw}" + (" per-channel" if r.per_channel else ""), axis=1)
    return frame


def _stage_key(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table per (stage, setting) from the latest finished run: sim/top1, drop vs FP32, recovery vs baseline."""
    done = runs[runs["status"] == "FINISHED"].sort_values("start_time")
    latest = done.groupby(["stage", "setting"], as_index=False).last()
    baseline = latest[latest["stage"] == "baseline"].set_index("setting")[keys.SIM_TOP1]
    latest["drop_vs_fp32"] = latest[keys.FP32_TOP1] - latest[keys.SIM_TOP1]
    latest["recovery_vs_baseline"] = latest[keys.SIM_TOP1] - latest["setting"].map(baseline)
    latest = latest.sort_values(["setting", "stage"], key=lambda c: c.map(_stage_key) if c.name == "stage" else c)
    columns = ["stage", "setting", keys.FP32_TOP1, keys.SIM_TOP1, "drop_vs_fp32", "recovery_vs_baseline", keys.TFLITE_TOP1, "run_id"]
    return latest[columns].reset_index(drop=True)


def stage_by_setting(table: pd.DataFrame, value: str = keys.SIM_TOP1) -> pd.DataFrame:
    """Stages as rows, settings as columns."""
    wide = table.pivot(index="stage", columns="setting", values=value)
    return wide.loc[sorted(wide.index, key=_stage_key)]


def layer_sqnr(client: MlflowClient, table: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Per-layer output SQNR (dB) of each stage at one setting, from the runs' ``layers.csv``."""
    columns = {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in table[table["setting"] == setting].itertuples():
            try:
                path = client.download_artifacts(row.run_id, keys.ARTIFACT_LAYERS, tmp)
            except Exception:  # a run without the artifact (failed early) is simply absent
                continue
            layers = pd.read_csv(path)
            columns[row.stage] = layers.set_index("layer")["sqnr_db"]
    if not columns:
        return pd.DataFrame()
    frame = pd.DataFrame(columns)
    return frame[sorted(frame.columns, key=_stage_key)]


def to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table; NaN shows as 'missing', never as 0."""
    def cell(v) -> str:
        if isinstance(v, float):
            return MISSING if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    frame = frame.reset_index() if frame.index.name is not None else frame
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


@dataclass
class Report:
    table: pd.DataFrame
    wide: pd.DataFrame
    sqnr: pd.DataFrame
    files: dict[str, str] = field(default_factory=dict)


def build_report(client: MlflowClient, experiment: str, out_dir: str, parent_run_id: str | None = None) -> Report:
    """Read the runs, compute the tables, write CSV/Markdown/HTML and PNG plots into ``out_dir``."""
    from workbench.reporting.figures import accuracy_vs_bitwidth_figure, layer_sqnr_figure

    runs = load_runs(client, experiment, parent_run_id)
    table = comparison_table(runs)
    if table.empty:
        raise ReportError(f"experiment {experiment!r} has runs but none FINISHED: nothing to compare")
    wide = stage_by_setting(table)
    common = table["setting"].value_counts().index[0]
    sqnr = layer_sqnr(client, table, common)
    os.makedirs(out_dir, exist_ok=True)
    report = Report(table, wide, sqnr)
    for name, frame in (("comparison", table), ("sim_top1_by_stage", wide), ("layer_sqnr", sqnr)):
        if frame.empty:
            continue
        base = os.path.join(out_dir, name)
        frame.to_csv(base + ".csv", index=name != "comparison")
        with open(base + ".md", "w") as f:
            f.write(to_markdown(frame))
        frame.to_html(base + ".html", na_rep=MISSING)
        report.files.update({f"{name}.csv": base + ".csv", f"{name}.md": base + ".md", f"{name}.html": base + ".html"})
    figures = {"accuracy_vs_bitwidth.png": accuracy_vs_bitwidth_figure(table)}
    if not sqnr.empty:
        figures["layer_sqnr.png"] = layer_sqnr_figure(sqnr, common)
    for name, fig in figures.items():
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=110)
        report.files[name] = path
    if parent_run_id:
        for path in report.files.values():
            client.log_artifact(parent_run_id, path, "report")
    return report
