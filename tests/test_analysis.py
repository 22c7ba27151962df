"""Per-layer analysis: the deliberately hard layer is found first, the switch leaves the sim as it was,
and the analyze stage writes its tables, figures and description."""

import keras
import numpy as np
import pytest

from helpers import small_convnet
from workbench import keys
from workbench.config.schema import AnalyzeConfig
from workbench.data.synthetic import make_synthetic
from workbench.options import QuantSettings
from workbench.quantsim.analysis import layer_ranges, layer_sensitivity
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.results import StageResult
from workbench.stages.analyze import run_analyze
from workbench.stages.context import StageContext

F32 = np.float32


@pytest.fixture(scope="module")
def hard_layer_sim():
    """Three dense layers; the middle one carries a weight 200× the others, so its 4-bit grid zeroes the rest."""
    rng = np.random.default_rng(0)
    i = keras.Input((16,))
    x = keras.layers.Dense(16, activation="relu", name="first")(i)
    x = keras.layers.Dense(16, activation="relu", name="hard")(x)
    model = keras.Model(i, keras.layers.Dense(4, name="last")(x))
    for name in ("first", "hard", "last"):
        layer = model.get_layer(name)
        kernel = rng.normal(0, 0.4, layer.kernel.shape).astype(F32)
        if name == "hard":
            kernel[0, 0] = 80.0
        layer.set_weights([kernel, np.full(layer.bias.shape, 0.1, F32)])
    images = rng.normal(0, 1, (400, 16)).astype(F32)
    labels = model.predict(images, verbose=0).argmax(-1)  # FP32 is right by construction
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


def test_analyze_stage_writes_tables_figures_and_description(tmp_path):
    data = make_synthetic(num_train=64, num_val=48, num_classes=4, image_shape=(8, 8, 3), seed=0, batch_size=16)
    ctx = StageContext(
        model=small_convnet(),
        data=data,
        settings=QuantSettings(param_bw=4),
        calibration_samples=32,
        sqnr_samples=0,
        cache_dir=str(tmp_path),
        analyze=AnalyzeConfig(eval_samples=40, top_k=3),
    )
    result = StageResult()
    run_analyze(ctx, result)
    table = result.tables[keys.ARTIFACT_SENSITIVITY]
    assert {"only", "all_but", "only_weights", "all_but_output", "drop_alone", "gain_if_float"} <= set(table.columns)
    assert keys.ARTIFACT_SENSITIVITY_PNG in result.figures and keys.ARTIFACT_RANGES in result.tables
    assert result.metrics[keys.ANALYZE_EVAL_SAMPLES] == 40
    assert result.tags[keys.TAG_DESCRIPTION].startswith("**Most sensitive layers**")
    assert len(result.tags["analyze.worst_layers"].split(", ")) == 3
