"""Encoding analyzers: statistics collection kept apart from the grid they produce.

An analyzer observes batches (``update``) and then yields an :class:`Encoding`
(``compute_encoding``). Inputs are arranged as ``(C, N)``: one row per channel.
Schemes follow AIMET 2.42's analyzers (docs/techniques.md, section 1):
``tf`` (running min/max), ``tf_enhanced`` (512-bin histogram, lowest-error grid
search) and ``percentile`` (histogram clipped at the p-th percentile).
"""

from __future__ import annotations

import math

import numpy as np

from workbench.options import QuantScheme
from workbench.quantsim.encodings import F32, Encoding, encoding_from_range, min_scale, num_steps

NUM_BINS = 512
GROWTH_LIMIT = 1.5  # later batches may widen the histogram by 1.5 first-ranges per side
EMPTY = np.empty(0, F32)  # observer state before the first batch (never mutated in place)
CLIP_PENALTY = 3.0
# tf_enhanced candidate grids (AIMET 2.42):
SYMMETRIC_DELTA_STEPS = 100  # symmetric deltas Δmax·i/100, i = 1 … 101
ASYMMETRIC_DELTA_STEPS = 16  # asymmetric deltas Δmax·i/16, i = 1 … 17
MAX_OFFSET_CANDIDATES = 21  # asymmetric offsets: min(steps + 2, 21) − 1 spread over [−steps, 0], plus the observed one
COST_CHUNK_ELEMENTS = 4_000_000  # bounds the (channels, candidates, bins) work array of the cost


def _as_rows(x: np.ndarray, channels: int) -> np.ndarray:
    return np.asarray(x, dtype=F32).reshape(channels, -1)


class MinMaxObserver:
    """Running min and max per channel; non-finite values are ignored."""

    def __init__(self, channels: int = 1):
        self.channels = channels
        self.lo = EMPTY  # running min / max per channel; empty until the first batch
        self.hi = EMPTY

    def update(self, x: np.ndarray) -> None:
        rows = _as_rows(x, self.channels)
        finite = np.isfinite(rows)
        lo = np.where(finite, rows, np.inf).min(axis=1).astype(F32)
        hi = np.where(finite, rows, -np.inf).max(axis=1).astype(F32)
        self.lo = lo if self.lo.size == 0 else np.minimum(self.lo, lo)
        self.hi = hi if self.hi.size == 0 else np.maximum(self.hi, hi)

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        if self.lo.size == 0:
            raise RuntimeError("no statistics collected: run a forward pass before computing encodings")
        # channels that saw no finite value at all fall back to [0, 0]
        lo = np.where(np.isfinite(self.lo), self.lo, 0).astype(F32)
        hi = np.where(np.isfinite(self.hi), self.hi, 0).astype(F32)
        return lo, hi


