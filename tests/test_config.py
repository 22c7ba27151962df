"""Every option of every config group composes; bad values fail early with one clear line."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from workbench.config.schema import register_configs
from workbench.config.validate import ConfigError, validate
from workbench.options import AdaroundParameters, QuantSettings
from workbench.registry import stage_names

CONF = Path(__file__).resolve().parents[1] / "conf"
ROOT = CONF.parent
register_configs()


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=False)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "dataset", "quant", "tracking", "paths"])
def test_every_option_composes(group):
    for option in _options(group):
        cfg = _compose(f"{group}={option}", "+stage=baseline")
        OmegaConf.to_container(cfg.quant, resolve=True)
        assert cfg[group] is not None


@pytest.mark.parametrize("stage", _options("stage"))
def test_every_stage_composes_and_validates(stage, tmp_path):
    cfg = _compose(f"+stage={stage}")
    assert cfg.stage.name == stage and stage in stage_names()
    validate(cfg, stage_names())


def test_stage_is_not_in_the_defaults_list_and_no_stage_means_the_pipeline():
    cfg = _compose()
    assert cfg.stage is None
    assert list(cfg.pipeline.stages) == ["baseline", "cle", "bc", "qat"]
    validate(cfg, stage_names())
    with pytest.raises(ConfigError, match=r"pipeline.stages is empty"):
        validate(_compose("pipeline.stages=[]"), stage_names())


def test_default_is_the_embedded_setting():
    cfg = _compose("+stage=baseline")
    assert (cfg.model.name, cfg.dataset.name, cfg.quant.scheme.value) == ("mnist_mobilenet", "mnist", "tf")
    assert (cfg.quant.param_scheme.value, cfg.quant.output_scheme.value) == ("tf", "tf")  # both follow quant.scheme
    other = _compose("+stage=baseline", "quant.scheme=tf_enhanced", "quant.output_scheme=tf")
    assert (other.quant.param_scheme.value, other.quant.output_scheme.value) == ("tf_enhanced", "tf")
    assert (cfg.quant.param_bw, cfg.quant.output_bw, cfg.quant.per_channel) == (8, 8, False)


@pytest.mark.parametrize(
    "override, message",
    [
        ("quant.param_bw=1", r"quant.param_bw=1 is not allowed: bitwidths are integers in 2..16"),
        ("quant.output_bw=33", r"quant.output_bw=33 is not allowed"),
        ("quant.calibration_samples=-5", r"quant.calibration_samples=-5 is not allowed: use an integer >= 1"),
        ("quant.percentile=40", r"quant.percentile=40.0 is not allowed: use a value in \[50, 100\]"),
        ("quant.target=tflite", r"quant.target=tflite simulates TFLite's int8 grids and needs strict_symmetric=true .*use quant=tflite"),
        ("quant=tflite quant.param_bw=4", r"quant.target=tflite .* needs param_bw=8"),
        ("adaround.num_iterations=0", r"adaround.num_iterations=0 is not allowed"),
        ("quant.overrides=/nonexistent.yaml", r"quant.overrides='/nonexistent.yaml' is not a file"),
        ("adaround.default_warm_start=1.0", r"adaround.default_warm_start=1.0 is not allowed: use a value in \[0, 1\)"),
        ("adaround.default_beta_range=[20]", r"adaround.default_beta_range=\[20.0\] is not allowed: two values > 0"),
        ("dataset.batch_size=0", r"dataset.batch_size=0 is not allowed"),
        ("dataset=imagenet", r"dataset.path is missing"),
        ("dataset=imagenet dataset.path=/nonexistent", r"dataset.path='/nonexistent' is not a folder"),
        ("dataset=image_folder", r"dataset.path is missing: give a folder with one subfolder of images per class"),
        ("dataset=image_folder dataset.path=/nonexistent", r"dataset.path='/nonexistent' is not a folder"),
        ("dataset=image_folder dataset.path=/tmp dataset.validation_split=1.5", r"dataset.validation_split=1.5 is not allowed"),
        ("verbosity=3", r"verbosity=3 is not allowed: 0 \(quiet\), 1 \(progress, default\) or 2 \(everything\)"),
        ("model=keras_file", r"model.path is missing"),
        ("model=keras_file model.path=/x/model.txt", r"model.path='/x/model.txt' is not allowed: use a .keras or .h5 file"),
        ("model=resnet50 model.weights=/x/w.h5", r"model.weights='/x/w.h5' does not exist"),
        ("bc.num_quant_samples=0", r"bc.num_quant_samples=0 is not allowed: use an integer >= 1"),
    ],
)
def test_bad_values_name_the_setting(override, message):
    cfg = _compose("+stage=baseline", *override.split())
    with pytest.raises(ConfigError, match=message):
        validate(cfg, stage_names())


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("quant.scheme=minmax", "quant.scheme"),
        ("quant.rounding=up", "quant.rounding"),
        ("quant.param_bw=eight", "quant.param_bw"),
        ("+stage=nope", "stage"),
        ("cle.relu6_mode=sometimes", "cle.relu6_mode"),
        ("bc.mode=magic", "bc.mode"),
    ],
)
def test_wrong_types_and_choices_fail_at_compose(override, fragment):
    with pytest.raises(ConfigCompositionException) as info:
        _compose(override)
    text = str(info.value) + str(info.value.__cause__)
    assert fragment in text


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset.name=digits", "dataset.val_size=0"], "dataset.val_size=0 is not allowed: use an integer in 1..4999"),
        (["model=keras_file", "model.name=mine", "model.path=nope.keras"], "model.path='nope.keras' does not exist"),
        (["model=mobilenet_v2", "model.name=backbone", "model.weights=nope.h5"], "model.weights='nope.h5' does not exist"),
        (["model=keras_file", "model.path=x.onnx"], "model.path='x.onnx' is not allowed: use a .keras or .h5 file"),
        (["model.name=digits_net", "model.bn_momentum=1.5"], "model.bn_momentum=1.5 is not allowed: use a value in [0, 1)"),
        (["model.learning_rate=0"], "model.learning_rate=0.0 is not allowed: use a value > 0"),
        (["model.batch_size=0"], "model.batch_size=0 is not allowed: use an integer >= 1"),
        (["model=mnist_mobilenet_v2", "model.alpha=0"], "model.alpha=0.0 is not allowed: use a value > 0"),
    ],
)
def test_checks_follow_the_config_type_not_its_editable_name(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(_compose(*overrides), stage_names())


@pytest.mark.parametrize(
    "kind, override, own",
    [
        (QuantSettings, "quant.param_bw=1", {"param_bw": 1}),
        (QuantSettings, "quant.percentile=20.0", {"percentile": 20.0}),
        (QuantSettings, "quant.target=tflite", {"target": "tflite"}),
        (AdaroundParameters, "adaround.default_warm_start=1.5", {"default_warm_start": 1.5}),
        (AdaroundParameters, "adaround.num_iterations=0", {"num_iterations": 0}),
    ],
)
def test_an_option_is_checked_once_by_its_own_type(kind, override, own):
    """validate's message is the option type's own, prefixed with its node: one check, not two that may drift."""
    with pytest.raises(ValueError) as direct:
        kind(**own)
    with pytest.raises(ConfigError) as checked:
        validate(_compose(override), stage_names())
    assert str(checked.value) == f"{override.split('.')[0]}.{direct.value}"


def test_a_model_file_config_without_an_input_shape_passes_the_checks(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:  # the probes read no more than a zip's entries
        archive.writestr("metadata.json", "{}")
    validate(_compose("model=keras_file", f"model.path={tmp_path / 'm.keras'}"), stage_names())


def test_a_pipeline_stage_that_is_not_registered_is_one_line():
    with pytest.raises(ConfigError, match=r"pipeline.stages: 'nope' is not a stage; allowed: baseline, bn_fold, cle, bc, "):
        validate(_compose("pipeline.stages=[baseline,nope]"), stage_names())


def test_cli_reports_one_line_before_any_tensorflow_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "+stage=baseline", "quant.param_bw=1", f"paths.outputs_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["workbench: error: quant.param_bw=1 is not allowed: bitwidths are integers in 2..16"]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    "override, line",
    [
        ("quant.scheme=minmax", "Invalid value 'minmax', expected one of [tf, tf_enhanced, percentile"),
        ("quant.param_bw=abc", "Value 'abc' of type 'str' could not be converted to Integer — full_key: quant.param_bw"),
        (
            "+stage=nonexistent",
            "Could not find 'stage/nonexistent': stage is one of adaround, analyze, autoquant, baseline, bc, bn_fold, cle",
        ),
        ("quant.parm_bw=4", "Could not override 'quant.parm_bw'. — Key 'parm_bw' not in 'QuantSettings'"),
        ("+quant.parm_bw=4", "+quant.parm_bw=4 adds a key that is not a setting: did you mean quant.param_bw=4?"),
    ],
)
def test_hydras_own_errors_are_one_line_and_exit_2(tmp_path, override, line):
    """A wrong type, a choice that does not exist, a misspelt key (also following Hydra's +key hint, which would
    otherwise run with the typo ignored): one line, exit 2, as every other bad setting."""
    cmd = [sys.executable, "-m", "workbench", override, f"paths.outputs_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("workbench: error: "), proc.stderr
    assert line in lines[0], lines[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_the_config_is_typed_once_and_its_option_nodes_are_the_library_types(tmp_path):
    """validate returns the typed config: ``quant`` is the simulator's QuantSettings (its overrides file read into
    LayerOverrides), ``adaround`` an AdaroundParameters, both seeded by the run's seed; no DictConfig left."""
    from omegaconf import DictConfig

    from workbench.options import LayerOverride

    (tmp_path / "o.yaml").write_text("conv1: {param_bw: 4}\n")
    config = validate(_compose("+stage=adaround", f"quant.overrides={tmp_path / 'o.yaml'}", "seed=3"), stage_names())
    assert type(config.quant) is QuantSettings and isinstance(config.adaround, AdaroundParameters)
    assert config.quant.overrides == (LayerOverride("conv1", param_bw=4),)
    assert (config.quant.seed, config.adaround.seed, config.adaround.default_beta_range) == (3, 3, (20.0, 2.0))
    assert not any(isinstance(getattr(config, f), DictConfig) for f in vars(config))


