"""How sure is an accuracy, and is one model really better than another on the same images?

- Wilson score interval for a top-1 accuracy (statsmodels ``proportion_confint``): unlike the normal
  approximation it stays inside [0, 1] and is honest near 0 and 1.
- Exact McNemar test for two models evaluated on the same images (statsmodels ``mcnemar``): only the
  discordant images count, b = only the first right, c = only the second right, and
  p = min(1, 2·P[Binomial(b + c, 1/2) ≤ min(b, c)]).
- For a metric that is not a per-sample right/wrong (mean IoU, MAE, RMSE, SQNR): a seeded bootstrap over the
  samples (scipy ``bootstrap``, BCa), and for two models on the same samples a paired bootstrap of the
  difference of their metrics, resampling the same sample indices for both. A metric is a function of the
  per-sample statistics' means (a mean of scores, a ratio of summed intersections and unions, the root of a
  mean square), so one resampling scheme serves them all.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
BETTER, WORSE, WITHIN_NOISE = "better", "worse", "within noise"


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``correct / total``."""
    if total <= 0:
        raise ValueError("an interval needs at least one sample")
    low, high = proportion_confint(int(correct), int(total), alpha=1.0 - confidence, method="wilson")
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """A model against a reference on the same images."""

    only_model: int  # images the model gets right and the reference wrong
    only_reference: int  # images the reference gets right and the model wrong
    total: int
    p_value: float

    @property
    def delta(self) -> float:
        """Accuracy of the model minus accuracy of the reference."""
        return (self.only_model - self.only_reference) / self.total

    def verdict(self, significance: float = SIGNIFICANCE) -> str:
        if self.p_value < significance and self.only_model != self.only_reference:
            return BETTER if self.only_model > self.only_reference else WORSE
        return WITHIN_NOISE


def mcnemar_exact(model_correct: np.ndarray, reference_correct: np.ndarray) -> PairedComparison:
    """Exact McNemar test of two per-image correctness vectors over the same images."""
    a = np.asarray(model_correct, bool)
    r = np.asarray(reference_correct, bool)
    if a.shape != r.shape:
        raise ValueError(f"a paired test needs the same images: {a.shape[0]} vs {r.shape[0]} results")
    if a.size == 0:
        raise ValueError("a paired test needs at least one image")
    only_model, only_reference = int(np.sum(a & ~r)), int(np.sum(~a & r))
    both, neither = int(np.sum(a & r)), int(np.sum(~a & ~r))
    p = float(mcnemar([[both, only_model], [only_reference, neither]], exact=True).pvalue)
    return PairedComparison(only_model, only_reference, int(a.size), p)


RESAMPLES = 2000
# a metric: the means of per-sample statistics (..., K) to the metric's values (...)
Metric = Callable[[np.ndarray], np.ndarray]


def _mean_metric(stats: np.ndarray, metric: Metric) -> Callable:
    """The vectorized bootstrap statistic of sample indices ``i`` (..., n): the metric of the resampled means."""
    return lambda i, axis=-1: metric(stats[i].mean(axis=-2))


def _as_stats(stats: np.ndarray) -> np.ndarray:
    stats = np.asarray(stats, np.float64)
    stats = stats[:, None] if stats.ndim == 1 else stats.reshape(len(stats), -1)
    if len(stats) < 2:
        raise ValueError("an interval needs at least two samples")
    return stats


def bootstrap_interval(
    stats: np.ndarray, metric: Metric = lambda m: m[..., 0], confidence: float = CONFIDENCE, seed: int = 0, resamples: int = RESAMPLES
) -> tuple[float, float]:
    """The BCa bootstrap interval of ``metric`` over per-sample ``stats`` (N,) or (N, K), resampling samples (seeded)."""
    stats = _as_stats(stats)
    value = float(metric(stats.mean(axis=0)))
    if np.all(stats == stats[0]):  # every sample alike: no spread to resample
        return value, value
    for method in ("BCa", "percentile"):  # BCa is undefined where the metric does not move (e.g. mIoU 1 everywhere)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's degenerate-data warning: answered by the fallback
            result = bootstrap(
                (np.arange(len(stats)),),
                _mean_metric(stats, metric),
                vectorized=True,
                n_resamples=resamples,
                confidence_level=confidence,
                method=method,
                batch=200,
                random_state=np.random.default_rng(seed),
            )
        low, high = (float(v) for v in result.confidence_interval)
        if np.isfinite(low) and np.isfinite(high):
            return low, high
    return value, value


@dataclass(frozen=True)
class PairedDifference:
    """A model's metric against a reference's on the same samples (paired bootstrap of the difference)."""

    delta: float  # metric(model) − metric(reference)
    low: float
    high: float
    p_value: float  # two-sided: twice the smaller bootstrap share of differences at or beyond zero
    higher_is_better: bool = True

    def verdict(self, significance: float = SIGNIFICANCE) -> str:
        if self.p_value >= significance or self.delta == 0:
            return WITHIN_NOISE
        return BETTER if (self.delta > 0) == self.higher_is_better else WORSE


def paired_bootstrap(
    model_stats: np.ndarray,
    reference_stats: np.ndarray,
    metric: Metric = lambda m: m[..., 0],
    higher_is_better: bool = True,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> PairedDifference:
    """Paired bootstrap of metric(model) − metric(reference): both resampled at the same sample indices."""
    a, r = _as_stats(model_stats), _as_stats(reference_stats)
    if a.shape != r.shape:
        raise ValueError(f"a paired test needs the same samples: {a.shape[0]} vs {r.shape[0]} results")
    delta = float(metric(a.mean(axis=0)) - metric(r.mean(axis=0)))
    if np.array_equal(a, r):
        return PairedDifference(0.0, 0.0, 0.0, 1.0, higher_is_better)
    of_a, of_r = _mean_metric(a, metric), _mean_metric(r, metric)
    result = bootstrap(
        (np.arange(len(a)),),
        lambda i, axis=-1: of_a(i) - of_r(i),
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        batch=200,
        random_state=np.random.default_rng(seed),
    )
    spread = np.asarray(result.bootstrap_distribution)
    share = min(float(np.mean(spread <= 0)), float(np.mean(spread >= 0)))
    p = min(1.0, max(2.0 * share, 1.0 / (resamples + 1)))  # no resample beyond zero: p is below 1/(resamples + 1)
    low, high = result.confidence_interval
    return PairedDifference(delta, float(low), float(high), p, higher_is_better)
