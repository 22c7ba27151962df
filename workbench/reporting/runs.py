"""Stage runs read back from MLflow, each with the complete identity of its setting.

A run's setting is every configuration value that could change its result: its logged params less
bookkeeping (paths, tracking, pipeline, the stage name) and less the options of techniques the stage
does not run (``cle.*`` means nothing to ``baseline``). Of those, the keys whose values differ among the
compared runs name the rows, so runs of two models, two schemes or two calibration sizes are never
merged. Runs that are not compared (not FINISHED, or superseded by a newer run of the same identity)
are returned with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient

from workbench import keys, registry

# params that say where and how a run was recorded, not what it computed
BOOKKEEPING = ("paths.", "tracking.", "pipeline.", "stage.", "export_dir")
FOLLOWS_SEED = ".seed"  # quant.seed, adaround.seed: the run's seed, interpolated (conf/config.yaml); ``seed`` names it


def technique_groups() -> tuple[str, ...]:
    """Every stage's option groups (``cle.``, ``bc.``, ...): a key in one applies only to the stages that read it."""
    return tuple(f"{group}." for group in registry.option_groups())


def stage_groups(stage: str) -> tuple[str, ...]:
    """The option groups that change a ``stage`` run's result (the registry's ``options``; every group for a
    stage this process does not know)."""
    known = registry.stages().get(stage)
    return technique_groups() if known is None else tuple(f"{group}." for group in known.groups)


# the parts of a setting shown first, compactly (W4A8 pc)
BITWIDTH_KEYS = ("quant.param_bw", "quant.output_bw", "quant.per_channel")
PARAM = "param:"
METRICS = [
    keys.FP32_TOP1,
    *keys.ci_keys(keys.FP32_TOP1),
    keys.SIM_TOP1,
    *keys.ci_keys(keys.SIM_TOP1),
    keys.EVAL_SAMPLES,
    keys.TRANSFORMED_TOP1,
    keys.TFLITE_TOP1,
    *keys.ci_keys(keys.TFLITE_TOP1),
    keys.MEAN_SQNR_DB,
    keys.AUTOQUANT_DELTA,  # an AutoQuant run's own paired test against the deployable baseline, on its held-out images
    keys.AUTOQUANT_P_VALUE,
]


def headline_metrics(metric: str) -> tuple[str, ...]:
    """A task's headline keys of each model, with their intervals (``sim/miou``, ``sim/miou_ci_low``, ...)."""
    return tuple(k for model in ("fp32", "sim", "tflite") for m in (keys.metric_key(model, metric),) for k in (m, *keys.ci_keys(m)))


class ReportError(ValueError):
    """Nothing to report on: the message says why in plain words."""


def stage_key(stage: str) -> int:
    order = registry.stage_names()
    return order.index(stage) if stage in order else len(order)


def applies(stage: str, params: dict[str, str], key: str) -> bool:
    """Whether param ``key`` can change the result of a ``stage`` run."""
    if key.startswith(BOOKKEEPING) or key.endswith(FOLLOWS_SEED):
        return False
    if not key.startswith(technique_groups()):
        return True
    groups = stage_groups(stage)
    if stage == "qat" and params.get("qat.bias_correction") == "True":
        groups = (*groups, "bc.")
    return key.startswith(groups)


