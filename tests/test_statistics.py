"""Wilson intervals and the exact McNemar test against values computed by hand."""

import numpy as np
import pytest

from workbench.evaluation.statistics import BETTER, WITHIN_NOISE, WORSE, mcnemar_exact, wilson_interval


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
