"""Beyond one machine, for real: a sweep against an MLflow server on PostgreSQL, and a sweep on Ray.

Each test starts its services (tests/services.py), runs ``python -m workbench -m ...`` as a user would,
reads every run, metric and artifact back through the server, and stops and removes what it started.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from services import mlflow_server, postgres_bin, postgres_cluster, ray_cluster

from helpers import TINY_EMBEDDED

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TINY = ["+stage=baseline", *TINY_EMBEDDED]


def _sweep(outputs: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_PARENT_RUN_ID")}
    cmd = [sys.executable, "-m", "workbench", "-m", *TINY, *overrides, f"paths.outputs_dir={outputs}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _sweep_runs(client: MlflowClient, jobs: int):
    """The sweep's parent and its children, each FINISHED, read back through the client."""
    experiment = client.get_experiment_by_name("workbench")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "stage" not in r.data.tags]
    children = [r for r in runs if "stage" in r.data.tags]
    assert len(parents) == 1 and len(children) == jobs, [(r.info.run_name, r.info.status) for r in runs]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep · +stage=baseline")
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
    return parent, children


def _read_back(client: MlflowClient, parent, children, tmp: Path) -> None:
    """Every child's metrics, datasets and artifacts, and the parent's report, come back intact."""
    for child in children:
        m = child.data.metrics
        assert {"fp32/top1", "sim/top1", "sim/top1_ci_low", "sim/top1_ci_high"} <= set(m)
        assert m["sim/top1_ci_low"] <= m["sim/top1"] <= m["sim/top1_ci_high"]
        assert {i.tags[0].value for i in child.inputs.dataset_inputs} == {"validation", "calibration"}
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "layers.csv", "predictions.csv", "encodings"} <= names
        predictions = pd.read_csv(client.download_artifacts(child.info.run_id, "predictions.csv", str(tmp)))
        assert len(predictions) == 128 and (predictions["sim"] == predictions["label"]).mean() == pytest.approx(m["sim/top1"])
        encodings = {a.path for a in client.list_artifacts(child.info.run_id, "encodings")}
        assert "encodings/model.encodings.json" in encodings
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "report/comparison.csv", str(tmp)))
    by_setting = {c.data.tags["param_bw"]: c.data.metrics["sim/top1"] for c in children}
    assert dict(zip(table["setting"], table["sim/top1"])) == {f"W{bw}A8": top1 for bw, top1 in by_setting.items()}


@pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL's server is not installed (Debian: postgresql-15)")
def test_parallel_sweep_against_a_postgresql_backed_tracking_server(tmp_path):
    clusters_before = set(Path(tempfile.gettempdir()).glob("wb-pg-*"))
    with postgres_cluster() as database, mlflow_server(database, tmp_path / "artifacts", tmp_path / "server.log") as uri:
        proc = _sweep(
            tmp_path / "outputs", "quant.param_bw=4,6,8", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3", f"tracking.uri={uri}"
        )  # three jobs writing to the server at once (a fourth on 2 cores only added a minute)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        client = MlflowClient(uri)
        parent, children = _sweep_runs(client, 3)
        _read_back(client, parent, children, tmp_path / "download")
        # the artifacts went through the server's proxy into its store, not into the job's outputs folder
        assert any((tmp_path / "artifacts").rglob("predictions.csv")) and not (tmp_path / "outputs" / "mlartifacts").exists()
        assert client.get_experiment_by_name("workbench").artifact_location.startswith("mlflow-artifacts:")
    assert set(Path(tempfile.gettempdir()).glob("wb-pg-*")) <= clusters_before, "the PostgreSQL cluster's folder was not removed"


def test_sweep_on_a_local_ray_cluster_under_one_parent(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        with ray_cluster(ray_tmp) as address:
            proc = _sweep(
                tmp_path / "outputs",
                "quant.param_bw=4,8",
                "hydra/launcher=ray",
                f"+hydra.launcher.ray.init.address={address}",
                # the launcher sets a local object store size unless one is given; a running cluster refuses any
                "+hydra.launcher.ray.init.object_store_memory=null",
                "+hydra.launcher.ray.remote.num_cpus=1",
            )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
        parent, children = _sweep_runs(client, 2)
        _read_back(client, parent, children, tmp_path / "download")
        assert {c.data.tags["pid"] for c in children}.isdisjoint({parent.data.tags["pid"]})  # run by Ray's workers
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
