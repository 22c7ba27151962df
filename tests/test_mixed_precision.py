"""Mixed precision: BitOps by hand, a monotone front, the hard layer kept high, the stage end to end."""

from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import hard_layer_model, stage_context
from workbench import keys
from workbench.config.schema import AmpConfig
from workbench.options import QuantSettings, parse_overrides
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.results import StageResult
from workbench.stages.mixed_precision import run_mixed_precision
from workbench.techniques.mixed_precision import bitops, choose_mixed_precision, layer_macs

F32 = np.float32


def test_bitops_by_hand_on_two_layers():
    i = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(i)  # 4×4 positions × (3·3·2·4) = 16 × 72 = 1152 MACs
    out = keras.layers.Dense(5, name="dense")(keras.layers.Flatten()(x))  # 64 × 5 = 320 MACs
    macs = layer_macs(keras.Model(i, out))
    assert macs == {"conv": 1152, "dense": 320}
    # conv W4 on A8 input, dense W8 on A16 input: 1152·4·8 + 320·8·16 = 36864 + 40960
    assert bitops(macs, {"conv": 4, "dense": 8}, {"conv": 8, "dense": 16}) == 77824.0


@pytest.fixture(scope="module")
def hard_layer_sim():
    """The middle layer's 4-bit grid (step 8/7) zeroes its other weights; its 8-bit one does not."""
    model, images, labels = hard_layer_model(32, 8.0)
    sim = QuantizationSimModel(model, QuantSettings(param_bw=8, output_bw=8))
    sim.compute_encodings(forward_pass_over([images[:200]]))
    return sim, images, labels


def test_front_is_monotone_and_the_hard_layer_stays_at_8_bit(hard_layer_sim):
    sim, images, labels = hard_layer_sim
    before = sim.model.predict(images, verbose=0)
    found = choose_mixed_precision(sim, images, labels, [(8, 8), (4, 8)], allowed_accuracy_drop=0.05)
    costs = found.front["relative_bitops"].to_numpy()
    assert costs[0] == 1.0 and np.all(np.diff(costs) < 0) and costs[-1] == pytest.approx(0.5)
    assert found.chosen["hard"] == (8, 8) and found.chosen["first"] == (4, 8) and found.chosen["last"] == (4, 8)
    assert found.top1 >= found.fp32_top1 - 0.05 and found.relative_bitops < 1.0
    # the hard layer is the last one lowered on the front
    assert found.front["group"].iloc[-1] == "hard"
    np.testing.assert_array_equal(sim.model.predict(images, verbose=0), before)  # the sim is left at the highest candidate
    # the chosen bitwidths load back as overrides
    assert {o.pattern: o.param_bw for o in parse_overrides(found.overrides())}["hard"] == 8


@pytest.mark.slow
def test_mixed_precision_stage_logs_the_front_and_reusable_overrides(tmp_path):
    ctx = stage_context(tmp_path, QuantSettings(param_bw=4), amp=AmpConfig(eval_samples=48))  # quant=w4a8 asked
    result = StageResult()
    run_mixed_precision(ctx, result)
    front = result.tables[keys.ARTIFACT_AMP_FRONT]
    assert front["relative_bitops"].is_monotonic_decreasing
    assert 0.5 <= result.metrics[keys.AMP_RELATIVE_BITOPS] <= 1.0 and keys.SIM_TOP1 in result.metrics
    overrides = parse_overrides(result.documents[keys.ARTIFACT_AMP_OVERRIDES])
    assert {o.param_bw for o in overrides} <= {4, 8} and keys.ARTIFACT_AMP_FRONT_PNG in result.figures
    # what it simulated: the highest candidate (W8A8) with the chosen per-layer overrides, not the config's W4
    assert (result.simulated.param_bw, result.simulated.output_bw) == (8, 8) and result.simulated.overrides == overrides
    # amp.chosen builds that choice again without a search: the same sim, bit for bit
    lowered = sum(o.param_bw == 4 for o in overrides)
    assert 0 < lowered < len(overrides)  # a choice that lowers some layers, AdaRounded, and keeps others
    chosen = AmpConfig(eval_samples=48, chosen=result.tags[keys.TAG_AMP_OVERRIDES_FILE])
    again = StageResult()
    run_mixed_precision(stage_context(tmp_path, QuantSettings(param_bw=4), amp=chosen), again)
    assert keys.ARTIFACT_AMP_FRONT not in again.tables and again.simulated == result.simulated
    x = next(iter(ctx.data.val_batches()))[0]
    np.testing.assert_array_equal(again.sim.model(x).numpy(), result.sim.model(x).numpy())
    assert again.metrics[keys.SIM_TOP1] == result.metrics[keys.SIM_TOP1]
    with pytest.raises(ValueError, match="chosen='nowhere.json' is not a file"):
        AmpConfig(chosen="nowhere.json")


def test_a_run_is_tagged_and_named_by_the_setting_it_simulated(tmp_path):
    from hydra import compose, initialize_config_dir

    from workbench.app import resolved, tracked_run
    from workbench.config.schema import register_configs
    from workbench.tracking.mlflow_run import Tracker

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["quant=w4a8", "+stage=mixed_precision"])
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "exp")
    with tracked_run(tracker, resolved(cfg), "mixed_precision") as (tracked, result):
        result.simulated = QuantSettings(param_bw=8, output_bw=8)
    run = tracker.client.get_run(tracked.run_id)
    assert run.data.tags["param_bw"] == "8" and run.data.tags["output_bw"] == "8"  # grouped with W8A8 in reports
    assert run.info.run_name == "mixed_precision · mnist_mobilenet · W8A8 · tf/tf"
    assert run.data.tags["requested"] == "mixed_precision · mnist_mobilenet · W4A8 · tf/tf"
    assert run.data.params["quant.param_bw"] == "4"  # the config as given stays in the params
    from workbench.reporting.runs import load_runs

    row = load_runs(tracker.client, "exp").iloc[0]  # and the report groups it by what it simulated
    assert (row["param:quant.param_bw"], row["param:quant.output_bw"]) == ("8", "8")
