"""Tasks beyond one image classifier, through the task function (``app.run`` on a composed config, as the command
line runs it): the embedded segmentation set through every stage with mean IoU, and the users' own .npz data and
.keras files (raw audio, a regression head, a U-Net, a model given with no labels at all)."""

from pathlib import Path

import keras
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from workbench.app import run
from workbench.config.schema import register_configs
from workbench.config.validate import ConfigError

ROOT = Path(__file__).resolve().parents[1]
register_configs()
FAST = ["quant.calibration_samples=64", "tracking.sqnr_samples=0", "threads=1", "qat.epochs=1"]
FAST += ["bc.num_quant_samples=64", "bc.num_bias_correct_samples=64", "adaround.num_iterations=20"]


def _run(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return run(compose("config", overrides=[f"paths.outputs_dir={tmp_path}", *FAST, *overrides]))


def _stage_runs(tmp_path) -> dict:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    found = client.search_runs([client.get_experiment_by_name("workbench").experiment_id], order_by=["attributes.start_time ASC"])
    return {(r.data.tags["model"], r.data.tags["stage"]): r for r in found if "stage" in r.data.tags}


@pytest.mark.slow  # trains the embedded U-Net
def test_the_embedded_segmentation_task_runs_every_stage_with_miou_and_paired_verdicts(tmp_path, capsys):
    stages = ["baseline", "cle", "bc", "adaround", "qat"]
    embedded = ["task=segmentation", "dataset=digit_canvas", "dataset.num_train=1000", "dataset.num_val=100", "model=digit_segmenter"]
    _run(tmp_path, f"pipeline.stages=[{','.join(stages)}]", *embedded)
    runs = _stage_runs(tmp_path)
    assert sorted(stage for _, stage in runs) == sorted(stages)
    for (_, stage), r in runs.items():
        m, tags = r.data.metrics, r.data.tags
        assert r.info.status == "FINISHED" and tags["task.metric"] == "miou", stage
        assert m["sim/miou_ci_low"] <= m["sim/miou"] <= m["sim/miou_ci_high"] and m["fp32/miou"] > 0.3, (stage, m)  # background alone: 1/11
        assert "pixel_accuracy" in " ".join(m) and "sim/top1" not in m  # no top-1 of a per-pixel model
        assert "paired bootstrap p =" in tags["mlflow.note.content"]  # the description's verdict against FP32
    assert runs[("digit_segmenter", "qat")].data.metrics["tflite/miou"] > 0.3  # the int8 model scored the same way
    out = capsys.readouterr().out
    assert "sim/miou" not in out and "sim miou" in out and "vs baseline, paired bootstrap p=" in out
    (report,) = Path(tmp_path, "reports").glob("pipeline-*/report.md")
    text = report.read_text()
    assert "### sim/miou by stage and setting (%, 95 % BCa bootstrap interval" in text and "paired bootstrap on the same samples" in text


def _audio(n: int = 240, length: int = 512, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Raw 1-channel waveforms: one tone per class, random phase and gain, noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.arange(length)[None, :]
    x = rng.uniform(0.5, 1.0, (n, 1)) * np.sin(2 * np.pi * (0.02 + 0.03 * y[:, None]) * t + rng.uniform(0, 6.3, (n, 1)))
    return (x + 0.3 * rng.standard_normal(x.shape))[..., None].astype(np.float32), y


def _conv1d(length: int, outputs: int) -> keras.Model:
    i = keras.Input((length, 1), name="waveform")
    h = keras.layers.Conv1D(8, 9, strides=4, activation="relu", name="conv1")(i)
    h = keras.layers.Conv1D(16, 5, strides=2, activation="relu", name="conv2")(h)
    return keras.Model(i, keras.layers.Dense(outputs, name="head")(keras.layers.GlobalAveragePooling1D()(h)))


def _users_files(tmp_path) -> dict:
    """Each case's model file, data file and overrides: a keyword spotter on cepstral frames, a raw-audio classifier,
    the same waveforms with a float target (task=regression), a U-Net on per-pixel labels (task=segmentation), the
    classifier with no labels (task=fidelity) and with a metric of the user's own (task=custom)."""
    keras.utils.set_random_seed(0)
    x, y = _audio()
    np.savez(tmp_path / "audio.npz", x=x, y=y)
    np.savez(tmp_path / "unlabelled.npz", x=x[:128])  # no y at all
    classifier = _conv1d(x.shape[1], 3)
    classifier.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(x, y, epochs=12, verbose=0)
    classifier.save(tmp_path / "audio.keras")
    target = (y / 2.0 + 0.05 * np.random.default_rng(0).standard_normal(len(y))).astype(np.float32)
    np.savez(tmp_path / "loudness.npz", x=x, y=target[:, None])
    regressor = _conv1d(x.shape[1], 1)
    regressor.compile(keras.optimizers.Adam(0.01), "mse")
    regressor.fit(x, target[:, None], epochs=12, verbose=0)
    regressor.save(tmp_path / "loudness.keras")
    from workbench.data.keywords import make_keywords
    from workbench.models.kws import build_kws_conv1d

    keywords = make_keywords(num_train=400, num_val=100, noise=0.6)
    frames, labels = keywords.train_arrays
    np.savez(tmp_path / "kws.npz", x=frames, y=labels)
    kws = build_kws_conv1d(width=16)
    kws.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kws.fit(frames, labels, epochs=10, verbose=0)
    kws.save(tmp_path / "kws.keras")
    rng = np.random.default_rng(1)
    masks = (rng.uniform(size=(160, 16, 16)) > 0.6).astype(np.int32)
    images = (masks[..., None] * 2.0 - 1.0 + 0.5 * rng.standard_normal((160, 16, 16, 1))).astype(np.float32)
    np.savez(tmp_path / "masks.npz", x=images, y=masks)
    i = keras.Input((16, 16, 1))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="enc")(i)
    b = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="down")(a)
    u = keras.layers.Conv2DTranspose(8, 2, strides=2, name="up")(b)
    unet = keras.Model(i, keras.layers.Conv2D(2, 1, name="classes")(keras.layers.Concatenate()([a, u])))
    unet.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    unet.fit(images, masks, epochs=15, verbose=0)
    unet.save(tmp_path / "unet.keras")
    return {
        "kws_frames": ("kws.keras", "kws.npz", "[cle,qat]", []),
        "raw_audio": ("audio.keras", "audio.npz", "[cle,qat]", []),
        "regression": ("loudness.keras", "loudness.npz", "[baseline,cle,qat]", ["task=regression"]),
        "unet": ("unet.keras", "masks.npz", "[cle,qat]", ["task=segmentation"]),
        "unlabelled": ("audio.keras", "unlabelled.npz", "[baseline,bc]", ["task=fidelity"]),
        "own_metric": ("audio.keras", "audio.npz", "[baseline]", ["task=custom", "task.score=helpers:top2", "task.metric_name=top2"]),
    }


