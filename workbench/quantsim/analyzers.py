"""Encoding analyzers: statistics collection kept apart from the grid they produce.

An analyzer observes batches (``update``) and then yields an :class:`Encoding`
(``compute_encoding``). Inputs are arranged as ``(C, N)``: one row per channel.
Schemes follow AIMET 2.42's analyzers (docs/techniques.md, section 1):
``tf`` (running min/max), ``tf_enhanced`` (512-bin histogram, lowest-error grid
search) and ``percentile`` (histogram clipped at the p-th percentile).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from workbench.options import QuantScheme
from workbench.quantsim.encodings import F32, Encoding, encoding_from_range, final_step, min_scale, num_steps
from workbench.quantsim.fused import histogram_ops

NUM_BINS = 512
PERCENTILE_BINS = 2048  # AIMET 2.42's percentile analyzer: 2048 bins, no growth limit
GROWTH_LIMIT = 1.5  # later batches may widen the histogram by 1.5 first-ranges per side
CLIP_PENALTY = 3.0
# tf_enhanced candidate grids (AIMET 2.42):
SYMMETRIC_DELTA_STEPS = 100  # symmetric deltas Δmax·i/100, i = 1 … 101
ASYMMETRIC_DELTA_STEPS = 16  # asymmetric deltas Δmax·i/16, i = 1 … 17
MAX_OFFSET_CANDIDATES = 21  # asymmetric offsets: min(steps + 2, 21) − 1 spread over [−steps, 0], plus the observed one
COST_CHUNK_ELEMENTS = 4_000_000  # bounds the (channels, candidates, bins) work array of the cost


def _rows(x, channels: int) -> tf.Tensor:
    return tf.reshape(tf.cast(x, tf.float32), (channels, -1))


def _all_finite(rows: tf.Tensor) -> tf.Tensor:
    """True when every value is finite: NaN and ±inf make the sum non-finite (a finite-overflowing sum
    only sends the batch down the slower, masked path, which is exact too)."""
    return tf.math.is_finite(tf.reduce_sum(rows))


def _row_min_max(rows: tf.Tensor, all_finite: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-row min and max of the finite values (+inf / −inf for a row without any)."""

    def plain():
        return tf.reduce_min(rows, axis=1), tf.reduce_max(rows, axis=1)

    def masked():
        finite = tf.math.is_finite(rows)
        return tf.reduce_min(tf.where(finite, rows, np.inf), axis=1), tf.reduce_max(tf.where(finite, rows, -np.inf), axis=1)

    return tf.cond(all_finite, plain, masked)


def _positive(width: tf.Tensor) -> tf.Tensor:
    return tf.where(width > 0, width, tf.ones_like(width))


def _state(value: np.ndarray | float, shape: tuple[int, ...], dtype=tf.float32) -> tf.Variable:
    return tf.Variable(tf.fill(shape, tf.constant(value, dtype)), trainable=False)


class MinMaxObserver:
    """Running min and max per channel of the finite values, kept in TensorFlow variables.

    ``update`` runs where the tensor lives (also inside a traced function): two reductions
    per batch, nothing goes to the host until :meth:`range`.
    """

    def __init__(self, channels: int = 1):
        self.channels = channels
        self.lo = _state(np.inf, (channels,))
        self.hi = _state(-np.inf, (channels,))
        self.batches = _state(0, (), tf.int64)

    @tf.autograph.experimental.do_not_convert
    def update(self, x) -> None:
        rows = _rows(x, self.channels)
        fused = histogram_ops()
        lo, hi = _row_min_max(rows, _all_finite(rows)) if fused is None else fused[0](rows)  # the same values, one pass
        self.lo.assign(tf.minimum(self.lo, lo))
        self.hi.assign(tf.maximum(self.hi, hi))
        self.batches.assign_add(1)

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        if int(self.batches.numpy()) == 0:
            raise RuntimeError("no statistics collected: run a forward pass before computing encodings")
        lo, hi = self.lo.numpy(), self.hi.numpy()
        # channels that saw no finite value at all fall back to [0, 0]
        return np.where(np.isfinite(lo), lo, 0).astype(F32), np.where(np.isfinite(hi), hi, 0).astype(F32)


