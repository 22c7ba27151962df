"""Comparison reports: MLflow runs read back into pandas, tables and plots written to disk.

``python -m workbench.report --experiment NAME [--parent RUN_ID]`` writes, under
``outputs/reports/<experiment>/``: the comparison (one row per stage, setting and technique variant: the
task's headline metric, ``sim/top1`` for a classifier, with its 95 % interval, the delta against the
deployable baseline at the same setting, the paired test's p-value on the same samples (exact McNemar for
top-1, a paired bootstrap otherwise; ``reporting.headline``) and the verdict), the best technique per
setting, the runs left out and why, the per-layer SQNR across stages, and two plots.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from workbench import keys, registry
from workbench.evaluation.statistics import BETTER, WORSE
from workbench.paths import write_atomically
from workbench.reporting.headline import Headline, headline_of
from workbench.reporting.html import render_html
from workbench.reporting.runs import PARAM, ComparedRuns, ReportError, borrowed_baselines, identify, load_runs, same_setting, stage_key
from workbench.reporting.tables import MISSING, readable, to_markdown

__all__ = ["ReportError", "Report", "build_report", "comparison_table", "load_runs", "to_markdown"]
REFERENCE = "reference"
NO_BASELINE = "no deployable baseline"
NOT_PAIRED = "not paired"
# an AutoQuant row's verdict when no baseline run shares its images: its own exact McNemar test on the held-out images
OWN_TEST = "AutoQuant's own test against the deployable baseline at the configured setting, on its held-out images"


def _per_sample(client: MlflowClient, run_ids, tmp: str, headline: Headline) -> dict[str, pd.DataFrame]:
    """Each run's per-sample results (``predictions.csv`` or ``samples.csv``; runs logged before they were kept are
    simply absent)."""
    out = {}
    for run_id in run_ids:
        try:
            out[run_id] = pd.read_csv(client.download_artifacts(run_id, headline.artifact, tmp))
        except Exception:  # no such artifact
            continue
    return out


def _paired(row: pd.Series, ref: pd.Series, samples: dict[str, pd.DataFrame], headline: Headline) -> dict:
    """delta, p-value and verdict of ``row`` against ``ref``: the paired test on the same samples, else unpaired."""
    a, r = headline.per_sample(samples.get(row.run_id), "sim"), headline.per_sample(samples.get(ref.run_id), "sim")
    same_images = row.eval_digest is not None and row.eval_digest == ref.eval_digest
    if a is None or r is None or not same_images or a.shape != r.shape:
        return {"delta_vs_baseline": row[headline.sim] - ref[headline.sim], "p_value": math.nan, "verdict": NOT_PAIRED}
    test = headline.compare(a, r)
    return {"delta_vs_baseline": test.delta, "p_value": test.p_value, "verdict": test.verdict()}


def _per_channel_notes(table: pd.DataFrame, samples: dict[str, pd.DataFrame], headline: Headline) -> pd.Series:
    """'per-channel worse than per-tensor' where a per-channel row loses to its per-tensor twin (paired test)."""
    notes = pd.Series("", index=table.index)
    for i, row in table[table["per_channel"] == True].iterrows():  # noqa: E712
        twin_setting = row.setting.replace(" pc", "", 1)
        twins = table[(table["stage"] == row.stage) & (table["variant"] == row.variant) & (table["setting"] == twin_setting)]
        if twins.empty or not headline.worse(row[headline.sim], twins.iloc[0][headline.sim]):
            continue
        test = _paired(row, twins.iloc[0], samples, headline)
        if test["verdict"] == WORSE:  # a difference the paired test confirms, not noise
            notes[i] = f"per-channel worse than per-tensor ({headline.delta(test['delta_vs_baseline'])}, p={test['p_value']:.3g})"
    return notes


def comparison_table(compared: ComparedRuns, samples: dict[str, pd.DataFrame], headline: Headline | None = None) -> pd.DataFrame:
    """One row per (stage, setting, variant): the headline metric (top-1 by default), its interval, delta vs the
    deployable baseline, p, verdict."""
    headline = headline or Headline()
    runs = compared.runs.copy()
    runs["param_bw"] = pd.to_numeric(runs.get(PARAM + "quant.param_bw"), errors="coerce")
    runs["output_bw"] = pd.to_numeric(runs.get(PARAM + "quant.output_bw"), errors="coerce")
    runs["per_channel"] = runs.get(PARAM + "quant.per_channel") == "True"
    refs = runs[(runs["stage"] == "baseline") & (runs["deployable"] == "true")].set_index("setting")
    refs = refs[~refs.index.duplicated(keep="last")]  # one reference per setting (the latest run)
    rows = []
    for _, row in runs.iterrows():
        out = {"delta_vs_baseline": math.nan, "p_value": math.nan, "verdict": NO_BASELINE}
        if row.setting in refs.index:
            ref = refs.loc[row.setting]
            out = (
                {"delta_vs_baseline": 0.0, "p_value": math.nan, "verdict": REFERENCE}
                if ref.run_id == row.run_id
                else _paired(row, ref, samples, headline)
            )
        if out["verdict"] in (NO_BASELINE, NOT_PAIRED) and isinstance(row.get("autoquant_verdict"), str):
            out = {"delta_vs_baseline": row[keys.AUTOQUANT_DELTA], "p_value": row[keys.AUTOQUANT_P_VALUE], "verdict": row.autoquant_verdict}
            out["own_test"] = True  # its held-out images are not a baseline run's: the test it made there itself
        rows.append(out)
    table = pd.concat([runs.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    table["stage"] = np.where((table["stage"] == "baseline") & (table["deployable"] != "true"), "baseline (not deployable)", table["stage"])
    partial = table["coverage"].astype(str).str.startswith("partial") if "coverage" in table else False
    table["stage"] = np.where(partial, table["stage"] + PARTIAL, table["stage"])
    ci_low, ci_high = keys.ci_keys(headline.sim)
    table = table.rename(columns={ci_low: "ci_low", ci_high: "ci_high"})
    table["drop_vs_fp32"] = headline.drop(table[headline.fp32], table[headline.sim])
    table = table.sort_values(
        ["setting", "stage", "variant"], key=lambda c: c.map(lambda v: stage_key(v.split(" ")[0])) if c.name == "stage" else c
    )
    table = table.reset_index(drop=True)
    table["notes"] = _per_channel_notes(table, samples, headline)
    if "borrowed" in table:
        outside = table["borrowed"].fillna(False).astype(bool)
        table.loc[outside, "notes"] = "the reference from an earlier run of the experiment (not in this sweep)"
    if "own_test" in table:
        own = table["own_test"].fillna(False).astype(bool)
        table.loc[own, "notes"] = OWN_TEST
    columns = [
        "stage",
        "setting",
        "variant",
        headline.fp32,
        *keys.ci_keys(headline.fp32),
        headline.sim,
        "ci_low",
        "ci_high",
        "drop_vs_fp32",
        "delta_vs_baseline",
        "p_value",
        "verdict",
        headline.tflite,
        "notes",
        keys.EVAL_SAMPLES,
        "param_bw",
        "output_bw",
        "per_channel",
        "run_id",
    ]
    return table[columns]


PARTIAL = " (partial sim)"  # the stage label of a run whose coverage tag says partial


def best_by_setting(table: pd.DataFrame, headline: Headline | None = None) -> pd.DataFrame:
    """Per setting, the technique with the best headline metric (the highest sim/top1) and whether it beats the
    deployable baseline."""
    headline = headline or Headline()
    rows = []
    for setting, group in table.groupby("setting", sort=False):
        # baselines are references and analyze/bn_fold are diagnostics (their sim is the baseline's or cle's)
        # a partial sim (part of the model left float, not by the user) is optimistic: never "the best"
        techniques = group[
            ~group["stage"].str.startswith("baseline")
            & ~group["stage"].isin(registry.with_role(registry.Role.DIAGNOSTIC))
            & ~group["stage"].str.endswith(PARTIAL)
        ]
        techniques = techniques.dropna(subset=[headline.sim])
        if techniques.empty:
            continue
        top = techniques.loc[headline.best_index(techniques[headline.sim])]
        name = top.stage if top.variant == "-" else f"{top.stage} ({top.variant})"
        if top.verdict == BETTER:
            answer = name
        elif top.verdict == WORSE or top.verdict.startswith("within"):
            answer = "none: no technique is better than the deployable baseline"
        else:
            answer = f"{name} (untested: {top.verdict})"
        rows.append(
            {
                "setting": setting,
                "best": answer,
                headline.sim: top[headline.sim],
                "ci_low": top.ci_low,
                "ci_high": top.ci_high,
                "delta_vs_baseline": top.delta_vs_baseline,
                "p_value": top.p_value,
                "verdict": top.verdict,
            }
        )
    return pd.DataFrame(rows)


def _cell(row: pd.Series, headline: Headline) -> str:
    if math.isnan(row[headline.sim]):
        return MISSING
    text = headline.text(row[headline.sim])
    if not math.isnan(row.ci_low):
        text += f" [{headline.text(row.ci_low)}, {headline.text(row.ci_high)}]"
    if row.verdict in (BETTER, WORSE):
        text += f" {row.verdict}"
    return text


def stage_by_setting(table: pd.DataFrame, headline: Headline | None = None) -> pd.DataFrame:
    """Stages (and variants) as rows, settings as columns: the headline metric (sim/top1 in %) with its interval and verdict."""
    headline = headline or Headline()
    frame = table.assign(
        row=[s if v == "-" else f"{s} ({v})" for s, v in zip(table["stage"], table["variant"])],
        cell=table.apply(_cell, axis=1, headline=headline),
    )
    wide = frame.pivot(index="row", columns="setting", values="cell").fillna("-")
    order = sorted(wide.index, key=lambda r: (stage_key(r.split(" ")[0]), r))
    wide = wide.loc[order, list(dict.fromkeys(frame["setting"]))]
    wide.index.name = "stage"
    return wide


def _row_name(stage: str, variant: str) -> str:
    return stage if variant == "-" else f"{stage} ({variant})"


def layer_sqnr(client: MlflowClient, table: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Per-layer output SQNR (dB) of each stage at one setting, from the runs' ``layers.csv``; layers in
    network order (each run lists its layers in that order; a layer only some runs have keeps its place)."""
    columns: dict[str, pd.Series] = {}
    order: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in table[table["setting"] == setting].itertuples():
            try:
                path = client.download_artifacts(row.run_id, keys.ARTIFACT_LAYERS, tmp)
            except Exception:  # a run without the artifact (failed early) is simply absent
                continue
            layers = pd.read_csv(path)
            _merge_order(order, list(layers["layer"]))
            columns[_row_name(row.stage, row.variant)] = layers.set_index("layer")["sqnr_db"]
    frame = pd.DataFrame(columns)
    return frame.reindex(order) if not frame.empty else frame


