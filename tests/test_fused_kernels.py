"""The fused CPU kernels (``quantsim.fused``): the values of the TensorFlow ops they stand for, in fewer passes."""

import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

from helpers import small_convnet
from workbench.options import QuantSettings
from workbench.quantsim import analyzers, fused, quantizer
from workbench.quantsim.analyzers import HistogramObserver, MinMaxObserver
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over

F32 = np.float32
NO_OP = "no C++ compiler, or a GPU (the kernels are CPU-only)"
needs_the_op = pytest.mark.skipif(shutil.which("c++") is None or bool(tf.config.list_physical_devices("GPU")), reason=NO_OP)


def four_ops(x, scale, q_min, q_max):
    x = tf.constant(x)
    return (tf.clip_by_value(tf.math.rint(x / scale), q_min, q_max) * scale).numpy()


def hard_inputs(rng, scale: F32) -> np.ndarray:
    """Exact half-way points of the grid and their float32 neighbours (where a rounding could go either way),
    plain values across and beyond the range, and the special values."""
    k = rng.integers(-400, 400, 20_000).astype(F32)
    ties = (k + F32(0.5)) * scale
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38], F32)
    plain = rng.normal(0, 150 * scale, 20_000).astype(F32)
    return np.concatenate([ties, np.nextafter(ties, F32(np.inf)), np.nextafter(ties, F32(-np.inf)), plain, special])


@needs_the_op
def test_the_op_gives_the_four_ops_values_on_ties_neighbours_and_special_values():
    op = fused.quantize_dequantize_op()
    assert op is not None, "the fused kernels were not built on a CPU machine with a compiler (see the log's reason)"
    rng = np.random.default_rng(0)
    for trial in range(60):
        scale = F32(10 ** rng.uniform(-7, 3))
        q_min = F32(-rng.integers(0, 256)) if trial % 3 else F32(0)  # asymmetric, symmetric-narrow, unsigned grids
        q_max = q_min + F32(2 ** rng.choice([4, 8]) - 1 - (trial % 2))
        x = hard_inputs(rng, scale)
        got, want = op(x, scale, q_min, q_max).numpy(), four_ops(x, scale, q_min, q_max)
        # the same values, NaN where NaN; a zero's sign aside (TensorFlow's own clip gives -0 or +0 by where an
        # element falls in its vector loop), which no later computation of the sim can tell apart
        np.testing.assert_array_equal(got, want, err_msg=f"scale {scale!r}, grid [{q_min}, {q_max}]")
    big = rng.normal(0, 1, (4, 33, 35, 17)).astype(F32)  # an odd size: the vector loop and its scalar tail
    np.testing.assert_array_equal(op(big, F32(0.01), F32(-128), F32(127)).numpy(), four_ops(big, F32(0.01), F32(-128), F32(127)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="scalars"):
        op(big, np.ones(2, F32), F32(0), F32(255))


@needs_the_op
def test_the_sim_runs_the_op_and_its_outputs_equal_the_four_ops(monkeypatch):
    model = small_convnet()
    images = np.random.default_rng(1).normal(size=(64, 8, 8, 3)).astype(F32)

    def sim_outputs(use_op: bool):
        if not use_op:
            monkeypatch.setattr(quantizer, "quantize_dequantize_op", lambda: None)
        sim = QuantizationSimModel(model, QuantSettings())
        sim.compute_encodings(forward_pass_over([images[:32]]))
        step = tf.function(lambda x: sim.model(x, training=False))
        graph = step.get_concrete_function(tf.TensorSpec((None, 8, 8, 3))).graph
        ops = {op.type for g in [graph, *(f.graph for f in graph._functions.values())] for op in g.get_operations()}
        monkeypatch.undo()
        return step(images).numpy(), "WorkbenchQuantizeDequantize" in ops

    one_kernel, used = sim_outputs(True)
    plain, used_by_plain = sim_outputs(False)
    assert used and not used_by_plain
    np.testing.assert_array_equal(one_kernel, plain)
    assert fused.kernel_name() == "fused"


def test_without_a_compiler_the_build_says_so_and_the_sim_keeps_the_four_ops(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(fused, "library_path", lambda: tmp_path / "op.so")
    fused.library.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="no C.. compiler .'no-such-compiler'"):
            fused.build(tmp_path / "op.so")
        if shutil.which("false"):  # a compiler that fails: its failure is named, nothing half-built is left
            monkeypatch.setenv("CXX", "false")
            with pytest.raises(RuntimeError, match="`false ...` failed"):
                fused.build(tmp_path / "op.so")
            assert not list(tmp_path.glob("*.so"))
            monkeypatch.setenv("CXX", "no-such-compiler")
        with caplog.at_level(logging.WARNING, logger=fused.__name__):
            assert fused.quantize_dequantize_op() is None
        assert "run as TensorFlow ops" in caplog.text and "no-such-compiler" in caplog.text
        assert fused.kernel_name() == "tf_ops" and fused.histogram_ops() is None
        q = quantizer.FakeQuant(8)
        q.build((None,))
        q.set_mode(quantizer.Mode.QUANTIZE)
        x = np.linspace(-3, 3, 101, dtype=F32)
        np.testing.assert_array_equal(q(x).numpy(), four_ops(x, F32(1), F32(0), F32(1)))
        monkeypatch.setenv(fused.SWITCH, "0")  # switched off on purpose: said, not warned
        fused.library.cache_clear()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=fused.__name__):
            assert fused.quantize_dequantize_op() is None
        assert f"{fused.SWITCH}=0" in caplog.text and all(r.levelno == logging.INFO for r in caplog.records)
    finally:
        monkeypatch.undo()
        fused.library.cache_clear()


