"""Quantization grids: from an observed range to an encoding, and quantize-dequantize.

Definitions follow AIMET 2.42's quantizer semantics (docs/techniques.md, section 1):
an encoding is (bitwidth, min, max, scale Δ, offset o) with real = Δ·(q + o),
q ∈ [0, steps]. All arithmetic is float32 and every rounding is round-half-to-even
(``np.round``). Arrays carry one value per channel (shape ``(C,)``; C = 1 per-tensor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

F32 = np.float32
FLOAT32_EPS = F32(np.finfo(np.float32).eps)
FLOAT32_MAX = F32(np.finfo(np.float32).max)
# ±inf ranges are clamped to a quarter of float32's range so that every grid width stays finite
RANGE_LIMIT = F32(FLOAT32_MAX / 4)


def num_steps(bitwidth: int, strict: bool = False) -> int:
    """Number of quantization steps: 2^b − 1, or 2^b − 2 for a strict symmetric grid."""
    return 2**bitwidth - (2 if strict else 1)


def min_scale(steps: int) -> np.float32:
    """Smallest scale ever produced: min(float32 eps, 0.01/steps)."""
    return F32(min(float(FLOAT32_EPS), float(F32(0.01) / F32(steps))))


@dataclass(frozen=True)
class Encoding:
    """A quantization grid, one entry per channel (C = 1 for per-tensor)."""

    bitwidth: int
    steps: int
    symmetric: bool
    scale: np.ndarray
    offset: np.ndarray

    @property
    def min(self) -> np.ndarray:
        return (self.scale * self.offset).astype(F32)

    @property
    def max(self) -> np.ndarray:
        return (self.scale * (self.offset + F32(self.steps))).astype(F32)

    @property
    def num_channels(self) -> int:
        return int(self.scale.shape[0])

    def to_dicts(self) -> list[dict]:
        """AIMET 0.6.1 layout: one dict per channel."""
        mins, maxs = self.min, self.max
        return [
            {
                "bitwidth": int(self.bitwidth),
                "dtype": "int",
                "is_symmetric": str(bool(self.symmetric)),
                "max": float(maxs[i]),
                "min": float(mins[i]),
                "offset": int(self.offset[i]),
                "scale": float(self.scale[i]),
            }
            for i in range(self.num_channels)
        ]

    @classmethod
    def from_dicts(cls, entries: list[dict]) -> Encoding:
        """Rebuild from AIMET 0.6.1 dicts (the inverse of :meth:`to_dicts`)."""
        bitwidth = int(entries[0]["bitwidth"])
        symmetric = str(entries[0]["is_symmetric"]) == "True"
        scale = np.array([e["scale"] for e in entries], dtype=F32)
        offset = np.array([e["offset"] for e in entries], dtype=F32)
        return cls(bitwidth, infer_steps(bitwidth, symmetric, offset), symmetric, scale, offset)


def infer_steps(bitwidth: int, symmetric: bool, offset: np.ndarray) -> int:
    """Steps of a stored grid: a strict symmetric one has offset −(2^(b−1) − 1)."""
    strict = symmetric and bool(np.all(np.asarray(offset) == -(2 ** (bitwidth - 1) - 1)))
    return num_steps(bitwidth, strict)


def encoding_from_range(
    lo: np.ndarray,
    hi: np.ndarray,
    bitwidth: int,
    symmetric: bool,
    strict: bool = False,
    unsigned: bool = False,
    final: bool = True,
) -> Encoding:
    """The range adjustment every scheme ends with: an analyzer range [lo, hi] to an encoding.

    Widens the range to contain 0 and to span at least steps·s_min, then
    symmetric: Δ = max(hi/P, −lo/N), grid [−N·Δ, P·Δ] (P = floor(steps/2), N = ceil(steps/2)), through
    :func:`final_step`; asymmetric: Δ = max((hi − lo)/steps, s_min), o = clamp(round(lo/Δ), −steps, 0), which is
    the encoding itself with ``final=False`` (AIMET's asymmetric ``tf``: one pass; a second final step moves Δ by
    an ulp on some ranges), else the grid [Δ·o, Δ·(o + steps)] through :func:`final_step` (``percentile``).
    """
    strict = bool(strict and symmetric)
    steps = num_steps(bitwidth, strict)
    s_min = min_scale(steps)
    lo = np.clip(np.nan_to_num(np.atleast_1d(np.asarray(lo, dtype=F32)), nan=0.0), -RANGE_LIMIT, RANGE_LIMIT)
    hi = np.clip(np.nan_to_num(np.atleast_1d(np.asarray(hi, dtype=F32)), nan=0.0), -RANGE_LIMIT, RANGE_LIMIT)
    lo = np.minimum(lo, F32(0)).astype(F32)
    hi = np.maximum(hi, F32(0)).astype(F32)
    if strict:
        n_neg = n_pos = 2 ** (bitwidth - 1) - 1
    else:
        n_pos, n_neg = steps // 2, math.ceil(steps / 2)
    too_narrow = ((hi - lo) / F32(steps)) < s_min
    if symmetric:
        lo = np.where(too_narrow, lo - F32(n_neg) * s_min, lo).astype(F32)
        hi = np.where(too_narrow, hi + F32(n_pos) * s_min, hi).astype(F32)
    else:
        hi = np.where(too_narrow, hi + F32(steps) * s_min, hi).astype(F32)

    if symmetric:
        # unsigned symmetric: data never below 0 uses the whole grid from 0 (o = 0)
        unsigned_mask = np.full(lo.shape, bool(unsigned)) & (lo >= 0) & ~too_narrow
        pos_div = F32(n_pos + 1) if (steps == 3 and not strict) else F32(n_pos)
        scale = np.maximum(hi / pos_div, -lo / F32(n_neg)).astype(F32)
        scale = np.where(unsigned_mask, hi / F32(steps), scale).astype(F32)
        grid_min = np.where(unsigned_mask, F32(0), F32(-n_neg) * scale).astype(F32)
        grid_max = np.where(unsigned_mask, F32(steps) * scale, F32(n_pos) * scale).astype(F32)
        return final_step(grid_min, grid_max, bitwidth, True, strict, unsigned_mask)
    scale = np.maximum((hi - lo) / F32(steps), s_min).astype(F32)
    offset = np.clip(np.round(lo / scale), -steps, 0).astype(F32)
    if not final:
        return Encoding(bitwidth, steps, False, scale, offset)
    return final_step(scale * offset, scale * (offset + F32(steps)), bitwidth, False)


def final_step(
    grid_min: np.ndarray,
    grid_max: np.ndarray,
    bitwidth: int,
    symmetric: bool,
    strict: bool = False,
    unsigned: bool | np.ndarray = False,
) -> Encoding:
    """The quantizer's last step, which every encoding goes through (float32).

    Δ = max((max − min)/steps, s_min); asymmetric o = clamp(round(min/Δ), −steps, 0),
    symmetric o = −ceil(steps/2) (strict: −(2^(b−1) − 1); unsigned: 0). Δ is recomputed
    from the grid's ends, so it can differ by an ulp from the Δ that produced them.
    """
    strict = bool(strict and symmetric)
    steps = num_steps(bitwidth, strict)
    grid_min = np.atleast_1d(np.asarray(grid_min, dtype=F32))
    grid_max = np.atleast_1d(np.asarray(grid_max, dtype=F32))
    scale = np.maximum((grid_max - grid_min) / F32(steps), min_scale(steps)).astype(F32)
    if symmetric:
        n_neg = 2 ** (bitwidth - 1) - 1 if strict else math.ceil(steps / 2)
        offset = np.where(np.broadcast_to(unsigned, scale.shape), F32(0), F32(-n_neg)).astype(F32)
    else:
        offset = np.clip(np.round(grid_min / scale), -steps, 0).astype(F32)
    return Encoding(bitwidth, steps, bool(symmetric), scale, offset)


def quantize_dequantize(
    x: np.ndarray,
    enc: Encoding,
    channel_axis: int = -1,
    stochastic: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """x → Δ·(clamp(round(x/Δ) − o, 0, steps) + o), per channel along ``channel_axis``."""
    x = np.asarray(x, dtype=F32)
    shape = [1] * x.ndim
    if enc.num_channels > 1:
        shape[channel_axis] = enc.num_channels
    scale = enc.scale.reshape(shape) if x.ndim else enc.scale[0]
    offset = enc.offset.reshape(shape) if x.ndim else enc.offset[0]
    scaled = x / scale
    if stochastic:
        rng = rng if rng is not None else np.random.default_rng(0)
        rounded = np.floor(scaled + rng.random(x.shape, dtype=F32))
    else:
        rounded = np.round(scaled)
    q = np.clip(rounded - offset, 0, enc.steps)
    return ((q + offset) * scale).astype(F32)


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σ ref² / Σ (ref − approx)²) in dB."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(approx, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * math.log10(signal / noise)