def test_sweep_configs_compose():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        bits = compose("config", overrides=["+stage=cle", "+sweep=bitwidths"], return_hydra_config=True)
        stages = compose("config", overrides=["+sweep=stages"], return_hydra_config=True)
    assert dict(bits.hydra.sweeper.params) == {"quant.param_bw": "4,6,8", "quant.output_bw": "8,16"}
    assert stages.hydra.sweeper.params["+stage"] == "baseline,bn_fold,cle,bc,qat"
    assert "sweep_parent" in bits.hydra.callbacks


def test_datasets_and_models_are_built_from_their_targets(tmp_path):
    """Adding a dataset or model is a YAML node with a _target_ and a function (docs/extending.md)."""
    from workbench.config.schema import Config, PathsConfig
    from workbench.stages.setup import build_data, build_model

    cfg = Config(  # schema-less nodes: plain mappings with a _target_
        seed=3,
        paths=PathsConfig(cache_dir=str(tmp_path)),
        dataset={
            "_target_": "workbench.data.synthetic.make_synthetic",
            "name": "tiny",
            "num_train": 8,
            "num_val": 4,
            "num_classes": 3,
            "image_shape": [8, 8, 1],
            "batch_size": 4,
        },
        model={"_target_": "helpers.tiny_model", "name": "tiny", "filters": 5},
    )
    data = build_data(cfg)
    assert (data.num_train, data.num_val, data.num_classes) == (8, 4, 3)
    model = build_model(cfg, data)
    assert model.name == "tiny" and model.output_shape[-1] == 3 and model.get_layer("conv").filters == 5