def _merge_order(order: list[str], layers: list[str]) -> None:
    """Add the layers ``order`` lacks, each right after its predecessor in ``layers`` (network order)."""
    previous = None
    for layer in layers:
        if layer not in order:
            order.insert(order.index(previous) + 1 if previous is not None else 0, layer)
        previous = layer


@dataclass
class Report:
    table: pd.DataFrame  # the comparison, numeric
    wide: pd.DataFrame  # stages × settings, text cells
    best: pd.DataFrame  # the best technique per setting
    excluded: pd.DataFrame  # runs left out, with the reason
    sqnr: pd.DataFrame
    compared: ComparedRuns | None = None
    files: dict[str, str] = field(default_factory=dict)
    headline: Headline = field(default_factory=Headline)
    autoquant: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # each AutoQuant run's decision path

    def markdown(self) -> str:
        """The whole report as Markdown: settings that differ, comparison, best technique, exclusions."""
        parts = []
        if self.compared is not None:
            differ = ", ".join(self.compared.setting_keys + self.compared.variant_keys) or "nothing (one setting)"
            parts.append(f"Settings that differ among the compared runs: {differ}.\n")
        h = self.headline
        unit = "%, " if h.task.percent else ""
        direction = "" if h.task.higher_is_better else ", lower is better"
        parts += [
            f"### {h.sim} by stage and setting ({unit}95 % {h.interval} interval{direction}, verdict vs the deployable baseline)\n",
            to_markdown(self.wide),
        ]
        if not self.best.empty:
            parts += [
                f"\n### Best technique per setting ({h.test} on the same samples, p < 0.05)\n",
                to_markdown(readable(self.best, h.percent_columns())),
            ]
        parts += ["\n### Comparison\n", to_markdown(readable(self.table, h.percent_columns()))]
        for caption, steps in self.autoquant:
            parts += ["\n### AutoQuant decision path\n", caption + "\n", to_markdown(steps)]
        if not self.excluded.empty:
            parts += ["\n### Runs left out\n", to_markdown(self.excluded)]
        return "\n".join(parts)


