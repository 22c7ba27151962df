"""The task function in-process, on a composed config (lightning-hydra-template's pattern): no subprocess."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from helpers import TINY_EMBEDDED
from workbench.app import run
from workbench.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def _cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY_EMBEDDED, f"paths.outputs_dir={tmp_path}", *overrides])


def _runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("workbench").experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow  # trains a tiny model
def test_run_in_process_records_a_stage_and_a_pipeline(tmp_path, capsys):
    top1 = run(_cfg(tmp_path, "+stage=baseline"))
    (stage_run,) = _runs(tmp_path)
    assert stage_run.info.status == "FINISHED" and stage_run.data.tags["stage"] == "baseline"
    assert top1 == pytest.approx(stage_run.data.metrics["sim/top1"])
    run(_cfg(tmp_path, "pipeline.stages=[baseline,cle]"))
    parent, *children = _runs(tmp_path)[1:]
    assert [c.data.tags["stage"] for c in children] == ["baseline", "cle"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id and c.info.status == "FINISHED" for c in children)
    assert "best technique at W8A8" in capsys.readouterr().out  # the closing summary