def test_adaround_steps_must_be_consistent():
    with pytest.raises(ConfigError, match=r"adaround.cle=true needs adaround.fold_batch_norms=true"):
        validate(_compose("+stage=adaround", "adaround.fold_batch_norms=false"), stage_names())
    validate(_compose("+stage=adaround", "adaround.fold_batch_norms=false", "adaround.cle=false"), stage_names())


def test_help_is_the_apps_own():
    proc = subprocess.run([sys.executable, "-m", "workbench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("workbench: ") and "powered by Hydra" not in text
    groups = text.split("Config groups (GROUP=OPTION):")[1].split("Main overrides:")[0]
    assert "base_" not in groups  # the schema nodes are internal
    for yaml_file in CONF.glob("*/*.yaml"):
        if yaml_file.parent.name != "hydra":
            assert yaml_file.stem in groups, yaml_file
    stages = text.split("Stages (+stage=NAME):")[1].split("Config groups")[0]
    assert sorted(line.split()[0] for line in stages.strip().splitlines()) == sorted(stage_names())
    assert "python -m workbench -m +stage=bc quant.param_bw=4,6,8" in text and "mnist_mobilenet" in text.split("== Config")[1]


def test_a_registered_model_name_is_checked_up_front():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=["export.register_as=team/model"])
    with pytest.raises(ConfigError, match=r"export.register_as='team/model' is not allowed: .*no '/'"):
        validate(cfg, stage_names())
