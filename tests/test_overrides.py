"""Per-layer overrides (quant.overrides): bitwidths and float layers by name or regex, first match wins."""

import numpy as np
import pytest

from helpers import small_convnet
from workbench.options import LayerOverride, QuantSettings, load_overrides, parse_overrides
from workbench.quantsim.sim import QuantizationSimModel, forward_pass_over
from workbench.techniques import fold_batch_norms

F32 = np.float32


@pytest.fixture(scope="module")
def folded():
    return fold_batch_norms(small_convnet())[0]


def _calibrated(model, settings):
    sim = QuantizationSimModel(model, settings)
    sim.compute_encodings(forward_pass_over([np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(F32)]))
    return sim


def test_overrides_set_bitwidths_per_layer_first_match_wins(folded):
    overrides = (LayerOverride("conv", param_bw=8), LayerOverride("relu6", output_bw=16), LayerOverride(".*", param_bw=4))
    sim = _calibrated(folded, QuantSettings(param_bw=8, output_bw=8, overrides=overrides))
    params = sim.param_encodings()
    assert params["conv"].bitwidth == 8 and {params[n].bitwidth for n in ("dw", "pw", "dense")} == {4}
    outputs = sim.output_encodings()
    assert outputs["relu6"].bitwidth == 16 and {e.bitwidth for n, e in outputs.items() if n != "relu6"} == {8}
    # the kernels are on the overridden grids: at most 16 levels at 4 bit
    assert len(np.unique(sim.layers_by_name["pw"].kernel.numpy())) <= 16
    assert len(np.unique(sim.layers_by_name["conv"].kernel.numpy())) > 16


def test_disabled_layer_stays_float(folded):
    name = next(layer.name for layer in folded.layers if getattr(layer, "kernel", None) is not None)
    sim = _calibrated(folded, QuantSettings(param_bw=4, overrides=(LayerOverride(name, enabled=False),)))
    assert name not in sim.param_quantizers and name not in sim.output_quantizers
    assert sim.plan.skipped[name] == "left float by quant.overrides"
    np.testing.assert_array_equal(sim.layers_by_name[name].kernel.numpy(), folded.get_layer(name).kernel.numpy())


def test_override_files_and_their_errors(tmp_path, folded):
    path = tmp_path / "overrides.yaml"
    path.write_text("conv.*:\n  param_bw: 6\nhead:\n  enabled: false\n")
    assert load_overrides(str(path)) == (LayerOverride("conv.*", param_bw=6), LayerOverride("head", enabled=False))
    with pytest.raises(ValueError, match=r"override 'x': param_bw=99 is not allowed: use an integer in 2..16"):
        parse_overrides({"x": {"param_bw": 99}})
    with pytest.raises(ValueError, match=r"keys among param_bw, output_bw, enabled"):
        parse_overrides({"x": {"bits": 4}})
    with pytest.raises(ValueError, match=r"'\(' is not a regular expression"):
        LayerOverride("(")
    with pytest.raises(ValueError, match=r"quant.overrides: 'no_such_layer' matches no layer of the model"):
        QuantizationSimModel(folded, QuantSettings(overrides=(LayerOverride("no_such_layer", param_bw=4),)))