def _fp32_test(metrics: dict) -> str:
    p = metrics.get(keys.AUTOQUANT_P_VALUE_FP32)
    met = metrics.get(keys.AUTOQUANT_HELD_OUT_MET)
    judged = "" if met is None else f", {'within' if met else 'over'} the allowed drop"
    return "" if p is None else f" (exact McNemar against FP32 p = {p:.2g}{judged})"


def autoquant_paths(client: MlflowClient, runs: pd.DataFrame, tmp: str) -> list[tuple[str, pd.DataFrame]]:
    """Each compared AutoQuant run's decision path (``autoquant_steps.csv``: step, what it tried, its top-1 on the
    search images, kept or not) under a caption: the choice, why the search stopped, and the choice's held-out
    figure beside its search figure (the selection's optimism)."""
    from mlflow.exceptions import MlflowException

    found = []
    for run_id in runs.loc[runs["stage"] == "autoquant", "run_id"]:
        try:
            steps = pd.read_csv(client.download_artifacts(run_id, keys.ARTIFACT_AUTOQUANT_STEPS, tmp))
        except (MlflowException, OSError):  # a run that failed before its path was written
            continue
        run = client.get_run(run_id)
        m, t = run.data.metrics, run.data.tags
        steps["search_top1"] = [f"{100 * v:.1f}" for v in steps["search_top1"]]
        steps = steps.rename(columns={"search_top1": "search top-1 %", "param_bw": "W"})
        steps["kept"] = steps["kept"].map({True: "yes", False: ""})
        (sim_low, sim_high), (fp_low, fp_high) = keys.ci_keys(keys.SIM_TOP1), keys.ci_keys(keys.FP32_TOP1)
        caption = (
            f"run {run_id[:8]} chose {t.get(keys.TAG_AUTOQUANT_CHOICE)} ({t.get(keys.TAG_AUTOQUANT_STOPPED)}): held-out sim top-1 "
            f"{100 * m[keys.SIM_TOP1]:.1f} % [{100 * m[sim_low]:.1f}, {100 * m[sim_high]:.1f}] vs FP32 {100 * m[keys.FP32_TOP1]:.1f} % "
            f"[{100 * m[fp_low]:.1f}, {100 * m[fp_high]:.1f}] on the same {m[keys.EVAL_SAMPLES]:.0f} images"
            f"{_fp32_test(m)}, "
            f"{100 * m[keys.AUTOQUANT_SEARCH_TOP1]:.1f} % on the search images it was chosen on; against the deployable "
            f"baseline on the held-out images: {t.get(keys.TAG_AUTOQUANT_VERDICT)}"
        )
        found.append((caption, steps))
    return found


