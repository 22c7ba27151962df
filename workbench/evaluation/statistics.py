"""How sure is an accuracy, and is one model really better than another on the same images?

- Wilson score interval for a top-1 accuracy (statsmodels ``proportion_confint``): unlike the normal
  approximation it stays inside [0, 1] and is honest near 0 and 1.
- Exact McNemar test for two models evaluated on the same images (statsmodels ``mcnemar``): only the
  discordant images count, b = only the first right, c = only the second right, and
  p = min(1, 2·P[Binomial(b + c, 1/2) ≤ min(b, c)]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
