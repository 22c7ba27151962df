"""``python -m workbench`` in a subprocess against a temporary MLflow store, read back."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from helpers import TINY_EMBEDDED
from workbench.quantsim.fused import kernel_name

pytestmark = pytest.mark.slow  # subprocesses: left out of the fast loop

ROOT = Path(__file__).resolve().parents[1]
TINY = TINY_EMBEDDED


def _run(tmp_path, *overrides):
    # TensorFlow's C++ log left at its default: the console must stay clean of it by itself
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run(
        [sys.executable, "-m", "workbench", *overrides, f"paths.outputs_dir={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("workbench")
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def test_baseline_run_is_recorded(tmp_path):
    proc = _run(tmp_path, "+stage=baseline", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = _runs(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in (
        "fp32/top1",
        "sim/top1",
        "sim/top1_ci_low",
        "sim/top1_ci_high",
        "fp32/top1_ci_low",
        "time/fp32_eval_s",
        "time/calibration_s",
        "time/sim_eval_s",
        "time/model_s",
    ):
        assert key in m, key
    assert 0.0 <= m["sim/top1"] <= 1.0 and m["sim/output_quantizers"] > 5
    tags = run.data.tags
    assert tags["stage"] == "baseline" and tags["dataset"] == "synthetic" and tags["param_bw"] == "8"
    assert "model.epochs=2" in tags["overrides"]
    assert run.data.params["quant.scheme"] == "tf" and run.data.params["model.width"] == "8"

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "layers.csv", "encodings", "predictions.csv"} <= artifacts
    assert m["sim/top1_ci_low"] <= m["sim/top1"] <= m["sim/top1_ci_high"]
    assert tags["deployable"] == "true" and m["transform/bns_folded"] > 5  # the baseline is the folded model
    # the closing summary says what the numbers are and where to look
    assert "sim top-1" in proc.stdout and "(reference)" in proc.stdout and f"run: {run.info.run_id}" in proc.stdout
    assert "open: mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    # a quiet console: no TensorFlow C++ log line, few lines; the job's log file has everything
    console = proc.stdout + proc.stderr
    assert not re.search(r"^[IWEF]\d{4} ", console, re.M) and "TensorSpec" not in console, console[:3000]
    assert len(console.splitlines()) < 25, console
    log_file = next(tmp_path.glob("runs/*/*/workbench.log")).read_text()
    assert re.search(r"^[IWEF]\d{4} ", log_file, re.M) and "sim top-1" in log_file
    local = client.download_artifacts(run.info.run_id, "layers.csv", str(tmp_path))
    table = pd.read_csv(local)
    assert {"layer", "type", "param_scale", "output_scale", "sqnr_db"} <= set(table.columns)
    assert table["sqnr_db"].notna().sum() > 5
    enc = client.download_artifacts(run.info.run_id, "encodings/model.encodings", str(tmp_path))
    assert '"version": "0.6.1"' in Path(enc).read_text()
    # what the MLflow UI shows: a name that says what the run is, its datasets, a Markdown description
    assert run.info.run_name == "baseline · mnist_mobilenet · W8A8 · tf/tf"
    contexts = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(contexts) == {"validation", "calibration"}
    assert contexts["validation"].digest == tags["eval.digest"] and "128 images" in contexts["validation"].name
    assert "64 training images" in contexts["calibration"].name and "generated" in contexts["calibration"].source
    description = tags["mlflow.note.content"]
    assert f"| sim | {100 * m['sim/top1']:.1f} % | [{100 * m['sim/top1_ci_low']:.1f}, " in description
    assert "against FP32 on the same samples (exact McNemar p = " in description and "batch norms folded" in description
    assert tags["mlflow.source.name"] == "python -m workbench" and tags["mlflow.user"]  # the UI's Source and Created by
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
    # the summary's link opens the runs table with the workbench's view: columns that are this run's metrics and tags
    assert f"#/experiments/{run.info.experiment_id}/runs?viewStateShareKey=workbench" in proc.stdout
    view = json.loads(experiment.tags["mlflow.sharedViewState.workbench"])
    columns = [re.fullmatch(r"(metrics|tags|attributes)\.`(.+)`", c).groups() for c in view["selectedColumns"]]
    assert {k for kind, k in columns if kind == "metrics"} - {"tflite/top1"} <= set(m)  # tflite/top1: exporting stages
    assert {k for kind, k in columns if kind == "tags"} <= set(tags) and view["orderByKey"] == "attributes.start_time"
    assert tags["mlflow.runType"] == "evaluation"  # the UI expands a parent row over such runs
    encodings = {a.path for a in client.list_artifacts(run.info.run_id, "encodings")}
    assert "encodings/model.encodings.json" in encodings  # previewable in the UI

    # the trained model is cached: a CLE run loads it instead of training
    proc = _run(tmp_path, "+stage=cle", *TINY, "quant.param_bw=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loading cached model" in proc.stdout + proc.stderr
    _, runs = _runs(tmp_path)
    cle = runs[1]
    assert cle.data.tags["param_bw"] == "4" and cle.data.tags["stage"] == "cle" and cle.info.status == "FINISHED"
    m = cle.data.metrics
    assert m["transformed/max_abs_diff"] < 1e-3 and m["transform/bns_folded"] > 5 and m["transform/cls_sets"] >= 1
    assert abs(m["transformed/top1"] - m["fp32/top1"]) <= 1 / 128
    artifacts = {a.path for a in client.list_artifacts(cle.info.run_id)}
    assert {"channel_ranges.csv", "channel_ranges.png", "transform_report.json", "layers.csv"} <= artifacts


def test_failed_run_is_recorded_with_traceback(tmp_path):
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as z:  # a zip archive, as a .keras file is, but no model inside
        z.writestr("config.json", "{not json")
    proc = _run(tmp_path, "+stage=baseline", "model=keras_file", f"model.path={broken}", "dataset=synthetic")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"workbench: error: model.path='{broken}' could not be loaded")
    client, runs = _runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"traceback.txt", "config.yaml"} <= artifacts
    text = Path(client.download_artifacts(runs[0].info.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "Traceback" in text
    assert "time/data_s" in runs[0].data.metrics  # what was measured before the failure is kept


def test_pipeline_is_a_parent_run_with_a_child_per_stage_and_a_report(tmp_path):
    proc = _run(tmp_path, *TINY, "pipeline.stages=[baseline,cle,qat]", "qat.epochs=1", "export.register_as=tiny_int8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = _runs(tmp_path)
    parents = [r for r in runs if "stage" not in r.data.tags]
    children = [r for r in runs if "stage" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert [c.data.tags["stage"] for c in children] == ["baseline", "cle", "qat"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent and c.info.status == "FINISHED" for c in children)
    qat = children[2].data.metrics
    history = client.get_metric_history(children[2].info.run_id, "qat/loss")
    assert "tflite/top1" in qat and "fidelity/gap" in qat and [h.step for h in history] == [1]  # epoch 1, not step 0
    # the QAT model is an MLflow model (Keras flavor) carrying the int8 TFLite file and the encodings, registered
    qat_run = children[2]
    assert [o.model_id for o in qat_run.outputs.model_outputs]
    logged = client.get_logged_model(qat_run.outputs.model_outputs[0].model_id)
    assert logged.source_run_id == qat_run.info.run_id and logged.experiment_id == qat_run.info.experiment_id  # shown on the run page
    model_dir = Path(client.download_artifacts(qat_run.info.run_id, "export", str(tmp_path / "exp")))
    assert {"model_int8.tflite", "model.encodings"} <= {p.name for p in model_dir.iterdir()}
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    local = Path(mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(tmp_path / "logged")))
    files = {p.name for p in local.rglob("*")}
    assert {"MLmodel", "input_example.json", "model_int8.tflite", "model.encodings"} <= files, files
    assert "signature" in (local / "MLmodel").read_text()
    version = client.get_model_version("tiny_int8", "1")
    assert version.run_id == qat_run.info.run_id and version.tags["stage"] == "qat" and version.tags["param_bw"] == "8"
    assert float(version.tags["sim/top1"]) == pytest.approx(qat["sim/top1"], abs=1e-4) and "tflite/top1" in version.tags
    assert "sim/top1 by stage and setting" in parents[0].data.tags["mlflow.note.content"]  # the parent's description: the report
    assert parents[0].info.run_name.startswith("pipeline · mnist_mobilenet · W8A8")
    assert f"parent run: {parent}" in proc.stdout and "best technique at W8A8:" in proc.stdout
    report = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/comparison.csv", "report/sim_top1_by_stage.md", "report/accuracy_vs_bitwidth.png"} <= report
    table = pd.read_csv(client.download_artifacts(parent, "report/comparison.csv", str(tmp_path)))
    by_stage = dict(zip(table["stage"], table["sim/top1"]))
    for child in children:
        assert by_stage[child.data.tags["stage"]] == pytest.approx(child.data.metrics["sim/top1"])


def _digits_models(tmp_path):
    """A Sequential and its functional twin, a wrapper around a nested base (transfer learning) and its flat twin, saved."""
    import keras

    keras.utils.set_random_seed(0)
    seq = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    i = keras.Input((28, 28, 1))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(8, 3, name="c1")(i))
    base = keras.Model(i, keras.layers.Conv2D(8, 3, activation="relu", name="c2")(keras.layers.ReLU(name="r1")(x)), name="base")
    head = keras.layers.Dense(10, name="head")
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    outer = keras.Input((28, 28, 1))
    nested = keras.Model(outer, head(pool(base(outer, training=False))))
    flat = keras.Model(base.input, head(pool(base.output)))
    twin = keras.Model(seq.inputs, seq.outputs)  # the Sequential's functional twin (one-element lists, same layers)
    paths = {}
    for name, model in {"sequential": seq, "sequential_twin": twin, "nested": nested, "flat": flat}.items():
        paths[name] = str(tmp_path / f"{name}.keras")
        model.save(paths[name])
    return paths


def test_users_sequential_and_nested_models_run_whole_from_the_command_line(tmp_path):
    paths = _digits_models(tmp_path)
    small = ["quant.calibration_samples=64", "tracking.sqnr_samples=0"]
    figures = {}
    for name, path in paths.items():
        proc = _run(tmp_path / name, "+stage=cle", "model=keras_file", f"model.path={path}", *small)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _, runs = _runs(tmp_path / name)
        run = runs[-1]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["sim/weights_quantized"] == 1.0 and run.data.tags["coverage"] == "full"
        assert run.data.tags["sim.kernels"] == kernel_name()  # the form the sim ran as, on this machine
        figures[name] = (run.data.metrics["fp32/top1"], run.data.metrics["sim/top1"], run.data.metrics["sim/param_quantizers"])
        if name == "nested":
            assert "flattened 1 nested models into one graph: base" in proc.stdout + proc.stderr
    assert figures["nested"] == figures["flat"]  # the nested form is the flat network, quantized the same
    assert figures["sequential"] == figures["sequential_twin"]
    assert figures["sequential"][2] == 2 and figures["nested"][2] == 3  # every kernel, not the wrapper's only