def _bin_counts(rows: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor, all_finite: tf.Tensor, num_bins: int) -> tf.Tensor:
    """Counts ``(C, bins)`` of one batch: bin = floor((x − lo)·bins/(hi − lo)) clipped to the end bins; NaN dropped."""
    channels = rows.shape[0]
    size = channels * num_bins
    pos = (rows - lo[:, None]) * np.float32(num_bins) / (hi - lo)[:, None]
    base = (tf.range(channels, dtype=tf.int32) * num_bins)[:, None]

    def plain():
        # positions are ≥ 0 after the clip, so the cast's truncation is the floor
        idx = tf.cast(tf.clip_by_value(pos, 0.0, num_bins - 1.0), tf.int32) + base
        return tf.math.bincount(tf.reshape(idx, [-1]), minlength=size, maxlength=size, dtype=tf.float64)

    def masked():
        # ±inf positions clip to the end bins; NaN goes to an extra bin that is dropped
        nan = tf.math.is_nan(pos)
        idx = tf.cast(tf.clip_by_value(tf.where(nan, 0.0, pos), 0.0, num_bins - 1.0), tf.int32) + base
        idx = tf.where(nan, size, idx)
        return tf.math.bincount(tf.reshape(idx, [-1]), minlength=size + 1, maxlength=size + 1, dtype=tf.float64)[:size]

    return tf.reshape(tf.cond(all_finite, plain, masked), (channels, num_bins))


def _rebin(counts: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor, new_lo: tf.Tensor, new_hi: tf.Tensor, num_bins: int) -> tf.Tensor:
    """Move old counts into the wider bins; a source bin spans at most two new bins (split by overlap, rounded)."""
    channels = counts.shape[0]
    j = tf.range(num_bins, dtype=tf.float32)[None, :]
    # before the first batch the range is empty: widths of 1 keep the (then unused) result finite
    src_w = _positive((hi - lo) / np.float32(num_bins))[:, None]
    dst_w = _positive((new_hi - new_lo) / np.float32(num_bins))[:, None]
    src_start = lo[:, None] + src_w * j
    dst_idx = tf.clip_by_value(tf.floor((src_start - new_lo[:, None]) / dst_w), 0.0, num_bins - 1.0)
    dst_end = new_lo[:, None] + dst_w * (dst_idx + 1.0)
    frac = tf.cast((dst_end - src_start) / src_w, tf.float64)
    first = tf.minimum(tf.math.rint(frac * counts), counts)
    base = (tf.range(channels, dtype=tf.int32) * num_bins)[:, None]
    first_bin = tf.cast(dst_idx, tf.int32) + base
    second_bin = tf.minimum(tf.cast(dst_idx, tf.int32) + 1, num_bins - 1) + base
    moved = tf.math.unsorted_segment_sum(
        tf.concat([tf.reshape(first, [-1]), tf.reshape(counts - first, [-1])], 0),
        tf.concat([tf.reshape(first_bin, [-1]), tf.reshape(second_bin, [-1])], 0),
        channels * num_bins,
    )
    return tf.reshape(moved, (channels, num_bins))


