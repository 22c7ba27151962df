"""Encodings: hand-computed grids for each scheme and symmetry, and their edge cases."""

import numpy as np
import pytest

from workbench.quantsim.analyzers import (
    HistogramObserver,
    compute_tensor_encoding,
    percentile_range,
    tf_enhanced_range,
)
from workbench.quantsim.encodings import (
    FLOAT32_EPS,
    Encoding,
    encoding_from_range,
    min_scale,
    num_steps,
    quantize_dequantize,
)

F32 = np.float32


def test_asymmetric_grid_float32_rounding():
    # −40/(80/255) is −127.49999 in float32, so the offset is −127, not −128
    enc = encoding_from_range(-40.0, 40.0, 8, symmetric=False)
    assert enc.scale[0] == F32(80) / F32(255)
    assert enc.offset[0] == -127
    assert enc.min[0] == pytest.approx(-127 * 80 / 255, rel=1e-6)
    assert enc.max[0] == pytest.approx(128 * 80 / 255, rel=1e-6)


def test_symmetric_grid_hand_computed():
    enc = encoding_from_range(-1.0, 2.0, 8, symmetric=True)
    # P = 127, N = 128: Δ = max(2/127, 1/128)
    assert enc.scale[0] == F32(2) / F32(127)
    assert enc.offset[0] == -128
    assert enc.max[0] == pytest.approx(2.0, rel=1e-6)


def test_two_bit_symmetric_uses_p_plus_one():
    enc = encoding_from_range(-1.0, 1.0, 2, symmetric=True)
    # steps = 3, P = 1, N = 2: positive side uses b/(P + 1)
    assert enc.steps == 3
    assert enc.scale[0] == F32(0.5)
    assert enc.offset[0] == -2


def test_strict_symmetric_grid():
    enc = encoding_from_range(-1.0, 2.0, 8, symmetric=True, strict=True)
    assert enc.steps == 254
    assert enc.offset[0] == -127
    assert enc.scale[0] == F32(2) / F32(127)
    assert enc.min[0] == pytest.approx(-2.0, rel=1e-6) and enc.max[0] == pytest.approx(2.0, rel=1e-6)


def test_unsigned_symmetric_uses_whole_grid():
    enc = encoding_from_range(0.0, 5.0, 8, symmetric=True, unsigned=True)
    assert enc.offset[0] == 0
    assert enc.scale[0] == F32(5) / F32(255)
    # without the option the same data wastes the negative half
    assert encoding_from_range(0.0, 5.0, 8, symmetric=True).offset[0] == -128


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bw", [4, 8])
def test_zero_is_exactly_representable(rng, symmetric, bw):
    for _ in range(50):
        lo, hi = -rng.uniform(0, 10), rng.uniform(0, 10)
        enc = encoding_from_range(lo, hi, bw, symmetric)
        assert quantize_dequantize(np.zeros(3, F32), enc)[0] == 0.0


@pytest.mark.parametrize("symmetric", [False, True])
def test_all_zero_gives_tiny_range_not_unit(symmetric):
    enc = compute_tensor_encoding(np.zeros(100, F32), "tf", 8, symmetric)
    assert enc.scale[0] == FLOAT32_EPS == min_scale(255)
    assert enc.max[0] - enc.min[0] == pytest.approx(255 * float(FLOAT32_EPS), rel=1e-5)
    # histogram schemes see [−0.5, 0.5] with all mass at 0: still a narrow, finite grid
    for scheme in ("tf_enhanced", "percentile"):
        enc = compute_tensor_encoding(np.zeros(100, F32), scheme, 8, symmetric)
        assert np.all(np.isfinite([enc.min[0], enc.max[0]])) and enc.max[0] - enc.min[0] < 1.0
        assert quantize_dequantize(np.zeros(1, F32), enc)[0] == 0.0


def test_constant_tensor():
    enc = compute_tensor_encoding(np.full(100, 3.0, F32), "tf", 8, False)
    assert enc.min[0] == 0.0 and enc.max[0] == pytest.approx(3.0, rel=1e-6)
    # a histogram of a constant spans [v − 0.5, v + 0.5]
    obs = HistogramObserver()
    obs.update(np.full(100, 3.0, F32))
    _, edges = obs.histogram()
    assert edges[0, 0] == 2.5 and edges[0, -1] == 3.5


def test_non_finite_values():
    x = np.array([1.0, 2.0, np.inf, -np.inf, np.nan, -0.5], F32)
    enc = compute_tensor_encoding(x, "tf", 8, False)
    step = float(enc.scale[0])
    assert enc.min[0] == pytest.approx(-0.5, abs=step) and enc.max[0] == pytest.approx(2.0, abs=step)
    obs = HistogramObserver()
    obs.update(x)
    counts, edges = obs.histogram()
    assert counts.sum() == 5  # NaN ignored, ±inf counted in the end bins
    assert counts[0, 0] == 2 and counts[0, -1] == 2
    for scheme in ("tf_enhanced", "percentile"):
        e = compute_tensor_encoding(x, scheme, 8, True)
        assert np.isfinite(e.scale).all() and np.isfinite(e.min).all()
    # an infinite range is clamped to float32's largest finite value
    enc = encoding_from_range(-np.inf, np.inf, 8, False)
    assert np.isfinite(enc.scale).all()


