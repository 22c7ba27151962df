"""The embedded models ship their trained weights: every clone evaluates the same model."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from workbench.config.schema import register_configs
from workbench.config.validate import validate
from workbench.models import embedded, shipped
from workbench.registry import stage_names
from workbench.stages.setup import build_data, built_model

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def _build(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    config = validate(cfg, stage_names())
    return built_model(config, build_data(config), cache_dir=str(tmp_path))


class Trained(Exception):
    pass


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(embedded, "train_classifier", refuse)


@pytest.mark.parametrize("model", ["mnist_mobilenet", "mnist_mobilenet_v2"])
def test_the_embedded_models_load_their_shipped_weights_without_training(tmp_path, no_training, model):
    entry = shipped.manifest()[model]
    assert shipped.file_sha256(shipped.WEIGHTS_DIR / entry["file"]) == entry["sha256"]
    built = _build(tmp_path, f"model={model}")
    assert shipped.values_digest(built) == entry["digest"]  # the very model that was trained, on any machine
    assert not (tmp_path / "models").exists()  # nothing trained, nothing cached


def test_other_settings_are_trained_not_given_the_shipped_weights(tmp_path, no_training):
    with pytest.raises(Trained):
        _build(tmp_path, "model.epochs=3")
    with pytest.raises(Trained):
        _build(tmp_path, "seed=1")


def test_a_damaged_weights_file_is_trained_instead_with_a_warning(tmp_path, no_training, monkeypatch, caplog):
    copy = tmp_path / "weights"
    shutil.copytree(shipped.WEIGHTS_DIR, copy)
    with open(copy / "mnist_mobilenet.weights.h5", "r+b") as f:
        f.seek(4000)
        f.write(b"\xff" * 16)
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", copy)
    monkeypatch.setattr(shipped, "MANIFEST", copy / "manifest.json")
    with caplog.at_level("WARNING"), pytest.raises(Trained):
        _build(tmp_path)
    assert "shipped weights mnist_mobilenet.weights.h5 unusable (its SHA-256 does not match the manifest)" in caplog.text


@pytest.mark.slow
def test_retraining_the_default_reproduces_the_shipped_digest():
    """``python -m workbench.weights check``: bit for bit on the CPU and TensorFlow the manifest names."""
    entry = shipped.manifest()["mnist_mobilenet"]
    if entry["trained"] != shipped.machine():
        pytest.skip(f"the shipped weights were trained on {entry['trained']}; this machine is {shipped.machine()}")
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.weights", "check", "mnist_mobilenet"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and f"matches the shipped {entry['digest']}" in proc.stdout, proc.stdout + proc.stderr[-2000:]