@functools.cache
def _histogram_step(channels: int, num_bins: int, growth_limit: float | None, fused: bool):
    """One traced update for every histogram of this layout: (batch, state) → new state.

    A pure function with an input signature, so a calibration graph with many quantizers traces it
    once per layout (not once per quantizer) and calls it from each. ``fused``: the batch's range and
    counts from the fused kernels (``quantsim.fused``: two passes over it), else from TensorFlow ops
    (the same values).
    """
    ops = histogram_ops() if fused else None
    vec = tf.TensorSpec((channels,), tf.float32)
    signature = [tf.TensorSpec((channels, None), tf.float32), tf.TensorSpec((channels, num_bins), tf.float64), *[vec] * 6]
    signature.append(tf.TensorSpec((), tf.bool))

    @tf.function(input_signature=signature, autograph=False)
    def step(rows, counts, lo, hi, limit_lo, limit_hi, seen_min, seen_max, first):
        if ops is None:
            all_finite = _all_finite(rows)
            b_lo, b_hi = _row_min_max(rows, all_finite)
        else:
            b_lo, b_hi = ops[0](rows)
        seen_min, seen_max = tf.minimum(seen_min, b_lo), tf.maximum(seen_max, b_hi)
        any_finite = tf.math.is_finite(b_lo)
        b_lo = tf.where(any_finite, b_lo, 0.0)
        b_hi = tf.where(any_finite, b_hi, 0.0)
        # no branch on the batch count: the first batch's range and the grown one are a few ops on
        # (C,) vectors and re-binning is cheap, so both are computed and selected
        same = tf.equal(b_lo, b_hi)
        first_lo = tf.where(same, b_lo - 0.5, b_lo)
        first_hi = tf.where(same, b_hi + 0.5, b_hi)
        if growth_limit is None:
            first_limit_lo, first_limit_hi = limit_lo, limit_hi
        else:
            r0 = first_hi - first_lo
            first_limit_lo = first_lo - np.float32(growth_limit) * r0
            first_limit_hi = first_hi + np.float32(growth_limit) * r0
        grown_lo = tf.maximum(tf.minimum(lo, b_lo), limit_lo)
        grown_hi = tf.minimum(tf.maximum(hi, b_hi), limit_hi)
        grown = tf.not_equal(grown_lo, lo) | tf.not_equal(grown_hi, hi)
        kept = tf.where(grown[:, None], _rebin(counts, lo, hi, grown_lo, grown_hi, num_bins), counts)
        counts = tf.where(first, tf.zeros_like(counts), kept)
        lo = tf.where(first, first_lo, grown_lo)
        hi = tf.where(first, first_hi, grown_hi)
        counts = counts + (_bin_counts(rows, lo, hi, all_finite, num_bins) if ops is None else ops[1](rows, lo, hi, num_bins=num_bins))
        limit_lo = tf.where(first, first_limit_lo, limit_lo)
        limit_hi = tf.where(first, first_limit_hi, limit_hi)
        return counts, lo, hi, limit_lo, limit_hi, seen_min, seen_max

    return step


