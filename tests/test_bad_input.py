"""Bad input, tried as a user would: one clear last line naming the culprit, quickly, and no FINISHED run."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import SMALL_SYNTHETIC, SubclassedNet, small_convnet
from workbench.data.imagenet import encode_example

pytestmark = pytest.mark.slow  # subprocesses: left out of the fast loop

ROOT = Path(__file__).resolve().parents[1]
SMALL = SMALL_SYNTHETIC


@keras.saving.register_keras_serializable(package="workbench_tests")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


def _run(tmp_path, *overrides):
    """The command line on ``overrides`` with TensorFlow (and Keras) made unimportable: every check must answer
    before either is imported, so an import would end the run with another error than the case's."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_PARENT_RUN_ID", "HYDRA_FULL_ERROR")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    blocked = tmp_path / "no_tensorflow"
    for package in ("tensorflow", "keras"):
        (blocked / package).mkdir(parents=True, exist_ok=True)
        (blocked / package / "__init__.py").write_text(f"raise ImportError('{package} imported before the checks')\n")
    env["PYTHONPATH"] = os.pathsep.join([str(blocked), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "+stage=baseline", *overrides, f"paths.outputs_dir={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc


def _statuses(tmp_path):
    db = tmp_path / "mlflow.db"
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")  # the store still opens
    exp = client.get_experiment_by_name("workbench")
    return [r.info.status for r in client.search_runs([exp.experiment_id])] if exp else []


def _files(tmp_path):
    garbage = tmp_path / "data_garbage"
    garbage.mkdir()
    (garbage / "valid-0").write_bytes(os.urandom(256))
    unlabelled = tmp_path / "data_unlabelled"
    unlabelled.mkdir()
    import tensorflow as tf

    jpeg = tf.io.encode_jpeg(tf.zeros((8, 8, 3), tf.uint8)).numpy()
    with tf.io.TFRecordWriter(str(unlabelled / "valid-0")) as w:
        example = tf.train.Example(
            features=tf.train.Features(feature={"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg]))})
        )
        w.write(example.SerializeToString())
    good = tmp_path / "data_good"
    good.mkdir()
    with tf.io.TFRecordWriter(str(good / "valid-0")) as w:
        w.write(encode_example(jpeg, 1))
    small_convnet().save(tmp_path / "good.keras")
    (tmp_path / "text.keras").write_text("not a model")
    i = keras.Input((8, 8, 3))
    keras.Model(i, keras.layers.Dense(4)(keras.layers.Flatten()(Doubler()(i)))).save(tmp_path / "custom.keras")
    with zipfile.ZipFile(tmp_path / "custom.keras") as z:  # the file names a registered class; unregister it
        parts = {n: z.read(n) for n in z.namelist()}
    parts["config.json"] = (
        parts["config.json"].replace(b"workbench_tests>Doubler", b"elsewhere>Doubler").replace(b'"workbench_tests"', b'"elsewhere"')
    )
    with zipfile.ZipFile(tmp_path / "custom.keras", "w") as z:
        for n, b in parts.items():
            z.writestr(n, b)
    flat = keras.Input((64,))
    keras.Model(flat, keras.layers.Dense(4)(flat)).save(tmp_path / "flat.keras")
    np.savez(tmp_path / "frames.npz", x=np.zeros((8, 49, 10), np.float32), y=np.arange(8) % 4)
    np.savez(tmp_path / "unnamed.npz", np.zeros((8, 49, 10), np.float32))
    broken = small_convnet()
    kernel = broken.get_layer("conv").kernel
    kernel.assign(keras.ops.where(keras.ops.arange(kernel.shape[-1]) == 0, float("nan"), kernel))
    broken.save(tmp_path / "nan_weight.keras")
    sub = SubclassedNet()
    sub(keras.ops.zeros((1, 8, 8, 3)))
    sub.save(tmp_path / "subclassed.keras")
    (tmp_path / "a_file").write_text("x")


CASES = {
    # name: (overrides, expected exit code, text the last line must contain)
    "garbage tfrecords": (
        [
            "model=keras_file",
            "model.path={tmp}/good.keras",
            "dataset=imagenet",
            "dataset.path={tmp}/data_garbage",
            "dataset.image_size=8",
            "dataset.resize_size=8",
            "dataset.num_classes=4",
        ],
        2,
        "data_garbage/valid-0 is not a TFRecord file",
    ),
    "records without labels": (
        [
            "model=keras_file",
            "model.path={tmp}/good.keras",
            "dataset=imagenet",
            "dataset.path={tmp}/data_unlabelled",
            "dataset.image_size=8",
            "dataset.resize_size=8",
        ],
        2,
        "data_unlabelled/valid-0 has records without the required feature(s) image/class/label",
    ),
    "default model on 3-channel data": (
        ["dataset=imagenet", "dataset.path={tmp}/data_good"],
        2,
        "model=mnist_mobilenet takes 1-channel images",
    ),
    "text file named .keras": (["model=keras_file", "model.path={tmp}/text.keras", *SMALL], 2, "text.keras' is not a Keras 3 model file"),
    "unregistered custom layer": (
        ["model=keras_file", "model.path={tmp}/custom.keras", *SMALL],
        2,
        "custom class 'Doubler', which is not registered",
    ),
    "subclassed model": (
        [
            "model=keras_file",
            "model.path={tmp}/subclassed.keras",
            "+model.custom_objects.SubclassedNet=tests.helpers:SubclassedNet",
            *SMALL,
        ],
        2,
        "holds a subclassed model (SubclassedNet)",
    ),
    "flat-input model on images": (
        ["model=keras_file", "model.path={tmp}/flat.keras", *SMALL],
        2,
        "the model takes inputs of shape (64,) but the dataset gives (8, 8, 3)",
    ),
    "arrays of another shape": (
        ["model=keras_file", "model.path={tmp}/flat.keras", "dataset=arrays", "dataset.path={tmp}/frames.npz"],
        2,
        "the model takes inputs of shape (64,) but the dataset gives (49, 10)",
    ),
    "arrays without names": (
        ["dataset=arrays", "dataset.path={tmp}/unnamed.npz"],
        2,
        "unnamed.npz' has the arrays arr_0; it needs x, y or x_train, y_train, x_val, y_val",
    ),
    "a NaN weight": (
        ["model=keras_file", "model.path={tmp}/nan_weight.keras", *SMALL],
        2,
        "has non-finite weights (layers/conv2d/vars/0: 27 of 216 values NaN or infinite, in model.weights.h5",
    ),
    "tracking server not listening": (["tracking.uri=http://127.0.0.1:1"], 2, "tracking.uri='http://127.0.0.1:1' is not reachable"),
    "database server not listening": (
        ["tracking.uri=postgresql://mlflow@127.0.0.1:1/mlflow"],
        2,
        "tracking.uri='postgresql://mlflow@127.0.0.1:1/mlflow': nothing answers at 127.0.0.1:1",
    ),
    "tracking path under a file": (["tracking.uri=sqlite:///{tmp}/a_file/mlflow.db"], 2, "a_file is a file, not a folder"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    _files(tmp)
    return tmp


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_line(case, files, tmp_path):
    overrides, code, culprit = CASES[case]
    proc = _run(tmp_path, *(o.format(tmp=files) for o in overrides))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == code, proc.stderr[-2000:]
    assert culprit in last and last.startswith("workbench: error: "), last
    assert "Traceback" not in proc.stderr  # the traceback goes to the run, not the console
    assert "FINISHED" not in _statuses(tmp_path)
    assert "imported before the checks" not in proc.stderr  # every probe runs before TensorFlow is imported


@pytest.mark.parametrize("flags", [[], ["-m"]])
def test_an_outputs_folder_that_cannot_be_made_is_one_line(flags, files):
    # Hydra would make its run (or sweep) folder below it first, and print a pathlib traceback
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    target = files / "a_file" / "outputs"
    cmd = [sys.executable, "-m", "workbench", *flags, "+stage=baseline", f"paths.outputs_dir={target}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"workbench: error: paths.outputs_dir={target} cannot be used: Not a directory; give a folder you can write", last
