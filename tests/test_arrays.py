"""Data in the shapes users have: .npz arrays of any rank and dtype, through the command line."""

from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from workbench.config.probes import npz_array_shape, npz_problem
from workbench.data.arrays import load_arrays

ROOT = Path(__file__).resolve().parents[1]


def test_an_npz_of_x_and_y_is_split_with_the_seed_and_keeps_integer_inputs(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ids.npz", x=rng.integers(0, 50, (100, 20)), y=rng.integers(0, 3, 100))
    data = load_arrays(str(tmp_path / "ids.npz"), validation_split=0.25, seed=1, batch_size=10)
    assert (data.num_train, data.num_val, data.num_classes) == (75, 25, 3)
    x, _ = next(iter(data.val_batches()))
    assert x.dtype.name == "int32" and tuple(x.shape) == (10, 20)  # token ids stay integers
    again = load_arrays(str(tmp_path / "ids.npz"), validation_split=0.25, seed=1)
    assert np.array_equal(data.train_arrays[0], again.train_arrays[0])  # the split follows the seed
    np.savez(
        tmp_path / "audio.npz",
        x_train=rng.normal(size=(8, 49, 10)),
        y_train=np.arange(8) % 4,
        x_val=rng.normal(size=(4, 49, 10)),
        y_val=np.arange(4),
    )
    audio = load_arrays(str(tmp_path / "audio.npz"))
    assert (audio.num_train, audio.num_val, audio.num_classes) == (8, 4, 4) and audio.train_arrays[0].dtype == np.float32
    np.savez(tmp_path / "val.npz", x=rng.normal(size=(6, 49, 10)), y=np.arange(6) % 4)
    split = load_arrays(str(tmp_path / "audio.npz").replace("audio", "ids"), validation_path=str(tmp_path / "val.npz"))
    assert (split.num_train, split.num_val) == (100, 6)


def test_npz_probes_name_what_is_missing_without_reading_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", inputs=np.zeros((3, 49, 10)), labels=np.zeros(3))
    assert npz_problem(str(tmp_path / "a.npz")) == "has the arrays inputs, labels; it needs x, y or x_train, y_train, x_val, y_val"
    assert npz_problem(str(tmp_path / "a.npy")).startswith("is not allowed: use an .npz file")
    assert npz_problem(str(tmp_path / "none.npz")) == "does not exist"
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 49, 10), np.float32), y=np.zeros(3))
    assert npz_problem(str(tmp_path / "b.npz")) is None and npz_array_shape(str(tmp_path / "b.npz")) == (49, 10)


def _text(tmp_path) -> tuple[Path, Path]:
    """A text classifier on int32 token ids (Embedding → Conv1D), and its data."""
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "text.npz", x=rng.integers(0, 50, (160, 20)).astype(np.int32), y=rng.integers(0, 3, 160))
    keras.utils.set_random_seed(0)
    i = keras.Input((20,), dtype="int32")
    h = keras.layers.Embedding(50, 8, name="embed")(i)
    h = keras.layers.Conv1D(8, 3, activation="relu", name="conv")(h)
    keras.Model(i, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(h))).save(tmp_path / "text.keras")
    return tmp_path / "text.keras", tmp_path / "text.npz"