class HistogramObserver:
    """A fixed-bin histogram per channel whose range grows within a limit.

    The first batch fixes the range to its finite [min, max] ([v − 0.5, v + 0.5] when
    constant); later batches may widen it up to [min₀ − 1.5·r₀, max₀ + 1.5·r₀], the old
    counts being re-binned; values beyond the limit and ±inf land in the end bins.
    """

    def __init__(self, channels: int = 1, num_bins: int = NUM_BINS, growth_limit: float | None = GROWTH_LIMIT):
        self.channels = channels
        self.num_bins = num_bins
        self.growth_limit = growth_limit
        # all empty until the first batch
        self.counts = EMPTY  # (C, bins) float64 raw counts
        self.lo = EMPTY  # histogram range per channel
        self.hi = EMPTY
        self.limit_lo = EMPTY  # how far the range may grow
        self.limit_hi = EMPTY

    def _bin_index(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        # torch.histc-style: bin = (x − lo)·bins/(hi − lo), out-of-range and ±inf go to the end bins
        pos = (rows - lo[:, None]) * F32(self.num_bins) / (hi - lo)[:, None]
        pos = np.nan_to_num(pos, nan=0.0, posinf=self.num_bins, neginf=-1.0)
        return np.clip(np.floor(pos), 0, self.num_bins - 1).astype(np.int64)

    def _histogram(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        valid = ~np.isnan(rows)
        idx = self._bin_index(rows, lo, hi) + (np.arange(self.channels) * self.num_bins)[:, None]
        flat = np.bincount(idx[valid], minlength=self.channels * self.num_bins)
        return flat.reshape(self.channels, self.num_bins).astype(np.float64)

    def _rebin(self, new_lo: np.ndarray, new_hi: np.ndarray) -> np.ndarray:
        """Move old counts into the wider bins; a source bin spans at most two new bins."""
        nb = self.num_bins
        src_w = ((self.hi - self.lo) / F32(nb)).astype(F32)
        dst_w = ((new_hi - new_lo) / F32(nb)).astype(F32)
        src_start = self.lo[:, None] + src_w[:, None] * np.arange(nb, dtype=F32)[None, :]
        dst_idx = np.clip(np.floor((src_start - new_lo[:, None]) / dst_w[:, None]), 0, nb - 1).astype(np.int64)
        dst_end = new_lo[:, None] + dst_w[:, None] * (dst_idx + 1).astype(F32)
        frac = (dst_end - src_start) / src_w[:, None]
        first = np.minimum(np.round(frac * self.counts), self.counts)
        second = self.counts - first
        out = np.zeros_like(self.counts)
        rows = np.repeat(np.arange(self.channels), nb).reshape(self.channels, nb)
        np.add.at(out, (rows, dst_idx), first)
        np.add.at(out, (rows, np.minimum(dst_idx + 1, nb - 1)), second)
        return out

    def update(self, x: np.ndarray) -> None:
        rows = _as_rows(x, self.channels)
        finite = np.isfinite(rows)
        any_finite = finite.any(axis=1)
        b_lo = np.where(finite, rows, np.inf).min(axis=1).astype(F32)
        b_hi = np.where(finite, rows, -np.inf).max(axis=1).astype(F32)
        b_lo = np.where(any_finite, b_lo, 0).astype(F32)
        b_hi = np.where(any_finite, b_hi, 0).astype(F32)
        if self.counts.size == 0:
            same = b_lo == b_hi
            lo = np.where(same, b_lo - F32(0.5), b_lo).astype(F32)
            hi = np.where(same, b_hi + F32(0.5), b_hi).astype(F32)
            self.lo, self.hi = lo, hi
            if self.growth_limit is None:
                self.limit_lo = np.full_like(lo, -np.inf)
                self.limit_hi = np.full_like(hi, np.inf)
            else:
                r0 = hi - lo
                self.limit_lo = (lo - F32(self.growth_limit) * r0).astype(F32)
                self.limit_hi = (hi + F32(self.growth_limit) * r0).astype(F32)
            self.counts = self._histogram(rows, lo, hi)
            return
        new_lo = np.maximum(np.minimum(self.lo, b_lo), self.limit_lo).astype(F32)
        new_hi = np.minimum(np.maximum(self.hi, b_hi), self.limit_hi).astype(F32)
        if np.any(new_lo != self.lo) or np.any(new_hi != self.hi):
            self.counts = self._rebin(new_lo, new_hi)
            self.lo, self.hi = new_lo, new_hi
        self.counts = self.counts + self._histogram(rows, self.lo, self.hi)

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts ``(C, bins)`` and edges ``(C, bins + 1)``."""
        if self.counts.size == 0:
            raise RuntimeError("no statistics collected: run a forward pass before computing encodings")
        width = ((self.hi - self.lo) / F32(self.num_bins)).astype(F32)
        edges = (self.lo[:, None] + np.arange(self.num_bins + 1, dtype=F32)[None, :] * width[:, None]).astype(F32)
        return self.counts, edges


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


def tf_enhanced_range(
    counts: np.ndarray, edges: np.ndarray, bitwidth: int, symmetric: bool, strict: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Search the grid with the lowest histogram-weighted quantization error."""
    steps = num_steps(bitwidth, bool(strict and symmetric))
    s_min = min_scale(steps)
    mn = np.minimum(edges[:, 0], F32(0)).astype(F32)
    mx = np.maximum(edges[:, -1], F32(0)).astype(F32)
    mx = np.maximum(mx, mn + F32(steps) * s_min).astype(F32)
    mids = ((edges[:, :-1] + edges[:, 1:]) / F32(2)).astype(F32)
    if symmetric:
        d_max = (F32(2) * np.maximum(mx, -mn) / F32(steps)).astype(F32)
        i = np.arange(1, SYMMETRIC_DELTA_STEPS + 2, dtype=F32)
        scale = np.maximum(d_max[:, None] * i[None, :] / F32(SYMMETRIC_DELTA_STEPS), s_min).astype(F32)
        offset = np.full(scale.shape, -math.ceil(steps / 2), dtype=F32)
    else:
        d_max = ((mx - mn) / F32(steps)).astype(F32)
        o_obs = np.round(mn / d_max).astype(F32)
        g_lo, g_hi = d_max * o_obs, d_max * (o_obs + F32(steps))
        i = np.arange(1, ASYMMETRIC_DELTA_STEPS + 2, dtype=F32)
        deltas = d_max[:, None] * i[None, :] / F32(ASYMMETRIC_DELTA_STEPS)  # (C, 17)
        n = min(steps + 2, MAX_OFFSET_CANDIDATES)
        base = np.round(-F32(steps) + np.arange(n - 1, dtype=F32) * F32(steps) / F32(n - 2)).astype(F32)
        offsets = np.concatenate([np.broadcast_to(base, (len(mn), n - 1)), o_obs[:, None]], axis=1)  # (C, n)
        d = np.repeat(deltas, offsets.shape[1], axis=1)  # delta-major order
        o = np.tile(offsets, (1, deltas.shape[1]))
        lo = np.maximum(d * o, g_lo[:, None])
        hi = np.minimum(d * (o + F32(steps)), g_hi[:, None])
        scale = np.maximum((hi - lo) / F32(steps), s_min).astype(F32)
        offset = np.round(lo / scale).astype(F32)
    chunk = max(1, COST_CHUNK_ELEMENTS // (scale.shape[1] * counts.shape[1]))  # bound the (C, K, bins) work array
    cost = np.concatenate(
        [
            _candidate_cost(counts[i : i + chunk], mids[i : i + chunk], scale[i : i + chunk], offset[i : i + chunk], steps)
            for i in range(0, counts.shape[0], chunk)
        ]
    )
    best = np.argmin(cost, axis=1)  # first minimum: ties go to the earliest candidate
    rows = np.arange(len(best))
    s, o = scale[rows, best], offset[rows, best]
    return (s * o).astype(F32), (s * (o + F32(steps))).astype(F32)


def percentile_range(counts: np.ndarray, edges: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip the histogram at the p-th percentile on each side (linear within a bin)."""

    def _value_at(fraction: float) -> np.ndarray:
        out = np.empty(counts.shape[0], dtype=F32)
        for c in range(counts.shape[0]):
            cum = np.cumsum(counts[c])
            target = fraction * cum[-1]
            k = int(np.searchsorted(cum, target, side="left"))
            k = min(k, counts.shape[1] - 1)
            before = cum[k - 1] if k > 0 else 0.0
            inside = (target - before) / counts[c, k] if counts[c, k] > 0 else 0.0
            out[c] = edges[c, k] + F32(np.clip(inside, 0, 1)) * (edges[c, k + 1] - edges[c, k])
        return out

    if percentile >= 100.0:
        return edges[:, 0].copy(), edges[:, -1].copy()
    p = percentile / 100.0
    return _value_at(1.0 - p), _value_at(p)


class EncodingAnalyzer:
    """Observer + range rule for one quantizer: ``update`` batches, then ``compute_encoding``."""

    def __init__(
        self,
        scheme: QuantScheme,
        bitwidth: int,
        symmetric: bool,
        channels: int = 1,
        strict: bool = False,
        unsigned: bool = False,
        percentile: float = 99.99,
    ):
        self.scheme = QuantScheme(scheme).analyzer
        self.bitwidth, self.symmetric, self.strict, self.unsigned = bitwidth, symmetric, strict, unsigned
        self.percentile = percentile
        if self.scheme is QuantScheme.tf:
            self.observer: MinMaxObserver | HistogramObserver = MinMaxObserver(channels)
        else:
            self.observer = HistogramObserver(channels)

    def update(self, x: np.ndarray) -> None:
        self.observer.update(x)

    def compute_encoding(self) -> Encoding:
        if isinstance(self.observer, MinMaxObserver):
            lo, hi = self.observer.range()
        else:
            counts, edges = self.observer.histogram()
            if self.scheme is QuantScheme.tf_enhanced:
                lo, hi = tf_enhanced_range(counts, edges, self.bitwidth, self.symmetric, self.strict)
            else:
                lo, hi = percentile_range(counts, edges, self.percentile)
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