def test_quantize_dequantize_grid_formula(rng):
    enc = encoding_from_range(-1.3, 2.1, 8, False)
    x = rng.uniform(-3, 4, 1000).astype(F32)
    q = np.clip(np.round(x / enc.scale[0]) - enc.offset[0], 0, 255)
    np.testing.assert_array_equal(quantize_dequantize(x, enc), ((q + enc.offset[0]) * enc.scale[0]).astype(F32))
    out = quantize_dequantize(x, enc)
    assert out.min() >= enc.min[0] - 1e-6 and out.max() <= enc.max[0] + 1e-6
    assert len(np.unique(out)) <= 256


def test_stochastic_rounding_is_unbiased(rng):
    enc = encoding_from_range(-1.0, 1.0, 4, False)
    x = np.full(200_000, 0.3 * enc.scale[0] + enc.scale[0], F32)
    nearest = quantize_dequantize(x, enc)
    stochastic = quantize_dequantize(x, enc, stochastic=True, rng=rng)
    assert abs(nearest.mean() - x.mean()) > 0.25 * enc.scale[0]
    assert abs(stochastic.mean() - x.mean()) < 0.01 * enc.scale[0]


def _mse(x, enc):
    return float(np.mean((quantize_dequantize(x, enc) - x) ** 2))


def test_tf_enhanced_beats_min_max_on_outliers(rng):
    x = rng.standard_normal(100_000).astype(F32)
    x[:10] = 50.0
    for symmetric in (False, True):
        tf_enc = compute_tensor_encoding(x, "tf", 4, symmetric)
        enh = compute_tensor_encoding(x, "tf_enhanced", 4, symmetric)
        assert enh.max[0] < 0.5 * tf_enc.max[0]
        assert _mse(x, enh) < 0.5 * _mse(x, tf_enc)


def test_tf_enhanced_keeps_range_without_outliers(rng):
    x = rng.uniform(-1, 1, 50_000).astype(F32)
    enc = compute_tensor_encoding(x, "tf_enhanced", 8, False)
    assert enc.min[0] == pytest.approx(-1, abs=0.02) and enc.max[0] == pytest.approx(1, abs=0.02)


def test_tf_enhanced_candidate_ties_go_to_first():
    # all mass on a bin whose midpoint is exactly 0: every candidate costs 0, the first one wins
    counts = np.array([[0.0, 10.0, 0.0]])
    edges = np.array([[-1.5, -0.5, 0.5, 1.5]], F32)
    lo, hi = tf_enhanced_range(counts, edges, 8, True)
    first_delta = F32(2) * F32(1.5) / F32(255) * F32(1) / F32(100)
    assert hi[0] == pytest.approx(127 * first_delta, rel=1e-6)
    assert lo[0] == pytest.approx(-128 * first_delta, rel=1e-6)


def test_percentile_clips_tails(rng):
    x = rng.uniform(-1, 1, 100_000).astype(F32)
    x[:5] = [100, -100, 80, -90, 70]
    enc = compute_tensor_encoding(x, "percentile", 8, False, percentile=99.9)
    assert enc.max[0] < 5 and enc.min[0] > -5
    obs = HistogramObserver()
    obs.update(x)
    counts, edges = obs.histogram()
    lo, hi = percentile_range(counts, edges, 100.0)
    assert lo[0] == edges[0, 0] and hi[0] == edges[0, -1]


def test_histogram_growth_is_limited_and_counts_kept(rng):
    obs = HistogramObserver()
    obs.update(rng.uniform(0, 1, 1000).astype(F32))  # r0 = ~1
    obs.update(np.array([0.5, 100.0, -100.0], F32))
    counts, edges = obs.histogram()
    assert counts.sum() == 1003
    assert edges[0, -1] == pytest.approx(obs.limit_hi[0]) and edges[0, -1] < 2.6
    assert edges[0, 0] == pytest.approx(obs.limit_lo[0]) and edges[0, 0] > -1.6
    assert counts[0, 0] == 1 and counts[0, -1] == 1


def test_per_channel_encoding_and_per_channel_qdq(rng):
    w = rng.standard_normal((3, 3, 4, 8)).astype(F32) * np.geomspace(0.01, 10, 8).astype(F32)
    per_tensor = compute_tensor_encoding(w, "tf", 8, True)
    per_channel = compute_tensor_encoding(w, "tf", 8, True, channel_axis=-1)
    assert per_channel.num_channels == 8 and per_tensor.num_channels == 1
    err_t = np.mean((quantize_dequantize(w, per_tensor) - w) ** 2, axis=(0, 1, 2))
    err_c = np.mean((quantize_dequantize(w, per_channel, channel_axis=-1) - w) ** 2, axis=(0, 1, 2))
    assert err_c[0] < 1e-3 * err_t[0]  # the small-range channel gains most


def test_json_dicts_round_trip():
    for strict in (False, True):
        enc = encoding_from_range(np.array([-1.0, -2.0]), np.array([1.0, 3.0]), 8, True, strict=strict)
        back = Encoding.from_dicts(enc.to_dicts())
        assert back.steps == enc.steps == num_steps(8, strict)
        np.testing.assert_array_equal(back.scale, enc.scale)
        np.testing.assert_array_equal(back.offset, enc.offset)
        assert enc.to_dicts()[0]["is_symmetric"] == "True"