@pytest.mark.slow  # trains four small models and runs their pipelines
def test_users_files_of_other_shapes_and_tasks_run_with_their_metric(tmp_path):
    cases = _users_files(tmp_path)
    for name, (model, data, stages, task) in cases.items():
        args = ["model=keras_file", f"model.path={tmp_path / model}", f"model.name={name}", "dataset=arrays"]
        _run(tmp_path, f"pipeline.stages={stages}", *args, f"dataset.path={tmp_path / data}", *task)
    runs = _stage_runs(tmp_path)
    expected = {(name, stage) for name, (_, _, stages, _) in cases.items() for stage in stages[1:-1].split(",")}
    assert set(runs) == expected
    assert all(r.info.status == "FINISHED" for r in runs.values())
    metric = {name: run.data.metrics for (name, stage), run in runs.items() if stage in ("qat", "bc")}
    for name in ("kws_frames", "raw_audio"):
        assert metric[name]["fp32/top1"] > 0.85 and metric[name]["sim/top1"] > metric[name]["fp32/top1"] - 0.05, name
    regression = metric["regression"]
    assert regression["sim/mae"] < 0.2 and regression["sim/mae_ci_low"] <= regression["sim/mae"] <= regression["sim/rmse"] + 1
    assert metric["unet"]["sim/miou"] > 0.7
    fidelity = metric["unlabelled"]
    assert 20 < fidelity["sim/sqnr_db"] < 120 and "fp32/sqnr_db" not in fidelity and fidelity["eval/samples"] == 26
    assert runs[("unlabelled", "bc")].data.tags["task"] == "fidelity"
    own = runs[("own_metric", "baseline")].data.metrics
    assert own["sim/top2"] >= metric["raw_audio"]["sim/top1"] - 0.05 and own["sim/top2_ci_low"] <= own["sim/top2"]
    # the regression report names the best technique by the lowest MAE (lower is better)
    (report,) = [p for p in Path(tmp_path, "reports").glob("pipeline-*/report.md") if "sim/mae" in p.read_text()]
    assert "lower is better" in report.read_text()


def test_a_task_that_cannot_train_or_rank_is_refused_before_any_work(tmp_path):
    cases = {
        (
            "+stage=qat",
            "task=fidelity",
        ): "task=fidelity: +stage=qat fine-tunes on a loss and this task has none: it has no labels to train on",
        ("task=fidelity",): "task=fidelity: +stage=qat fine-tunes on a loss",  # the default pipeline ends in qat
        ("+stage=analyze", "task=regression"): "+stage=analyze ranks layers by their top-1: it takes task=classification",
        ("task=regression", "pipeline.stages=[baseline,mixed_precision]"): "+stage=mixed_precision ranks layers by their top-1",
        ("+stage=cle", "task=custom", "task.score=numpy:mean", "task.metric_name=1x"): "task.metric_name='1x' is not allowed",
        ("+stage=cle", "task=custom", "task.score=nosuchmodule:f"): "task.score='nosuchmodule:f'",
        ("+stage=cle", "task=custom"): "task.score is missing: give package.module:name of a function",
        ("+stage=cle", "task=segmentation", "task.num_classes=1"): "task.num_classes=1 is not allowed",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError) as err:
            _run(tmp_path, *overrides)
        assert message in str(err.value), (overrides, str(err.value))
    assert not Path(tmp_path, "mlflow.db").exists()  # refused before tracking, and before TensorFlow
