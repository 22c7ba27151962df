"""Per-layer analysis: the deliberately hard layer is found first, the switch leaves the sim as it was,
and the analyze stage writes its tables, figures and description."""

import numpy as np
import pytest

from helpers import hard_layer_model, stage_context
from workbench import keys
from workbench.config.schema import AnalyzeConfig
from workbench.options import QuantSettings
from workbench.quantsim.analysis import layer_ranges, layer_sensitivity
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.results import StageResult
from workbench.stages.analyze import run_analyze

F32 = np.float32


@pytest.fixture(scope="module")
def hard_layer_sim():
    """The middle layer's weight 200× the others: its 4-bit grid zeroes the rest."""
    model, images, labels = hard_layer_model(16, 80.0)
    sim = QuantizationSimModel(model, QuantSettings(param_bw=4, output_bw=8))
    sim.compute_encodings(forward_pass_over([images[:200]]))
    return sim, images, labels


def test_the_hard_layer_is_found_first(hard_layer_sim):
    sim, images, labels = hard_layer_sim
    table, refs = layer_sensitivity(sim, images, labels)
    assert refs["fp32"] == 1.0 and refs["quantized"] < 0.9
    assert table.sort_values("drop_alone", ascending=False)["layer"].iloc[0] == "hard"
    assert table.sort_values("gain_if_float", ascending=False)["layer"].iloc[0] == "hard"
    hard = table.set_index("layer").loc["hard"]
    # its weights, not its output, do the harm
    assert hard["only_weights"] < hard["only_output"] and hard["all_but_weights"] > hard["all_but_output"]
    assert list(table["layer"]) == [n for n in sim.graph.order if n in sim.param_quantizers or n in sim.output_quantizers]


def test_switching_leaves_the_sim_as_it_was(hard_layer_sim):
    sim, images, labels = hard_layer_sim
    before = sim.model.predict(images, verbose=0)
    layer_sensitivity(sim, images[:64], labels[:64])
    np.testing.assert_array_equal(sim.model.predict(images, verbose=0), before)
    ranges, observed = layer_ranges(sim, images[:64])
    hard = ranges.set_index("layer").loc["hard"]
    assert hard["weight_max"] == pytest.approx(80.0) and hard["weight_channel_range_ratio"] > 10
    assert set(observed) == set(sim.output_quantizers)
    table = ranges.set_index("layer")
    assert table.loc["hard", "output_sqnr_db"] < table.loc["first", "output_sqnr_db"]  # where the error enters
    assert 0.0 < table.loc["first", "output_cosine"] <= 1.0 + 1e-9


@pytest.mark.slow
def test_analyze_stage_writes_tables_figures_and_description(tmp_path):
    ctx = stage_context(tmp_path, QuantSettings(param_bw=4), analyze=AnalyzeConfig(eval_samples=40, top_k=3))
    result = StageResult()
    run_analyze(ctx, result)
    table = result.tables[keys.ARTIFACT_SENSITIVITY]
    assert {"only", "all_but", "only_weights", "all_but_output", "drop_alone", "gain_if_float"} <= set(table.columns)
    assert keys.ARTIFACT_SENSITIVITY_PNG in result.figures and keys.ARTIFACT_RANGES in result.tables
    assert result.metrics[keys.ANALYZE_EVAL_SAMPLES] == 40
    assert result.tags[keys.TAG_DESCRIPTION].startswith("**Most sensitive layers**")
    assert len(result.tags["analyze.worst_layers"].split(", ")) == 3
