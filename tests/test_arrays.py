"""Data in the shapes users have: .npz arrays of any rank and dtype, through the command line."""

import os
import subprocess
import sys
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


def _kws(tmp_path) -> tuple[Path, Path]:
    """A keyword-spotting-shaped Conv1D classifier (49 frames × 10 coefficients), briefly trained, and its data."""
    rng = np.random.default_rng(0)
    patterns = rng.normal(size=(4, 49, 10)).astype(np.float32)
    y = rng.integers(0, 4, 320)
    x = patterns[y] + 0.5 * rng.normal(size=(320, 49, 10)).astype(np.float32)
    np.savez(tmp_path / "kws.npz", x=x, y=y)
    keras.utils.set_random_seed(0)
    i = keras.Input((49, 10))
    h = keras.layers.Conv1D(16, 3, name="conv1")(i)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(h))
    h = keras.layers.Conv1D(16, 3, activation="relu", name="conv2")(h)
    model = keras.Model(i, keras.layers.Dense(4, name="head")(keras.layers.GlobalAveragePooling1D()(h)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=15, verbose=0)
    model.save(tmp_path / "kws.keras")
    return tmp_path / "kws.keras", tmp_path / "kws.npz"


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
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_PARENT_RUN_ID", "HYDRA_FULL_ERROR")}
    cmd = [sys.executable, "-m", "workbench", *args, f"paths.outputs_dir={tmp_path}", "quant.calibration_samples=64", "threads=1"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # subprocesses
def test_non_image_models_run_from_the_command_line_with_their_arrays(tmp_path):
    """A Conv1D keyword spotter through cle and qat, a text model on token ids through the baseline: no image in sight."""
    model, data = _kws(tmp_path)
    common = ["model=keras_file", f"model.path={model}", "dataset=arrays", f"dataset.path={data}"]
    for stage in ("cle", "qat"):
        proc = _workbench(tmp_path, f"+stage={stage}", *common, "qat.epochs=1")
        assert proc.returncode == 0, proc.stderr[-3000:]
    text_model, text_data = _text(tmp_path)
    proc = _workbench(
        tmp_path, "+stage=baseline", "model=keras_file", f"model.path={text_model}", "dataset=arrays", f"dataset.path={text_data}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    by_stage = {r.data.tags["stage"]: r for r in client.search_runs(["1"])}
    assert sorted(by_stage) == ["baseline", "cle", "qat"] and all(r.info.status == "FINISHED" for r in by_stage.values())
    for stage in ("cle", "qat"):  # the learnable keyword set survives W8A8
        metrics = by_stage[stage].data.metrics
        assert metrics["fp32/top1"] > 0.9 and metrics["sim/top1"] > metrics["fp32/top1"] - 0.05, metrics
    for run in by_stage.values():  # every weight quantized: Conv1D kernels, the embedding table; nothing float
        assert (run.data.metrics["sim/weights_quantized"], run.data.metrics["sim/float_layers"]) == (1.0, 0.0)
    text = by_stage["baseline"]
    coverage = client.download_artifacts(text.info.run_id, "coverage.csv", str(tmp_path))
    assert "int32 input (e.g. token ids): not quantized" in Path(coverage).read_text()
