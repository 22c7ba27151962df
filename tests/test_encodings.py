"""Encodings: hand-computed grids for each scheme and symmetry, and their edge cases."""

import numpy as np
import pytest

from workbench.quantsim.analyzers import (
    EncodingAnalyzer,
    HistogramObserver,
    bin_centres,
    compute_tensor_encoding,
    percentile_range,
    tf_enhanced_range,
)
from workbench.quantsim.encodings import (
    FLOAT32_EPS,
    Encoding,
    encoding_from_range,
    final_step,
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


def test_symmetric_final_step_recomputes_scale():
    # Δ = 1.1/127; grid [−128Δ, 127Δ]; the final step recomputes Δ' = (max − min)/255, one ulp above Δ
    delta = F32(1.1) / F32(127)
    recomputed = (F32(127) * delta - F32(-128) * delta) / F32(255)
    assert recomputed == np.nextafter(delta, F32(1))
    enc = encoding_from_range(-0.5, 1.1, 8, symmetric=True)
    assert enc.scale[0] == recomputed and enc.offset[0] == -128


def test_asymmetric_final_step_recomputes_scale():
    # Δ = 3.1/255, o = round(−2.2/Δ) = −181; grid [181·(−Δ), 74·Δ] gives Δ' one ulp above Δ
    lo, hi = F32(-2.2), F32(0.9)
    delta = (hi - lo) / F32(255)
    offset = np.round(lo / delta)
    assert offset == -181
    recomputed = (delta * F32(offset + 255) - delta * F32(offset)) / F32(255)
    assert recomputed == np.nextafter(delta, F32(1))
    enc = encoding_from_range(lo, hi, 8, symmetric=False)
    assert enc.scale[0] == recomputed and enc.offset[0] == np.round(delta * F32(offset) / recomputed) == -181


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


@pytest.mark.parametrize("scheme", ["tf", "tf_enhanced", "percentile"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_all_zero_gives_minimum_scale_around_zero(scheme, symmetric):
    # AIMET 2.42: scale = s_min (float32 eps), offset 0 or −128; never a range built from the histogram's ±0.5
    enc = compute_tensor_encoding(np.zeros(100, F32), scheme, 8, symmetric)
    if scheme == "percentile":  # p < 100 reads bin edges: the left edge of the bin holding 0 (−1/2048·… ≈ −0.0005)
        assert enc.max[0] - enc.min[0] < 2e-3 and quantize_dequantize(np.zeros(1, F32), enc)[0] == 0.0
        return
    if scheme == "tf_enhanced" and symmetric:
        # observed [0, 0] → max = 255·s_min, Δmax = 2·max/255; the histogram's mass sits at the centre w/2 ≈ 1e-3,
        # beyond every candidate, so the widest (Δmax·101/100) wins and goes through the final step
        s_min = min_scale(255)
        delta = F32(2) * (F32(0) + F32(255) * s_min) / F32(255) * F32(101) / F32(100)
        grid_min = F32(-128) * delta
        assert enc.scale[0] == ((grid_min + F32(255) * delta) - grid_min) / F32(255) and enc.offset[0] == -128
        return
    assert enc.scale[0] == FLOAT32_EPS == min_scale(255)
    assert enc.offset[0] == (-128 if symmetric else 0)


def test_constant_tensor_keeps_its_observed_range():
    for scheme in ("tf", "tf_enhanced"):
        enc = compute_tensor_encoding(np.full(100, 3.0, F32), scheme, 8, False)
        assert enc.min[0] == 0.0 and enc.max[0] == pytest.approx(3.0, rel=1e-6), scheme
    # the histogram of a constant spans [v − 0.5, v + 0.5] for binning only
    obs = HistogramObserver()
    obs.update(np.full(100, 3.0, F32))
    edges = obs.edges()
    assert edges[0, 0] == 2.5 and edges[0, -1] == 3.5
    assert obs.observed_range() == (F32(3.0), F32(3.0))


def test_non_finite_values():
    x = np.array([1.0, 2.0, np.inf, -np.inf, np.nan, -0.5], F32)
    enc = compute_tensor_encoding(x, "tf", 8, False)
    step = float(enc.scale[0])
    assert enc.min[0] == pytest.approx(-0.5, abs=step) and enc.max[0] == pytest.approx(2.0, abs=step)
    obs = HistogramObserver()
    obs.update(x)
    counts, _, _ = obs.histogram()
    assert counts.sum() == 5  # NaN ignored, ±inf counted in the end bins
    assert counts[0, 0] == 2 and counts[0, -1] == 2
    assert obs.observed_range() == (F32(-0.5), F32(2.0))
    for scheme in ("tf_enhanced", "percentile"):
        e = compute_tensor_encoding(x, scheme, 8, True)
        assert np.isfinite(e.scale).all() and np.isfinite(e.min).all()
    # an infinite range is clamped to a finite one
    for symmetric in (False, True):
        enc = encoding_from_range(-np.inf, np.inf, 8, symmetric)
        assert np.isfinite(enc.scale).all() and np.isfinite(enc.min).all() and np.isfinite(enc.max).all()


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


def test_bin_centres_use_the_difference_of_the_first_two_float32_edges():
    # w = e1 − e0 with e1 = lo + (hi − lo)/512 in float32: here an ulp away from (hi − lo)/512 itself
    lo, width = np.array([-1.3], F32), np.array([F32(2.9) / F32(512)], F32)
    w = (lo[0] + width[0]) - lo[0]
    assert w != width[0]  # the case the rule is about
    centres = bin_centres(lo, width, 512)
    j = np.arange(512, dtype=F32)
    np.testing.assert_array_equal(centres[0], (lo[0] + w / F32(2)) + j * w)
    edges = lo[0] + np.arange(513, dtype=F32) * width[0]
    assert np.any(centres[0] != (edges[:-1] + edges[1:]) / F32(2))  # not the mean of two edges


def test_asymmetric_tf_is_one_pass():
    # AIMET 2.42's asymmetric tf: Δ = (b − a)/steps, o = round(a/Δ), and that is the encoding; a second final step
    # (Δ recomputed from Δ·o and Δ·(o + steps)) moves Δ by an ulp on this range
    a, b = F32(-2.441678047180176), F32(2.7391390800476074)
    delta = F32(F32(b - a) / F32(255))
    offset = np.round(F32(a / delta))
    again = final_step(delta * offset, delta * (offset + F32(255)), 8, False)
    assert again.scale[0] != delta  # the case the rule is about
    x = np.array([a, b, F32(0.3)], F32)
    enc = compute_tensor_encoding(x, "tf", 8, False)
    assert enc.scale[0] == delta and enc.offset[0] == offset


def test_tf_enhanced_candidate_ties_go_to_first_and_use_observed_range():
    # all mass on a centre exactly at 0: every symmetric candidate costs 0, the first (Δmax/100) wins;
    # Δmax comes from the observed range (−1, 1.5), not from the histogram's range
    counts = np.array([[0.0, 10.0, 0.0]])
    centres = np.array([[-1.0, 0.0, 1.0]], F32)
    lo, hi = tf_enhanced_range(counts, centres, (np.array([-1.0], F32), np.array([1.5], F32)), 8, True)
    delta = F32(2) * F32(1.5) / F32(255) * F32(1) / F32(100)
    assert lo[0] == F32(-128) * delta
    assert hi[0] == lo[0] + F32(255) * delta  # min + steps·Δ, not Δ·(o + steps)


def test_tf_enhanced_winner_goes_through_final_step_only(rng):
    x = rng.standard_normal(20_000).astype(F32)
    x[:3] = [40.0, -30.0, 25.0]
    for symmetric in (False, True):
        analyzer = EncodingAnalyzer("tf_enhanced", 4, symmetric)
        analyzer.update(x)
        counts, lo_edge, width = analyzer.observer.histogram()
        lo, hi = tf_enhanced_range(counts, bin_centres(lo_edge, width, 512), analyzer.observer.observed_range(), 4, symmetric)
        enc = analyzer.compute_encoding()
        expected_scale = max((hi[0] - lo[0]) / F32(15), min_scale(15))
        assert enc.scale[0] == expected_scale
        assert enc.offset[0] == (-8 if symmetric else np.clip(np.round(lo[0] / expected_scale), -15, 0))


def test_tf_enhanced_observed_range_after_several_batches_is_the_histograms(rng):
    # one batch: the data's own min and max; a later batch beyond the growth limit: the histogram's range,
    # capped at max₀ + 1.5·r₀, not the data's 100 (AIMET 2.42)
    obs = HistogramObserver()
    first = rng.uniform(0, 1, 1000).astype(F32)
    obs.update(first)
    assert obs.observed_range()[0][0] == first.min() and obs.observed_range()[1][0] == first.max()
    obs.update(np.array([100.0], F32))
    r0 = first.max() - first.min()
    assert obs.observed_range()[1][0] == F32(first.max() + F32(1.5) * r0) < 2.6
    # a constant first batch: binned over [v − 0.5, v + 0.5] but observed as [v, v]; then real data: the histogram's
    # range again, grown from [1.5, 2.5] within its limit [0, 4]
    obs = HistogramObserver()
    obs.update(np.full(10, 2.0, F32))
    assert (obs.observed_range()[0][0], obs.observed_range()[1][0]) == (2.0, 2.0)
    obs.update(np.array([-1.0, 5.0], F32))
    assert (obs.observed_range()[0][0], obs.observed_range()[1][0]) == (0.0, 4.0)


def test_percentile_threshold_is_multiplied_then_divided():
    # T = 100,000 and p = 99.9: (T·p)/100 = 99900.0 exactly, T·(p/100) = 99900.00000000001; the cumulative count
    # lands on 99,900 in the first bin, so the high bound is that bin's left edge, 0, not the last bin's
    x = np.concatenate([np.zeros(99_900, F32), np.ones(100, F32)])
    assert 100_000 * (99.9 / 100) > 99_900.0 == 100_000 * 99.9 / 100
    analyzer = EncodingAnalyzer("percentile", 8, False, percentile=99.9)
    analyzer.update(x)
    lo, hi = percentile_range(analyzer.observer.histogram()[0], analyzer.observer.edges(), 99.9)
    assert lo[0] == 0.0 and hi[0] == 0.0


def test_percentile_uses_left_edge_of_first_bin_reaching_the_share():
    # values 0 … 99 over 2048 bins, p = 90: the high bound is the left edge of the bin holding 89 (the
    # cumulative count first reaches 90 there), the low bound the left edge of the bin holding 9
    x = np.arange(100, dtype=F32)
    analyzer = EncodingAnalyzer("percentile", 8, False, percentile=90.0)
    analyzer.update(x)
    width = F32(99) / F32(2048)
    hi_bin, lo_bin = int(np.floor(F32(89) * F32(2048) / F32(99))), int(np.floor(F32(9) * F32(2048) / F32(99)))
    edges = analyzer.observer.edges()
    lo, hi = percentile_range(analyzer.observer.histogram()[0], edges, 90.0)
    assert hi[0] == F32(0) + F32(hi_bin) * width and lo[0] == F32(lo_bin) * width
    # then the tf range adjustment (0 joins the range) and the final step
    enc, expected = analyzer.compute_encoding(), encoding_from_range(F32(0), hi[0], 8, False)
    assert enc.scale[0] == expected.scale[0] and enc.offset[0] == expected.offset[0] == 0
    # p = 100 keeps the whole histogram range
    lo, hi = percentile_range(analyzer.observer.histogram()[0], edges, 100.0)
    assert lo[0] == 0.0 and hi[0] == edges[0, -1]


def test_percentile_clips_tails(rng):
    x = rng.uniform(-1, 1, 100_000).astype(F32)
    x[:5] = [100, -100, 80, -90, 70]
    enc = compute_tensor_encoding(x, "percentile", 8, False, percentile=99.9)
    assert enc.max[0] < 5 and enc.min[0] > -5


def test_histogram_growth_is_limited_and_counts_kept(rng):
    obs = HistogramObserver()
    obs.update(rng.uniform(0, 1, 1000).astype(F32))  # r0 = ~1
    obs.update(np.array([0.5, 100.0, -100.0], F32))
    counts, _, _ = obs.histogram()
    edges = obs.edges()
    assert counts.sum() == 1003
    assert edges[0, -1] == pytest.approx(obs.limit_hi.numpy()[0]) and edges[0, -1] < 2.6
    assert edges[0, 0] == pytest.approx(obs.limit_lo.numpy()[0]) and edges[0, 0] > -1.6
    assert counts[0, 0] == 1 and counts[0, -1] == 1


def test_histogram_rebin_splits_a_straddling_bin_by_hand():
    # 4 bins over [0, 3] (width 0.75): 0 → bin 0, three 0.8s → bin 1, 3 → bin 3
    obs = HistogramObserver(num_bins=4)
    obs.update(np.array([0.0, 0.8, 0.8, 0.8, 3.0], F32))
    np.testing.assert_array_equal(obs.histogram()[0], [[1, 3, 0, 1]])
    # −1 widens the range to [−1, 3] (width 1): bin [0, 0.75) moves whole into [0, 1); bin [0.75, 1.5)
    # straddles 1: round(3·(1 − 0.75)/0.75) = 1 count stays in [0, 1), 2 move to [1, 2); [2.25, 3) → [2, 3)
    obs.update(np.array([-1.0], F32))
    np.testing.assert_array_equal(obs.histogram()[0], [[1, 2, 2, 1]])


def test_per_channel_histograms_equal_one_histogram_per_channel(rng):
    w = rng.standard_normal((3, 3, 4, 6)).astype(F32) * np.geomspace(0.01, 10, 6).astype(F32)
    w[..., 2] = 0.0  # a dead channel
    for scheme in ("tf_enhanced", "percentile"):
        for symmetric in (False, True):
            per_channel = compute_tensor_encoding(w, scheme, 4, symmetric, channel_axis=-1)
            for c in range(6):
                alone = compute_tensor_encoding(w[..., c], scheme, 4, symmetric)
                assert per_channel.scale[c] == alone.scale[0] and per_channel.offset[c] == alone.offset[0], (scheme, c)


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