def test_the_library_name_is_keyed_by_source_flags_and_tensorflow(tmp_path, monkeypatch):
    first = fused.library_path(tmp_path)
    assert first.parent == tmp_path and first.name.startswith("workbench_ops-")
    monkeypatch.setattr(fused, "_cpu_flags", lambda: ["-mno-such-flag"])
    assert fused.library_path(tmp_path) != first


def rows_with_every_hard_case(rng) -> np.ndarray:
    """(4, N) rows: plain, heavy-tailed with ±inf and NaN, one that is NaN and inf only, one constant."""
    n = 70_001  # several shards and a remainder
    plain = rng.normal(0, 1, n).astype(F32)
    tailed = (rng.standard_cauchy(n) * 1e3).astype(F32)
    tailed[rng.integers(0, n, 50)] = np.nan
    tailed[rng.integers(0, n, 20)] = np.inf
    tailed[rng.integers(0, n, 20)] = -np.inf
    empty = np.where(rng.uniform(size=n) < 0.5, np.nan, np.inf).astype(F32)
    return np.stack([plain, tailed, empty, np.full(n, 0.25, F32)])


@needs_the_op
def test_the_range_and_bin_count_kernels_give_the_tensorflow_ops_values():
    assert fused.histogram_ops() is not None
    finite_range, bin_counts = fused.histogram_ops()
    rng = np.random.default_rng(3)
    rows = tf.constant(rows_with_every_hard_case(rng))
    lo, hi = (v.numpy() for v in finite_range(rows))
    want_lo, want_hi = (v.numpy() for v in analyzers._row_min_max(rows, analyzers._all_finite(rows)))
    np.testing.assert_array_equal(lo, want_lo)
    np.testing.assert_array_equal(hi, want_hi)
    assert lo[2] == np.inf and hi[2] == -np.inf  # a row without a finite value
    # bin edges that data lands on exactly, ranges that cut the data (values beyond both ends), and values
    # whose bin another order of the same float32 operations, (x − lo)·(bins/(hi − lo)), would change
    edge_lo = np.array([-0.37, -3.3, -0.5, 0.0], F32)
    edge_hi = np.array([2.9, 7.1, 0.5, 0.83], F32)
    width = edge_hi - edge_lo
    on_edges = (edge_lo[:, None] + width[:, None] * (np.arange(513, dtype=F32) / F32(512))[None, :]).astype(F32)
    x = rng.uniform(-4, 8, (4, 1_000_000)).astype(F32)
    other_order = np.zeros(x.shape, bool)
    for num_bins in (512, 2048, 7):
        first = ((x - edge_lo[:, None]) * F32(num_bins)) / width[:, None]
        second = (x - edge_lo[:, None]) * (F32(num_bins) / width)[:, None]
        other_order |= np.floor(first) != np.floor(second)
    assert other_order[:2].sum(axis=1).min() > 0  # the check below has teeth on the awkward widths
    near = np.where(other_order, x, np.nan).astype(F32)  # NaN is dropped by both forms
    rows = tf.constant(np.concatenate([rows.numpy(), on_edges, np.nextafter(on_edges, F32(-np.inf)), near], axis=1))
    for num_bins in (512, 2048, 7):
        got = bin_counts(rows, edge_lo, edge_hi, num_bins=num_bins).numpy()
        want = analyzers._bin_counts(rows, tf.constant(edge_lo), tf.constant(edge_hi), analyzers._all_finite(rows), num_bins).numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"{num_bins} bins")
        assert got.dtype == np.float64
    assert got[2].sum() == (~np.isnan(rows.numpy()[2])).sum()  # NaN dropped, ±inf in the end bins


@needs_the_op
@pytest.mark.parametrize("channels", [1, 3])
def test_the_observers_state_is_the_same_with_the_fused_kernels_as_without(monkeypatch, channels):
    rng = np.random.default_rng(4)
    batches = [rows_with_every_hard_case(rng)[:, :30_000].reshape(-1, channels) * F32(1 + i) for i in range(4)]
    batches[0] = rng.normal(0, 0.1, batches[0].shape).astype(F32)  # a finite first range that later batches outgrow

    def states(use_fused: bool):
        if not use_fused:
            monkeypatch.setattr(analyzers, "histogram_ops", lambda: None)
        observers = [HistogramObserver(channels), HistogramObserver(channels, 2048, None), MinMaxObserver(channels)]
        for x in batches:
            for o in observers:
                o.update(tf.constant(x.T if channels > 1 else x))
        monkeypatch.undo()
        return [o.histogram() for o in observers[:2]] + [o.range() for o in observers[2:]]

    for got, want in zip(states(True), states(False)):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
