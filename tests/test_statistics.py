"""Wilson intervals and the exact McNemar test against values computed by hand."""

import numpy as np
import pytest

from workbench.evaluation.statistics import (
    BETTER,
    WITHIN_NOISE,
    WORSE,
    bootstrap_interval,
    mcnemar_exact,
    paired_bootstrap,
    wilson_interval,
)


def test_wilson_interval_matches_the_formula():
    # p = 0.9, n = 100, z = 1.959964: centre (p + z²/2n)/(1 + z²/n) = 0.885202, half-width 0.059569
    low, high = wilson_interval(90, 100)
    assert low == pytest.approx(0.825634, abs=1e-6) and high == pytest.approx(0.944771, abs=1e-6)
    # p = 0, n = 10: the interval starts at 0 and reaches 2·(z²/2n)/(1 + z²/n) = 0.277533
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.277533, abs=1e-6)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def _pairs(only_model, only_reference, both=50, neither=10):
    model = [True] * only_model + [False] * only_reference + [True] * both + [False] * neither
    reference = [False] * only_model + [True] * only_reference + [True] * both + [False] * neither
    return np.array(model), np.array(reference)


def test_exact_mcnemar_matches_the_binomial_tail():
    # b = 10, c = 3 discordant images: p = 2·P[Bin(13, ½) ≤ 3] = 2·(1 + 13 + 78 + 286)/8192
    test = mcnemar_exact(*_pairs(10, 3))
    assert test.p_value == pytest.approx(2 * 378 / 8192, rel=1e-12)
    assert test.delta == pytest.approx(7 / 73) and test.verdict() == WITHIN_NOISE
    # b = 9, c = 1: p = 2·(1 + 10)/1024 = 0.0215 < 0.05
    test = mcnemar_exact(*_pairs(9, 1))
    assert test.p_value == pytest.approx(22 / 1024, rel=1e-12) and test.verdict() == BETTER
    assert mcnemar_exact(*_pairs(1, 9)).verdict() == WORSE
    # no discordant image: no evidence at all
    same = mcnemar_exact(*_pairs(0, 0))
    assert same.p_value == pytest.approx(1.0) and same.verdict() == WITHIN_NOISE


def test_a_paired_test_needs_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        mcnemar_exact(np.ones(5, bool), np.ones(6, bool))


def test_the_bootstrap_interval_covers_the_true_mean_at_about_the_stated_rate():
    """Seeded: 200 samples of 40 skewed scores (exponential, mean 2); the 95 % BCa interval holds 2 about 95 % of the time."""
    rng = np.random.default_rng(0)
    covered = [
        low <= 2.0 <= high for low, high in (bootstrap_interval(rng.exponential(2.0, 40), seed=k, resamples=999) for k in range(200))
    ]
    assert 0.89 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_a_metric_of_summed_statistics_gets_its_interval_too():
    """mIoU-like: a ratio of summed per-sample counts, not a mean of per-sample ratios."""
    rng = np.random.default_rng(1)
    inter = rng.integers(50, 100, 300)
    stats = np.stack([inter, inter + rng.integers(0, 50, 300)], axis=1)
    ratio = lambda m: m[..., 0] / m[..., 1]  # noqa: E731
    low, high = bootstrap_interval(stats, ratio)
    assert low < stats[:, 0].sum() / stats[:, 1].sum() < high and high - low < 0.05


def test_the_paired_bootstrap_calls_equal_sets_within_noise_and_a_clearly_better_one_better():
    rng = np.random.default_rng(2)
    errors = rng.exponential(1.0, 500)
    same = paired_bootstrap(errors, errors.copy(), higher_is_better=False)
    assert (same.delta, same.p_value, same.verdict()) == (0.0, 1.0, WITHIN_NOISE)
    noisy = paired_bootstrap(errors + rng.normal(0, 0.01, 500), errors, higher_is_better=False)  # a wash
    assert noisy.verdict() == WITHIN_NOISE
    better = paired_bootstrap(errors * 0.7, errors, higher_is_better=False)  # 30 % lower error on every sample
    assert better.verdict() == BETTER and better.high < 0 and better.p_value < 0.001
    assert paired_bootstrap(errors * 1.3, errors, higher_is_better=False).verdict() == WORSE
