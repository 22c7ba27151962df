"""Reference-style cases: the analyzers agree bit for bit with a scalar reading of the rules.

72 settings:
3 schemes × 4 and 8 bit × symmetric/asymmetric × per-tensor/per-channel × 3 data cases (one batch with
outliers; three batches that widen the range past the growth limit, with ±inf and NaN; constant and
all-zero channels). 40 multi-batch cases (2–6 batches whose range drifts, grows past the growth limit, starts
constant, is one-sided, heavy-tailed, shrinks or holds ±inf/NaN; tf_enhanced on each kind three times). 24
random per-channel kernels (spreads over two decades, an outlier, a dead channel) through the weights' path,
every scheme at 4/8 bit, symmetric and not. The oracle is tests/reference_encodings.py, written loop by loop from
docs/techniques.md section 1.
"""

import itertools

import numpy as np
import pytest
from reference_encodings import reference_encoding

from workbench.quantsim.analyzers import EncodingAnalyzer, compute_tensor_encoding

F32 = F = np.float32
CHANNELS = 3


def _cases(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Each case: a list of batches shaped (channels, n)."""
    outliers = rng.standard_normal((CHANNELS, 400)).astype(F32) * F32([[0.2], [1.0], [3.0]])
    outliers[:, :2] = [[4.0, -1.5], [25.0, -9.0], [0.5, 80.0]]
    first = rng.uniform(-0.3, 1.0, (CHANNELS, 200)).astype(F32)
    wider = rng.uniform(-1.0, 2.0, (CHANNELS, 200)).astype(F32)
    beyond = rng.standard_normal((CHANNELS, 200)).astype(F32)
    beyond[:, 0], beyond[0, 1], beyond[1, 2], beyond[2, 3] = 50.0, np.inf, -np.inf, np.nan
    constant = np.stack([np.zeros(300, F32), np.full(300, 2.5, F32), rng.standard_normal(300).astype(F32)])
    return {"one batch": [outliers], "three batches": [first, wider, beyond], "constant": [constant]}


SETTINGS = list(
    itertools.product(["tf", "tf_enhanced", "percentile"], [4, 8], [False, True], [False, True], ["one batch", "three batches", "constant"])
)


def test_there_are_72_settings():
    assert len(SETTINGS) == 72


@pytest.mark.parametrize(("scheme", "bitwidth", "symmetric", "per_channel", "case"), SETTINGS)
def test_encoding_is_bit_exact_with_the_rules(scheme, bitwidth, symmetric, per_channel, case):
    batches = _cases(np.random.default_rng(7))[case]
    analyzer = EncodingAnalyzer(scheme, bitwidth, symmetric, CHANNELS if per_channel else 1, percentile=99.0)
    for batch in batches:
        analyzer.update(batch if per_channel else batch.reshape(1, -1))
    enc = analyzer.compute_encoding()
    rows = range(CHANNELS) if per_channel else [None]
    for c, row in enumerate(rows):
        channel_batches = [b[row] if row is not None else b.ravel() for b in batches]
        scale, offset = reference_encoding(channel_batches, scheme, bitwidth, symmetric, p=99.0)
        assert enc.scale[c] == scale and enc.offset[c] == offset, (c, float(enc.scale[c]), float(scale), float(enc.offset[c]), offset)


# ----------------------------------------------------------------- 40 multi-batch cases
def _batches(rng: np.random.Generator, kind: str) -> list[np.ndarray]:
    """2–6 batches of one tensor whose range moves between them in the way ``kind`` names."""
    n = int(rng.integers(2, 7))
    size = int(rng.integers(50, 400))
    if kind == "drifting mean":
        return [(rng.standard_normal(size) + F(k * rng.uniform(0.2, 1.5))).astype(F) for k in range(n)]
    if kind == "growing spread":
        return [(rng.standard_normal(size) * F(1.6**k)).astype(F) for k in range(n)]
    if kind == "past the growth limit":
        out = [rng.uniform(-0.2, 0.5, size).astype(F) for _ in range(n)]
        out[-1][0] = F(rng.uniform(5.0, 60.0))  # one value far past lo/hi ± 1.5·range
        return out
    if kind == "constant first":
        return [np.full(size, F(rng.uniform(-1.0, 2.0)), F)] + [rng.standard_normal(size).astype(F) for _ in range(n - 1)]
    if kind == "one-sided":  # post-ReLU: non-negative, a spike of exact zeros
        return [np.maximum(rng.standard_normal(size), 0).astype(F) * F(rng.uniform(0.5, 4.0)) for _ in range(n)]
    if kind == "heavy tails":
        return [rng.standard_t(2.0, size).astype(F) for _ in range(n)]
    if kind == "shrinking":  # later batches inside the first one's range
        return [(rng.standard_normal(size) * F(0.7**k)).astype(F) for k in range(n)]
    # "with non-finite": ±inf and NaN among ordinary values
    out = [rng.standard_normal(size).astype(F) for _ in range(n)]
    out[0][:3] = [np.inf, -np.inf, np.nan]
    return out


KINDS = [
    "drifting mean",
    "growing spread",
    "past the growth limit",
    "constant first",
    "one-sided",
    "heavy tails",
    "shrinking",
    "non-finite",
]
# tf_enhanced (where the corrected rules matter: observed range after several batches, bin centres, candidate
# ends) on every kind, twice; tf and percentile on every other one
MULTI_BATCH = (
    [("tf_enhanced", kind, seed) for kind in KINDS for seed in (0, 1)]
    + [("tf", kind, 2) for kind in KINDS]
    + [("percentile", kind, 3) for kind in KINDS]
    + [("tf_enhanced", kind, 4) for kind in KINDS]
)


def test_there_are_40_multi_batch_cases():
    assert len(MULTI_BATCH) == 40


@pytest.mark.parametrize(("scheme", "kind", "seed"), MULTI_BATCH)
def test_multi_batch_encoding_is_bit_exact_with_the_rules(scheme, kind, seed):
    rng = np.random.default_rng(100 + seed * 17 + KINDS.index(kind))
    batches = _batches(rng, kind)
    bitwidth, symmetric = (8, False) if seed % 2 == 0 else (4, True)
    if kind in ("one-sided", "past the growth limit"):
        symmetric = not symmetric
    analyzer = EncodingAnalyzer(scheme, bitwidth, symmetric, 1, percentile=99.9)
    for batch in batches:
        analyzer.update(batch.reshape(1, -1))
    enc = analyzer.compute_encoding()
    scale, offset = reference_encoding(batches, scheme, bitwidth, symmetric, p=99.9)
    assert enc.scale[0] == scale and enc.offset[0] == offset, (float(enc.scale[0]), float(scale), float(enc.offset[0]), offset)


# ----------------------------------------------------------------- 24 per-channel random kernels
def _kernel(rng: np.random.Generator) -> np.ndarray:
    """A conv kernel (3, 3, C_in, C_out) with per-channel spreads over two decades, an outlier channel and a dead one."""
    c_in, c_out = int(rng.integers(2, 9)), int(rng.integers(4, 13))
    kernel = rng.standard_normal((3, 3, c_in, c_out)).astype(F) * F(10.0) ** rng.uniform(-2, 0, c_out).astype(F)
    kernel[0, 0, 0, 1] = F(kernel[..., 1].std() * 12)  # one outlier
    kernel[..., -1] = 0  # a dead channel
    return kernel


KERNELS = list(itertools.product(["tf", "tf_enhanced", "percentile"], [(8, True), (8, False), (4, True), (4, False)], [0, 1]))


def test_there_are_24_per_channel_kernels():
    assert len(KERNELS) == 24


@pytest.mark.parametrize(("scheme", "grid", "seed"), KERNELS)
def test_per_channel_kernel_encoding_is_bit_exact_with_the_rules(scheme, grid, seed):
    """A weight's per-channel encoding (the sim's param path) equals the rules channel by channel."""
    bitwidth, symmetric = grid
    kernel = _kernel(np.random.default_rng(200 + seed))
    enc = compute_tensor_encoding(kernel, scheme, bitwidth, symmetric, channel_axis=-1, percentile=99.9)
    for c in range(kernel.shape[-1]):
        scale, offset = reference_encoding([kernel[..., c].ravel()], scheme, bitwidth, symmetric, p=99.9)
        assert enc.scale[c] == scale and enc.offset[c] == offset, (c, float(enc.scale[c]), float(scale), float(enc.offset[c]), offset)