def _search(client: MlflowClient, experiment_id: str, query: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def command_of(stage: str, overrides: str) -> str:
    """The command line that reruns one stage run alone (a sweep job's overrides are its own values)."""
    args = overrides.split()
    if not any(a.startswith("+stage=") for a in args):  # a pipeline's child
        args.insert(0, f"+stage={stage}")
    return " ".join(["python -m workbench", *args])


def simulated_setting(tags: dict[str, str]) -> dict[str, str]:
    """The quant settings a run simulated, as param values, from its setting tags (``app.record_simulated``)."""
    param_scheme, _, output_scheme = tags.get(keys.TAG_SCHEME, "").partition("/")
    ran = {
        "quant.param_bw": tags.get(keys.TAG_PARAM_BW),
        "quant.output_bw": tags.get(keys.TAG_OUTPUT_BW),
        "quant.per_channel": tags.get(keys.TAG_PER_CHANNEL),
        "quant.param_scheme": param_scheme or None,
        "quant.output_scheme": output_scheme or None,
    }
    return {k: v for k, v in ran.items() if v is not None}


def load_runs(client: MlflowClient, experiment: str, parent_run_id: str | None = None) -> pd.DataFrame:
    """One row per stage run: ids, status, stage, tags, compared metrics (NaN if absent), applicable params."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"experiment {experiment!r} does not exist in this tracking store")
    query = f"tags.`{keys.TAG_PARENT}` = '{parent_run_id}'" if parent_run_id else ""
    rows = []
    for run in _search(client, exp.experiment_id, query):
        tags, params = run.data.tags, run.data.params
        stage = tags.get(keys.TAG_STAGE)
        if stage is None:
            continue  # a sweep's or pipeline's parent run: it holds no comparison of its own
        row = {
            "run_id": run.info.run_id,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "stage": stage,
            "deployable": tags.get(keys.TAG_DEPLOYABLE, "true" if stage != "baseline" else "unknown"),
            "eval_digest": tags.get(keys.TAG_EVAL_DIGEST),
            "coverage": tags.get(keys.TAG_COVERAGE, "full"),
            "autoquant_verdict": tags.get(keys.TAG_AUTOQUANT_VERDICT),
            "command": command_of(stage, tags.get(keys.TAG_OVERRIDES, "")),
        }
        metric = tags.get(keys.TAG_TASK_METRIC, keys.CLASSIFICATION_METRIC)
        row.update({"metric": metric, "task_spec": tags.get(keys.TAG_TASK_SPEC)})
        row.update({m: run.data.metrics.get(m, math.nan) for m in (*METRICS, *headline_metrics(metric))})
        row.update({PARAM + k: v for k, v in params.items() if applies(stage, params, k)})
        if keys.TAG_REQUESTED in tags:  # the stage simulated another setting than its params ask for: group it by what ran
            row.update({PARAM + k: v for k, v in simulated_setting(tags).items() if PARAM + k in row})
        rows.append(row)
    if not rows:
        where = f"under parent run {parent_run_id}" if parent_run_id else f"in experiment {experiment!r}"
        raise ReportError(f"no stage runs {where}: nothing to report")
    return pd.DataFrame(rows)


def _shared_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith(PARAM) and not c[len(PARAM) :].startswith(technique_groups())]


def borrowed_baselines(runs: pd.DataFrame, pool: pd.DataFrame) -> pd.DataFrame:
    """The deployable FINISHED baselines of ``pool`` (the whole experiment) for the settings of ``runs`` that have
    none, one per setting (the newest, on the same validation images): a sweep of technique stages alone is still
    compared with its reference. Marked ``borrowed``."""
    shared = _shared_columns(runs)
    key = lambda frame: frame.reindex(columns=shared).fillna("∅").astype(str).apply(tuple, axis=1)  # noqa: E731
    have = set(key(runs[(runs["stage"] == "baseline") & (runs["deployable"] == "true") & (runs["status"] == "FINISHED")]))
    wanted = set(key(runs[runs["status"] == "FINISHED"])) - have
    candidates = pool[
        (pool["stage"] == "baseline")
        & (pool["deployable"] == "true")
        & (pool["status"] == "FINISHED")
        & ~pool["run_id"].isin(runs["run_id"])
        & pool["eval_digest"].isin(runs["eval_digest"].dropna())
    ]
    if candidates.empty or not wanted:
        return candidates.iloc[0:0]
    candidates = candidates[key(candidates).isin(wanted)].sort_values("start_time")
    borrowed = candidates[~key(candidates).duplicated(keep="last")].reindex(columns=runs.columns)
    return borrowed.assign(borrowed=True)


def same_setting(runs: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """The runs whose shared configuration (all but technique options and bookkeeping) equals ``run_id``'s."""
    values = runs[_shared_columns(runs)].fillna("∅").astype(str)
    mine = values[runs["run_id"] == run_id]
    if mine.empty:
        raise ReportError(f"run {run_id} is not a stage run of this experiment")
    return runs[(values == mine.iloc[0]).all(axis=1)]


def _label(row: pd.Series, columns: list[str]) -> str:
    parts = [f"{c[len(PARAM) :]}={row[c]}" for c in columns if isinstance(row[c], str)]
    return ", ".join(parts) if parts else "-"


def _bitwidths(row: pd.Series) -> str:
    p, o, pc = (row.get(PARAM + k) for k in BITWIDTH_KEYS)
    if not isinstance(p, str):
        return "?"
    return f"W{p}A{o}" + (" pc" if pc == "True" else "")


def _varying(done: pd.DataFrame, columns: list[str], missing_counts: bool) -> list[str]:
    """Columns whose value differs among the runs (a param some runs lack differs, if ``missing_counts``)."""
    return [c for c in columns if done[c].dropna().nunique() > 1 or (missing_counts and done[c].isna().any() and done[c].notna().any())]


def _shown(done: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns worth naming in a label: a group's keys that follow from its varying ``name`` are left out."""
    shown = []
    for c in columns:
        group = c[len(PARAM) :].split(".")[0]
        name = f"{PARAM}{group}.name"
        if c != name and name in columns and (done.fillna("∅").groupby(name)[c].nunique() <= 1).all():
            continue  # e.g. model.width, implied by model.name
        shown.append(c)
    return shown


@dataclass
class ComparedRuns:
    runs: pd.DataFrame  # the compared runs, with ``setting`` and ``variant`` labels
    excluded: pd.DataFrame  # run_id, stage, status, reason
    setting_keys: list[str]  # the shared configuration keys that differ among the compared runs
    variant_keys: list[str]  # the technique options that differ among runs of one stage


def identify(runs: pd.DataFrame) -> ComparedRuns:
    """Label each FINISHED run by the keys that differ; keep the latest run per identity, list the rest."""
    excluded = runs[runs["status"] != "FINISHED"].assign(reason=lambda f: "status " + f["status"])
    done = runs[runs["status"] == "FINISHED"].sort_values("start_time")
    params = [c for c in done.columns if c.startswith(PARAM)]
    technique = _varying(done, [c for c in params if c[len(PARAM) :].startswith(technique_groups())], False)
    shared = _varying(done, [c for c in params if not c[len(PARAM) :].startswith(technique_groups())], True)
    named = [c for c in _shown(done, shared) if c[len(PARAM) :] not in BITWIDTH_KEYS]
    labelled = done.assign(
        setting=done.apply(lambda r: " · ".join(x for x in (_bitwidths(r), _label(r, named)) if x != "-"), axis=1),
        variant=done.apply(lambda r: _label(r, technique), axis=1),
        identity=done[["stage", *shared, *technique]].fillna("∅").astype(str).agg("|".join, axis=1),
    )
    latest = labelled.groupby("identity", sort=False).tail(1)
    newer = latest.set_index("identity")["run_id"]
    superseded = labelled[~labelled["run_id"].isin(latest["run_id"])]
    superseded = superseded.assign(reason=[f"superseded by the newer run {newer[i]}" for i in superseded["identity"]])
    columns = ["run_id", "stage", "status", "reason"]
    excluded = pd.concat([excluded[columns], superseded[columns]], ignore_index=True)
    keys_of = lambda cs: [c[len(PARAM) :] for c in cs]  # noqa: E731
    return ComparedRuns(latest.drop(columns="identity").reset_index(drop=True), excluded, keys_of(shared), keys_of(technique))
