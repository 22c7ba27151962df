"""A scalar, loop-by-loop reading of techniques.md section 1 (AIMET 2.42's encoding rules, as corrected in December).

Written from the rules' text, one channel and one candidate at a time, in float32 scalars: the
oracle the vectorised analyzers (TensorFlow statistics, NumPy search) are checked against bit for bit.
Slow on purpose; only for tests.
"""

from __future__ import annotations

import math

import numpy as np

F = np.float32
EPS = F(np.finfo(np.float32).eps)
LIMIT = F(np.finfo(np.float32).max / 4)


def s_min(steps: int) -> np.float32:
    return F(min(float(EPS), float(F(0.01) / F(steps))))


def final_step(mn: np.float32, mx: np.float32, steps: int, symmetric: bool) -> tuple[np.float32, int]:
    """Δ = max((max − min)/steps, s_min); o = −ceil(steps/2) or clamp(round(min/Δ), −steps, 0)."""
    delta = max(F(F(mx - mn) / F(steps)), s_min(steps))
    if symmetric:
        return F(delta), -math.ceil(steps / 2)
    return F(delta), int(min(max(np.round(F(mn / delta)), -steps), 0))


def adjust(a: np.float32, b: np.float32, steps: int, symmetric: bool, final: bool = True) -> tuple[np.float32, int]:
    """The range adjustment of an analyzer range [a, b]; symmetric then the final step, asymmetric too unless
    ``final`` is false (``tf``: the single pass is the encoding)."""
    a = F(min(max(F(min(F(a), F(0))), -LIMIT), LIMIT))
    b = F(min(max(F(max(F(b), F(0))), -LIMIT), LIMIT))
    p, n = steps // 2, math.ceil(steps / 2)
    if F(F(b - a) / F(steps)) < s_min(steps):
        if symmetric:
            a, b = F(a - F(n) * s_min(steps)), F(b + F(p) * s_min(steps))
        else:
            b = F(b + F(steps) * s_min(steps))
    if symmetric:
        positive = F(p + 1) if steps == 3 else F(p)
        delta = max(F(b / positive), F(-a / F(n)))
        return final_step(F(F(-n) * delta), F(F(p) * delta), steps, True)
    delta = max(F(F(b - a) / F(steps)), s_min(steps))
    o = min(max(np.round(F(a / delta)), -steps), 0)
    if not final:
        return F(delta), int(o)
    return final_step(F(delta * F(o)), F(delta * F(o + steps)), steps, False)


class Histogram:
    """One channel's histogram with the growth limit (None: unlimited) and the observed range."""

    def __init__(self, bins: int, growth: float | None):
        self.bins, self.growth = bins, growth
        self.counts: list[float] = []
        self.lo = self.hi = self.limit_lo = self.limit_hi = F(0)
        self.seen = (F(np.inf), F(-np.inf))
        self.batches = 0

    def _index(self, x: np.float32, lo: np.float32, hi: np.float32) -> int:
        pos = F(F(F(x - lo) * F(self.bins)) / F(hi - lo))
        if pos != pos:  # ±inf over an infinite span cannot happen here; NaN data is skipped before
            return 0
        return int(min(max(math.floor(pos) if math.isfinite(pos) else (self.bins if pos > 0 else -1), 0), self.bins - 1))

    def update(self, values: np.ndarray) -> None:
        self.batches += 1
        finite = [F(v) for v in values if math.isfinite(v)]
        b_lo, b_hi = (min(finite), max(finite)) if finite else (F(0), F(0))
        if finite:
            self.seen = (min(self.seen[0], b_lo), max(self.seen[1], b_hi))
        if not self.counts:
            lo, hi = (F(b_lo - F(0.5)), F(b_hi + F(0.5))) if b_lo == b_hi else (b_lo, b_hi)
            self.lo, self.hi, self.counts = lo, hi, [0.0] * self.bins
            if self.growth is None:
                self.limit_lo, self.limit_hi = F(-np.inf), F(np.inf)
            else:
                r0 = F(hi - lo)
                self.limit_lo, self.limit_hi = F(lo - F(self.growth) * r0), F(hi + F(self.growth) * r0)
        else:
            new_lo = max(min(self.lo, b_lo), self.limit_lo)
            new_hi = min(max(self.hi, b_hi), self.limit_hi)
            if new_lo != self.lo or new_hi != self.hi:
                src_w, dst_w = F(F(self.hi - self.lo) / F(self.bins)), F(F(new_hi - new_lo) / F(self.bins))
                moved = [0.0] * self.bins
                for j, c in enumerate(self.counts):
                    start = F(self.lo + F(src_w * F(j)))
                    d = int(min(max(math.floor(F(F(start - new_lo) / dst_w)), 0), self.bins - 1))
                    end = F(new_lo + F(dst_w * F(d + 1)))
                    first = min(float(np.round(float(F(F(end - start) / src_w)) * c)), c)
                    moved[d] += first
                    moved[min(d + 1, self.bins - 1)] += c - first
                self.counts, self.lo, self.hi = moved, F(new_lo), F(new_hi)
        for v in values:
            if not math.isnan(v):
                self.counts[self._index(F(v), self.lo, self.hi)] += 1

    def width(self) -> np.float32:
        return F(F(self.hi - self.lo) / F(self.bins))

    def observed(self) -> tuple[np.float32, np.float32]:
        """One batch: its finite data's min and max; more: the histogram's range (growth-capped)."""
        if self.batches > 1:
            return self.lo, self.hi
        return self.seen if math.isfinite(self.seen[0]) else (F(0), F(0))