def build_report(
    client: MlflowClient,
    experiment: str,
    out_dir: str,
    parent_run_id: str | None = None,
    like_run: str | None = None,
    title: str | None = None,
) -> Report:
    """Read the runs, compare them, write CSV and Markdown tables, PNG plots, ``report.md`` (for pull
    requests) and ``report.html`` (one self-contained file) into ``out_dir``.

    ``parent_run_id``: only that sweep's or pipeline's runs (the report is logged to it); ``like_run``:
    only the runs at that run's setting (what a single ``+stage`` run is compared with).
    """
    import matplotlib.pyplot as plt

    from workbench.figures import accuracy_vs_bitwidth_figure, layer_sqnr_figure

    runs = load_runs(client, experiment, parent_run_id)
    headline, other_tasks = headline_of(runs)
    runs = runs[~runs["run_id"].isin(other_tasks["run_id"])]
    if parent_run_id:  # a sweep of technique stages alone: its settings' baselines from earlier runs of the experiment
        borrowed = borrowed_baselines(runs, load_runs(client, experiment))
        runs = pd.concat([runs.assign(borrowed=False), borrowed], ignore_index=True) if not borrowed.empty else runs
    compared = identify(same_setting(runs, like_run) if like_run else runs)
    if compared.runs.empty:
        raise ReportError(f"experiment {experiment!r} has runs but none FINISHED: nothing to compare")
    if not other_tasks.empty:  # one report compares one metric
        reason = [f"measured by {m}: this report compares {headline.metric}" for m in other_tasks["metric"]]
        left = other_tasks.assign(reason=reason)[["run_id", "stage", "status", "reason"]]
        compared.excluded = pd.concat([compared.excluded, left], ignore_index=True)
    with tempfile.TemporaryDirectory() as tmp:
        table = comparison_table(compared, _per_sample(client, compared.runs["run_id"], tmp, headline), headline)
    wide = stage_by_setting(table, headline)
    best = best_by_setting(table, headline)
    common = table["setting"].value_counts().index[0]
    sqnr = layer_sqnr(client, table, common)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = autoquant_paths(client, compared.runs, tmp)
    report = Report(table, wide, best, compared.excluded, sqnr, compared, headline=headline, autoquant=paths)
    frames = (
        ("comparison", table, False),
        ("sim_top1_by_stage", wide, True),
        ("best_by_setting", best, False),
        ("excluded", compared.excluded, False),
        ("layer_sqnr", sqnr, True),
    )
    for name, frame, index in frames:
        if frame.empty:
            continue
        base = os.path.join(out_dir, name)
        write_atomically(base + ".csv", frame.to_csv(index=index))
        write_atomically(base + ".md", to_markdown(frame if index else readable(frame, headline.percent_columns())))
        report.files.update({f"{name}.csv": base + ".csv", f"{name}.md": base + ".md"})
    write_atomically(os.path.join(out_dir, "report.md"), report.markdown())
    report.files["report.md"] = os.path.join(out_dir, "report.md")
    figures = {"accuracy_vs_bitwidth.png": accuracy_vs_bitwidth_figure(table, headline.sim, headline.fp32, headline.task.percent)}
    if not sqnr.empty:
        figures["layer_sqnr.png"] = layer_sqnr_figure(sqnr, common)
    pngs = {}
    for name, fig in figures.items():
        path = os.path.join(out_dir, name)
        png = io.BytesIO()
        fig.savefig(png, dpi=110, format="png")
        plt.close(fig)
        pngs[name] = png.getvalue()
        write_atomically(path, pngs[name])
        report.files[name] = path
    where = f"run {parent_run_id[:8]}" if parent_run_id else f"runs like {like_run[:8]}" if like_run else "all runs"
    html = render_html(report, title or f"workbench report: experiment {experiment}, {where}", pngs)
    report.files["report.html"] = os.path.join(out_dir, "report.html")
    write_atomically(report.files["report.html"], html)
    if parent_run_id:
        for path in report.files.values():
            client.log_artifact(parent_run_id, path, "report")
    return report