class HistogramObserver:
    """A fixed-bin histogram per channel, computed in TensorFlow, whose range grows within a limit.

    The first batch fixes the range to its finite [min, max] ([v − 0.5, v + 0.5] when constant;
    that widening is for binning only); later batches may widen it up to
    [min₀ − 1.5·r₀, max₀ + 1.5·r₀] (no limit when ``growth_limit`` is None), the old counts being
    re-binned; values beyond the limit and ±inf land in the end bins, NaN nowhere. The observed
    range (running min/max of the finite data) is tracked apart from the bin edges. Bin index:
    floor((x − lo)·bins/(hi − lo)), float32. Counts are float64 (exact to 2^53).
    """

    def __init__(self, channels: int = 1, num_bins: int = NUM_BINS, growth_limit: float | None = GROWTH_LIMIT):
        self.channels = channels
        self.num_bins = num_bins
        self.growth_limit = growth_limit
        c = (channels,)
        self.counts = _state(0.0, (channels, num_bins), tf.float64)
        self.lo = _state(0.0, c)  # histogram range per channel
        self.hi = _state(0.0, c)
        self.limit_lo = _state(-np.inf, c)  # how far the range may grow
        self.limit_hi = _state(np.inf, c)
        self.seen_min = _state(np.inf, c)  # observed range of the finite data
        self.seen_max = _state(-np.inf, c)
        self.batches = _state(0, (), tf.int64)
        self._state = (self.counts, self.lo, self.hi, self.limit_lo, self.limit_hi, self.seen_min, self.seen_max)

    @tf.autograph.experimental.do_not_convert
    def update(self, x) -> None:
        step = _histogram_step(self.channels, self.num_bins, self.growth_limit, histogram_ops() is not None)
        new = step(_rows(x, self.channels), *(v.value() for v in self._state), tf.equal(self.batches, 0))
        for variable, value in zip(self._state, new):
            variable.assign(value)
        self.batches.assign_add(1)

    def _check(self) -> None:
        if int(self.batches.numpy()) == 0:
            raise RuntimeError("no statistics collected: run a forward pass before computing encodings")

    def histogram(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Counts ``(C, bins)``, the histogram range's lower end and the bin width ``(C,)``."""
        self._check()
        lo, hi = self.lo.numpy(), self.hi.numpy()
        return self.counts.numpy(), lo, ((hi - lo) / F32(self.num_bins)).astype(F32)

    def edges(self) -> np.ndarray:
        """Bin edges ``(C, bins + 1)``: lo + k·w."""
        _, lo, width = self.histogram()
        return (lo[:, None] + np.arange(self.num_bins + 1, dtype=F32)[None, :] * width[:, None]).astype(F32)

    def observed_range(self) -> tuple[np.ndarray, np.ndarray]:
        """After one batch, the min and max of its finite data ([0, 0] for a channel that saw none); after more,
        the histogram's own range, capped by the growth limit (AIMET 2.42's, not the data's running min/max)."""
        self._check()
        if int(self.batches.numpy()) > 1:
            return self.lo.numpy().astype(F32), self.hi.numpy().astype(F32)
        lo, hi = self.seen_min.numpy(), self.seen_max.numpy()
        return np.where(np.isfinite(lo), lo, 0).astype(F32), np.where(np.isfinite(hi), hi, 0).astype(F32)


def _candidate_cost(counts: np.ndarray, mids: np.ndarray, scale: np.ndarray, offset: np.ndarray, steps: int) -> np.ndarray:
    """Σ_bins c·(m − Δ·(clamp(q) + o))², ×3 where clipped; shapes (C,K) for Δ and o."""
    m = mids[:, None, :]
    s = scale[:, :, None]
    o = offset[:, :, None]
    q = np.round(m / s - o)
    clipped = (q < 0) | (q > steps)
    err = (m - s * (np.clip(q, 0, steps) + o)) ** 2
    err = np.where(clipped, err * F32(CLIP_PENALTY), err).astype(F32)
    return np.einsum("cb,ckb->ck", counts, err.astype(np.float64))


def bin_centres(lo: np.ndarray, width: np.ndarray, num_bins: int) -> np.ndarray:
    """Centre of bin j: lo + w/2 + j·w in float32, with w = e₁ − e₀ the difference of the first two float32 edges
    (e₁ = lo + width rounded to float32: it can differ from ``width`` by an ulp, enough to change the winner)."""
    lo, width = np.asarray(lo, F32), np.asarray(width, F32)
    w = ((lo + width).astype(F32) - lo).astype(F32)
    return ((lo + w / F32(2))[:, None] + np.arange(num_bins, dtype=F32)[None, :] * w[:, None]).astype(F32)


def tf_enhanced_range(
    counts: np.ndarray,
    centres: np.ndarray,
    observed: tuple[np.ndarray, np.ndarray],
    bitwidth: int,
    symmetric: bool,
    strict: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The grid with the lowest histogram-weighted quantization error: its (min, min + steps·Δ).

    ``observed`` is the observer's observed range (:meth:`HistogramObserver.observed_range`); the histogram (counts per bin centre)
    only weighs the candidates. The result still goes through the final quantizer step.
    """
    steps = num_steps(bitwidth, bool(strict and symmetric))
    s_min = min_scale(steps)
    mn = np.minimum(np.asarray(observed[0], F32), F32(0)).astype(F32)
    mx = np.maximum(np.asarray(observed[1], F32), F32(0)).astype(F32)
    mx = np.maximum(mx, mn + F32(steps) * s_min).astype(F32)
    if symmetric:
        d_max = (F32(2) * np.maximum(mx, -mn) / F32(steps)).astype(F32)
        i = np.arange(1, SYMMETRIC_DELTA_STEPS + 2, dtype=F32)
        scale = np.maximum(d_max[:, None] * i[None, :] / F32(SYMMETRIC_DELTA_STEPS), s_min).astype(F32)
        offset = np.full(scale.shape, -math.ceil(steps / 2), dtype=F32)
    else:
        d_max = ((mx - mn) / F32(steps)).astype(F32)
        o_obs = np.round(mn / d_max).astype(F32)
        g_lo = (d_max * o_obs).astype(F32)
        g_hi = (g_lo + (d_max * F32(steps)).astype(F32)).astype(F32)  # two float32 products' sum, not Δ·(o + steps)
        i = np.arange(1, ASYMMETRIC_DELTA_STEPS + 2, dtype=F32)
        deltas = d_max[:, None] * i[None, :] / F32(ASYMMETRIC_DELTA_STEPS)  # (C, 17)
        n = min(steps + 2, MAX_OFFSET_CANDIDATES)
        base = np.round(-F32(steps) + np.arange(n - 1, dtype=F32) * F32(steps) / F32(n - 2)).astype(F32)
        offsets = np.concatenate([np.broadcast_to(base, (len(mn), n - 1)), o_obs[:, None]], axis=1)  # (C, n)
        d = np.repeat(deltas, offsets.shape[1], axis=1)  # delta-major order
        o = np.tile(offsets, (1, deltas.shape[1]))
        lo = np.maximum((d * o).astype(F32), g_lo[:, None])
        hi = np.minimum(((d * o).astype(F32) + (d * F32(steps)).astype(F32)).astype(F32), g_hi[:, None])
        scale = np.maximum((hi - lo) / F32(steps), s_min).astype(F32)
        offset = np.round(lo / scale).astype(F32)
    chunk = max(1, COST_CHUNK_ELEMENTS // (scale.shape[1] * counts.shape[1]))  # bound the (C, K, bins) work array
    cost = np.concatenate(
        [
            _candidate_cost(counts[i : i + chunk], centres[i : i + chunk], scale[i : i + chunk], offset[i : i + chunk], steps)
            for i in range(0, counts.shape[0], chunk)
        ]
    )
    best = np.argmin(cost, axis=1)  # first minimum: ties go to the earliest candidate
    rows = np.arange(len(best))
    s, o = scale[rows, best], offset[rows, best]
    grid_min = (s * o).astype(F32)
    return grid_min, (grid_min + F32(steps) * s).astype(F32)


def percentile_range(counts: np.ndarray, edges: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """AIMET 2.42's percentile bounds: the left edges of the bins where the cumulative count first
    reaches T·(100 − p)/100 (low side) and T·p/100 (high side); p = 100 keeps the whole histogram range."""
    if percentile >= 100.0:
        return edges[:, 0].copy(), edges[:, -1].copy()
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1:]
    rows = np.arange(counts.shape[0])
    # thresholds as (T·p)/100, multiply then divide: T·(p/100) can be an ulp above and miss a count landing on it
    i_max = np.argmax(cum >= total * percentile / 100.0, axis=1)
    i_min = np.argmax(cum >= total * (100.0 - percentile) / 100.0, axis=1)
    return edges[rows, i_min].astype(F32), edges[rows, i_max].astype(F32)


def _observer(kind: QuantScheme, channels: int) -> MinMaxObserver | HistogramObserver:
    if kind is QuantScheme.tf:
        return MinMaxObserver(channels)
    if kind is QuantScheme.tf_enhanced:
        return HistogramObserver(channels)
    return HistogramObserver(channels, PERCENTILE_BINS, growth_limit=None)


class EncodingAnalyzer:
    """Observer + range rule for one quantizer: ``update`` batches, then ``compute_encoding``.

    ``update`` is TensorFlow and may run inside a traced function; ``compute_encoding`` reads
    the statistics back once and searches/derives the grid on the host. ``also`` names other schemes whose
    statistics are collected in the same pass (each its own observer, fed the same batches, so each ends exactly
    as it would alone): :meth:`select` then switches to one of them without another pass.
    """

    def __init__(
        self,
        scheme: QuantScheme,
        bitwidth: int,
        symmetric: bool,
        channels: int = 1,
        strict: bool = False,
        unsigned: bool = False,
        percentile: float = 99.99,
        also: Iterable[QuantScheme] = (),
    ):
        self.scheme = QuantScheme(scheme).analyzer
        self.bitwidth, self.symmetric, self.strict, self.unsigned = bitwidth, symmetric, strict, unsigned
        self.percentile = percentile
        kinds = dict.fromkeys([self.scheme, *(QuantScheme(k).analyzer for k in also)])
        self.observers = {kind: _observer(kind, channels) for kind in kinds}

    @property
    def observer(self) -> MinMaxObserver | HistogramObserver:
        return self.observers[self.scheme]

    def select(self, scheme: QuantScheme, percentile: float) -> None:
        """Compute encodings by ``scheme`` (and ``percentile``) from here on: one whose statistics were collected."""
        kind = QuantScheme(scheme).analyzer
        if kind not in self.observers:
            collected = ", ".join(k.value for k in self.observers)
            raise ValueError(f"no {kind.value} statistics were collected (only {collected}): calibrate with it in `also`")
        self.scheme, self.percentile = kind, percentile

    def update(self, x) -> None:
        for observer in self.observers.values():
            observer.update(x)

    def compute_encoding(self, bitwidth: int | None = None) -> Encoding:
        """The encoding of the statistics gathered so far (at ``bitwidth`` when given: statistics do not
        depend on it, so one calibration serves every candidate bitwidth)."""
        if bitwidth is not None and bitwidth != self.bitwidth:
            saved, self.bitwidth = self.bitwidth, bitwidth
            try:
                return self.compute_encoding()
            finally:
                self.bitwidth = saved
        if isinstance(self.observer, MinMaxObserver):
            lo, hi = self.observer.range()
            return encoding_from_range(lo, hi, self.bitwidth, self.symmetric, self.strict, self.unsigned, final=False)
        elif self.scheme is QuantScheme.tf_enhanced:
            counts, lo_edge, width = self.observer.histogram()
            centres = bin_centres(lo_edge, width, self.observer.num_bins)
            lo, hi = tf_enhanced_range(counts, centres, self.observer.observed_range(), self.bitwidth, self.symmetric, self.strict)
            # the winner goes through the final quantizer step only
            return final_step(lo, hi, self.bitwidth, self.symmetric, self.strict)
        else:
            counts, _, _ = self.observer.histogram()
            lo, hi = percentile_range(counts, self.observer.edges(), self.percentile)
        return encoding_from_range(lo, hi, self.bitwidth, self.symmetric, self.strict, self.unsigned)


def compute_tensor_encoding(
    x: np.ndarray,
    scheme: QuantScheme,
    bitwidth: int,
    symmetric: bool,
    channel_axis: int | None = None,
    strict: bool = False,
    unsigned: bool = False,
    percentile: float = 99.99,
) -> Encoding:
    """One-shot encoding of a whole tensor (e.g. a kernel), per channel if ``channel_axis`` is set."""
    x = np.asarray(x, dtype=F32)
    if channel_axis is None:
        rows, channels = x.reshape(1, -1), 1
    else:
        rows = np.moveaxis(x, channel_axis, 0)
        channels = rows.shape[0]
        rows = rows.reshape(channels, -1)
    analyzer = EncodingAnalyzer(scheme, bitwidth, symmetric, channels, strict, unsigned, percentile)
    analyzer.update(rows)
    return analyzer.compute_encoding()
