"""What a report compares runs by: the task's headline metric (top-1 for a classifier), how it is shown and tested.

A run records its task (``task``, ``task.metric`` and the task's own values in ``task.spec``); a report compares the
runs of one task. Top-1 keeps Wilson intervals and the exact McNemar test on ``predictions.csv``; any other metric
gets bootstrap intervals and a paired bootstrap of the difference on the per-sample statistics of ``samples.csv``,
with the same verdicts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from workbench import keys
from workbench.evaluation.statistics import mcnemar_exact, paired_bootstrap
from workbench.evaluation.tasks import Classification, Task


def task_spec(task: Task) -> str:
    """The task as JSON Hydra's ``instantiate`` rebuilds (a run's ``task.spec`` tag); a function given as an object
    is named by its module and name."""
    kind = type(task)
    values = {f.name: getattr(task, f.name) for f in fields(task)}
    values = {k: (f"{v.__module__}:{v.__qualname__}" if callable(v) else v) for k, v in values.items()}
    return json.dumps({"_target_": f"{kind.__module__}.{kind.__qualname__}", **values})


def task_of(spec: str | None) -> Task:
    """The task of a ``task.spec`` tag (classification for a run recorded before tasks were)."""
    if not spec:
        return Classification()
    from hydra.utils import instantiate

    return instantiate(json.loads(spec))


@dataclass(frozen=True)
class Headline:
    task: Task = field(default_factory=Classification)

    @property
    def metric(self) -> str:
        return self.task.metric

    def key(self, model: str) -> str:
        return keys.metric_key(model, self.metric)

    @property
    def fp32(self) -> str:
        return self.key("fp32")

    @property
    def sim(self) -> str:
        return self.key("sim")

    @property
    def tflite(self) -> str:
        return self.key("tflite")

    @property
    def label(self) -> str:
        return "top-1" if self.metric == keys.CLASSIFICATION_METRIC else self.metric

    @property
    def interval(self) -> str:
        return "Wilson" if self.task.binary else "BCa bootstrap"

    @property
    def test(self) -> str:
        return "exact McNemar test" if self.task.binary else "paired bootstrap"

    @property
    def test_name(self) -> str:
        """The paired test, briefly (beside a p-value)."""
        return "exact McNemar" if self.task.binary else "paired bootstrap"

    @property
    def artifact(self) -> str:
        return keys.ARTIFACT_PREDICTIONS if self.task.binary else keys.ARTIFACT_SAMPLES

    def text(self, value: float) -> str:
        """A value as shown: in % (no sign) for a fraction, else 4 significant digits."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "missing"
        return f"{100 * value:.1f}" if self.task.percent else f"{value:.4g}"

    def unit(self) -> str:
        return " %" if self.task.percent else ""

    def delta(self, value: float) -> str:
        """A difference as shown: points for a fraction, else the metric's own unit."""
        return f"{100 * value:+.1f} pt" if self.task.percent else f"{value:+.4g}"

    def percent_columns(self) -> list[str]:
        """The comparison's columns shown in % (none for a metric that is not a fraction)."""
        if not self.task.percent:
            return []
        fp32_ci = list(keys.ci_keys(self.fp32))
        return [self.fp32, *fp32_ci, self.sim, "ci_low", "ci_high", "drop_vs_fp32", "delta_vs_baseline", self.tflite]

    def worse(self, value: float, other: float) -> bool:
        return value < other if self.task.higher_is_better else value > other

    def best_index(self, values: pd.Series):
        return values.idxmax() if self.task.higher_is_better else values.idxmin()

    def drop(self, fp32: float, sim: float) -> float:
        """How much the sim loses against FP32 (positive: worse), in the metric's direction."""
        return fp32 - sim if self.task.higher_is_better else sim - fp32

    def per_sample(self, frame: pd.DataFrame | None, model: str) -> np.ndarray | None:
        """``model``'s per-sample results in a run's per-sample table: right/wrong for top-1, else the statistics."""
        if frame is None:
            return None
        if self.task.binary:
            return (frame[model] == frame["label"]).to_numpy() if model in frame and "label" in frame else None
        columns = [c for c in frame.columns if c.split(":")[0] == model]
        return frame[columns].to_numpy(float) if columns else None

    def compare(self, model: np.ndarray, reference: np.ndarray):
        """The paired test of ``model`` against ``reference`` on the same samples (``delta``, ``p_value``, ``verdict()``)."""
        if self.task.binary:
            return mcnemar_exact(model, reference)
        return paired_bootstrap(model, reference, self.task.value, self.task.higher_is_better)


def headline_of(runs: pd.DataFrame) -> tuple[Headline, pd.DataFrame]:
    """The headline of the runs' most common task, and the runs of other tasks (not comparable with it)."""
    if "metric" not in runs or runs.empty:
        return Headline(), runs.iloc[0:0]
    metric = runs["metric"].value_counts().index[0]
    specs = runs.loc[runs["metric"] == metric, "task_spec"].dropna()
    return Headline(task_of(specs.iloc[-1] if len(specs) else None)), runs[runs["metric"] != metric]
