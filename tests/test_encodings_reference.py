"""72 reference-style settings: the analyzers agree bit for bit with a scalar reading of the rules.

3 schemes × 4 and 8 bit × symmetric/asymmetric × per-tensor/per-channel × 3 data cases (one batch with
outliers; three batches that widen the range past the growth limit, with ±inf and NaN; constant and
all-zero channels). The oracle is tests/reference_encodings.py, written loop by loop from
docs/techniques.md section 1.
"""

import itertools

import numpy as np
import pytest
from reference_encodings import reference_encoding

from workbench.quantsim.analyzers import EncodingAnalyzer

F32 = np.float32
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