def _workbench(tmp_path, *args):
    """The task function on the composed config, as ``python -m workbench ARGS`` runs it (in this process)."""
    from hydra import compose, initialize_config_dir

    from workbench.app import run
    from workbench.config.schema import register_configs

    register_configs()
    overrides = [*args, f"paths.outputs_dir={tmp_path}", "quant.calibration_samples=64", "threads=1"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return run(compose("config", overrides=overrides))


def _two_inputs_and_two_outputs(tmp_path) -> tuple[Path, Path, Path, Path]:
    """A two-input model (audio frames and a metadata vector, by input name) and a two-output one (classes and a
    regression head), briefly trained, with their .npz files (x.audio and x.meta for the first)."""
    rng = np.random.default_rng(2)
    patterns = rng.normal(size=(4, 49, 10)).astype(np.float32)
    y = rng.integers(0, 4, 256)
    audio = patterns[y] + 0.5 * rng.normal(size=(256, 49, 10)).astype(np.float32)
    meta = (np.eye(4)[y] + 0.3 * rng.normal(size=(256, 4))).astype(np.float32)
    np.savez(tmp_path / "two_inputs.npz", **{"x.audio": audio, "x.meta": meta, "y": y})
    np.savez(tmp_path / "audio.npz", x=audio, y=y)
    keras.utils.set_random_seed(0)
    a, m = keras.Input((49, 10), name="audio"), keras.Input((4,), name="meta")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(16, 3, activation="relu", name="conv")(a))
    g = keras.layers.Dense(8, activation="relu", name="meta_dense")(m)
    two_in = keras.Model([a, m], keras.layers.Dense(4, name="head")(keras.layers.Concatenate()([h, g])))
    two_in.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    two_in.fit({"audio": audio, "meta": meta}, y, epochs=15, verbose=0)
    two_in.save(tmp_path / "two_inputs.keras")
    i = keras.Input((49, 10))
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(16, 3, activation="relu", name="conv")(i))
    two_out = keras.Model(i, [keras.layers.Dense(4, name="classes")(h), keras.layers.Dense(1, name="score")(h)])
    two_out.compile("adam", [keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"])
    two_out.fit(audio, [y, (y / 4).astype(np.float32)], epochs=15, verbose=0)
    two_out.save(tmp_path / "two_outputs.keras")
    return tmp_path / "two_inputs.keras", tmp_path / "two_inputs.npz", tmp_path / "two_outputs.keras", tmp_path / "audio.npz"


@pytest.mark.slow  # trains and runs four pipelines
def test_non_image_models_run_from_the_command_line_with_their_arrays(tmp_path):
    """The embedded keyword spotter (Conv1D on generated 49×10 frames) through every stage; the users' .keras and .npz
    files through cle and qat (a two-input and a two-output model; a text model on token ids also its baseline).
    One pipeline each. No image in sight."""
    text, text_data = _text(tmp_path)
    two_in, two_in_data, two_out, audio = _two_inputs_and_two_outputs(tmp_path)
    cases = {
        "text": (text, text_data, "[baseline,cle,qat]"),
        "two_inputs": (two_in, two_in_data, "[cle,qat]"),
        "two_outputs": (two_out, audio, "[cle,qat]"),
    }
    for name, (model, data, stages) in cases.items():
        args = [f"pipeline.stages={stages}", "model=keras_file", f"model.path={model}", f"model.name={name}", "qat.epochs=1"]
        _workbench(tmp_path, *args, "dataset=arrays", f"dataset.path={data}")
    embedded = ["model=kws_conv1d", "model.epochs=6", "dataset=keywords", "dataset.num_train=800", "dataset.num_val=200"]
    every = "pipeline.stages=[baseline,cle,bc,adaround,qat]"
    _workbench(tmp_path, every, *embedded, "dataset.noise=0.6", "adaround.num_iterations=30", "qat.epochs=1")
    cases["kws_conv1d"] = (None, None, every.split("=", 1)[1])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = {(r.data.tags["model"], r.data.tags["stage"]): r for r in client.search_runs(["1"]) if "stage" in r.data.tags}
    assert sorted(runs) == sorted((name, stage) for name, (_, _, stages) in cases.items() for stage in stages[1:-1].split(","))
    for (name, stage), run in runs.items():
        metrics = run.data.metrics
        assert run.info.status == "FINISHED", (name, stage)
        # every weight quantized (Conv1D kernels, the embedding table, both heads): nothing float
        assert (metrics["sim/weights_quantized"], metrics["sim/float_layers"]) == (1.0, 0.0), (name, stage)
        if name != "text":  # the learnable keyword sets survive W8A8
            assert metrics["fp32/top1"] > 0.9 and metrics["sim/top1"] > metrics["fp32/top1"] - 0.05, (name, stage, metrics)
    coverage = client.download_artifacts(runs[("text", "baseline")].info.run_id, "coverage.csv", str(tmp_path))
    assert "int32 input (e.g. token ids): not quantized" in Path(coverage).read_text()
    assert "top-1 reads 'classes'" in runs[("two_outputs", "cle")].data.tags["eval.output"]


def test_a_users_function_gives_the_data_and_a_missing_module_is_one_line():
    from hydra import compose, initialize_config_dir

    from workbench.config.schema import register_configs
    from workbench.config.validate import ConfigError, validate
    from workbench.registry import stage_names
    from workbench.stages.setup import build_data

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        chosen = ["dataset=callable", "dataset.function=helpers:tf_splits", "dataset.num_classes=3", "+dataset.arguments.n=24"]
        good = compose("config", chosen)
        missing = compose("config", ["dataset=callable", "dataset.function=nowhere.at_all:splits", "dataset.num_classes=3"])
        unset = compose("config", ["dataset=callable", "dataset.num_classes=3"])
    config = validate(good, stage_names())
    data = build_data(config)
    x, y = next(iter(data.val_batches()))
    assert tuple(x.shape) == (12, 5, 3) and data.num_classes == 3 and data.source == "helpers:tf_splits(n=24)"
    with pytest.raises(ConfigError, match=r"dataset.function='nowhere.at_all:splits': no module named 'nowhere.at_all'"):
        validate(missing, stage_names())
    with pytest.raises(ConfigError, match=r"dataset.function is missing: give package.module:name of a function"):
        validate(unset, stage_names())