def _cost(counts: np.ndarray, centres: np.ndarray, delta: np.float32, offset: float, steps: int) -> float:
    q = np.round(centres / delta - F(offset))
    clipped = (q < 0) | (q > steps)
    err = (centres - delta * (np.clip(q, 0, steps) + F(offset))) ** 2
    err = np.where(clipped, err * F(3), err).astype(F)
    return float(np.dot(counts, err.astype(np.float64)))


def tf_enhanced(h: Histogram, steps: int, symmetric: bool) -> tuple[np.float32, int]:
    seen_lo, seen_hi = h.observed()
    mn, mx = F(min(seen_lo, F(0))), F(max(seen_hi, F(0)))
    mx = max(mx, F(mn + F(steps) * s_min(steps)))
    w = F(F(h.lo + h.width()) - h.lo)  # e1 - e0 of the float32 edges
    centres = np.array([F(F(h.lo + F(w / F(2))) + F(F(j) * w)) for j in range(h.bins)], F)
    counts = np.array(h.counts, np.float64)
    candidates: list[tuple[np.float32, float]] = []
    if symmetric:
        d_max = F(F(F(2) * max(mx, F(-mn))) / F(steps))
        candidates = [(max(F(F(d_max * F(i)) / F(100)), s_min(steps)), float(-math.ceil(steps / 2))) for i in range(1, 102)]
    else:
        d_max = F(F(mx - mn) / F(steps))
        o_obs = F(np.round(F(mn / d_max)))
        g_lo = F(d_max * o_obs)
        g_hi = F(g_lo + F(d_max * F(steps)))
        n = min(steps + 2, 21)
        offsets = [F(np.round(F(F(-steps) + F(F(F(k) * F(steps)) / F(n - 2))))) for k in range(n - 1)] + [o_obs]
        for i in range(1, 18):
            delta = F(F(d_max * F(i)) / F(16))
            for o in offsets:
                lo, hi = max(F(delta * o), g_lo), min(F(F(delta * o) + F(delta * F(steps))), g_hi)
                clamped = max(F(F(hi - lo) / F(steps)), s_min(steps))
                candidates.append((clamped, float(np.round(F(lo / clamped)))))
    best, best_cost = candidates[0], math.inf
    for delta, offset in candidates:
        cost = _cost(counts, centres, delta, offset, steps)
        if cost < best_cost:  # strictly lower: ties stay with the earlier candidate
            best, best_cost = (delta, offset), cost
    grid_min = F(best[0] * F(best[1]))
    return final_step(grid_min, F(grid_min + F(F(steps) * best[0])), steps, symmetric)


def percentile(h: Histogram, p: float, steps: int, symmetric: bool) -> tuple[np.float32, int]:
    edges = [F(h.lo + F(F(k) * h.width())) for k in range(h.bins + 1)]
    if p >= 100:
        return adjust(edges[0], edges[-1], steps, symmetric)
    cumulative = np.cumsum(np.array(h.counts, np.float64))
    total = cumulative[-1]
    i_max = next(i for i, c in enumerate(cumulative) if c >= (total * p) / 100.0)
    i_min = next(i for i, c in enumerate(cumulative) if c >= (total * (100.0 - p)) / 100.0)
    return adjust(edges[i_min], edges[i_max], steps, symmetric)


def reference_encoding(batches: list[np.ndarray], scheme: str, bitwidth: int, symmetric: bool, p: float = 99.99) -> tuple[float, int]:
    """(scale, offset) of one channel observed over ``batches`` (1-D float32 arrays)."""
    steps = 2**bitwidth - 1
    if scheme == "tf":
        finite = [F(v) for b in batches for v in b if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (F(0), F(0))
        return adjust(lo, hi, steps, symmetric, final=False)
    h = Histogram(512, 1.5) if scheme == "tf_enhanced" else Histogram(2048, None)
    for b in batches:
        h.update(b)
    return tf_enhanced(h, steps, symmetric) if scheme == "tf_enhanced" else percentile(h, p, steps, symmetric)
