"""Sweeps in parallel processes under one parent run, failing jobs, and interrupted runs."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from helpers import SMALL_SYNTHETIC, small_convnet

pytestmark = pytest.mark.slow  # subprocesses: left out of the fast loop

ROOT = Path(__file__).resolve().parents[1]
SMALL = [*SMALL_SYNTHETIC, "model=keras_file"]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_PARENT_RUN_ID")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _models(tmp_path):
    good = tmp_path / "good.keras"
    small_convnet().save(good)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a model")
    return good, broken


def _joblib_sweep(tmp_path, n_jobs: int, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m workbench -m +stage=baseline`` on the small synthetic setting, joblib with ``n_jobs`` workers."""
    cmd = [sys.executable, "-m", "workbench", "-m", "+stage=baseline", *SMALL, *overrides]
    cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}", f"paths.outputs_dir={tmp_path}"]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)


def test_parallel_sweep_children_of_one_parent_with_a_failing_job(tmp_path):
    good, broken = _models(tmp_path)
    proc = _joblib_sweep(tmp_path, 4, f"model.path={good},{broken}", "quant.param_bw=4,8")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    parents = [r for r in runs if "stage" not in r.data.tags]
    children = [r for r in runs if "stage" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    parent = parents[0].info.run_id
    assert all(c.data.tags["mlflow.parentRunId"] == parent for c in children)
    # 4 jobs at once: each job's TensorFlow gets cores / 4 threads, not one pool per core
    assert {c.data.tags.get("tf.threads") for c in children if c.info.status == "FINISHED"} == {
        str(max(1, len(os.sched_getaffinity(0)) // 4))
    }
    status = sorted((c.data.params["model.path"] == str(good), c.info.status) for c in children)
    assert status == [(False, "FAILED"), (False, "FAILED"), (True, "FINISHED"), (True, "FINISHED")]
    assert parents[0].info.status == "FINISHED"
    # the parent is named after the sweep; a failed job's description says why
    assert parents[0].info.run_name == f"sweep · +stage=baseline {' '.join(SMALL)} model.path={good},{broken} quant.param_bw=4,8"[:250]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert failed.data.tags["mlflow.note.content"].splitlines()[2].startswith("Failed: `")
    # the sweep report agrees with the runs
    table = pd.read_csv(client.download_artifacts(parent, "report/comparison.csv", str(tmp_path)))
    finished = {c.data.tags["param_bw"]: c.data.metrics["sim/top1"] for c in children if c.info.status == "FINISHED"}
    assert {f"W{bw}A8": top1 for bw, top1 in finished.items()} == dict(zip(table["setting"], table["sim/top1"]))


def _wait_for_running(db: Path, proc: subprocess.Popen, count: int, timeout_s: float = 120) -> bool:
    """Wait until ``count`` runs of the store are RUNNING (False if the process ended first)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db) as con:
                if con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0] >= count:
                    return True
        except sqlite3.Error:
            pass
    return False


def test_sigterm_marks_the_run_killed_and_a_rerun_succeeds(tmp_path):
    good, _ = _models(tmp_path)
    cmd = [sys.executable, "-m", "workbench", "+stage=baseline", *SMALL, f"model.path={good}", f"paths.outputs_dir={tmp_path}"]
    console = tmp_path / "console.txt"
    with console.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    db = tmp_path / "mlflow.db"
    assert _wait_for_running(db, proc, 1), "the run never started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("workbench").experiment_id
    (run,) = client.search_runs([exp])
    said = console.read_text()[-3000:]
    assert (proc.returncode, run.info.status) == (143, "KILLED"), said  # 128 + SIGTERM, after the run ended KILLED
    rerun = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    statuses = sorted(r.info.status for r in client.search_runs([exp]))
    assert statuses == ["FINISHED", "KILLED"]


def test_sigterm_to_a_parallel_sweep_ends_every_run_and_worker(tmp_path):
    good, _ = _models(tmp_path)
    sweep = ["-m", "+stage=qat", *SMALL, f"model.path={good}", "quant.param_bw=4,8", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    cmd = [sys.executable, "-m", "workbench", *sweep, f"paths.outputs_dir={tmp_path}"]
    console = tmp_path / "console.txt"
    with console.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    assert _wait_for_running(tmp_path / "mlflow.db", proc, 3), "the parent and both jobs never ran together"
    proc.send_signal(signal.SIGTERM)  # to the sweep's driver only, as a scheduler would
    proc.wait(timeout=120)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    said = console.read_text()[-3000:]
    assert proc.returncode == 143, said
    # every run ends KILLED: by its worker at a checkpoint, or by the driver when joblib killed that worker first
    assert sorted(r.info.status for r in runs) == ["KILLED"] * 3, said
    time.sleep(1)  # no worker outlives the sweep
    workers = {int(r.data.tags["pid"]) for r in runs} - {proc.pid}
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], said


def test_a_worker_killed_by_sigkill_fails_its_own_job_and_the_sweep_goes_on(tmp_path):
    """4 jobs on 2 joblib workers; job 1's worker dies of SIGKILL while loading its model: 3 FINISHED, 1 FAILED."""
    import keras
    from killer import KillerDoubler

    i = keras.Input((8, 8, 3))
    model = tmp_path / "killer.keras"
    keras.Model(i, keras.layers.Dense(4)(keras.layers.Flatten()(KillerDoubler()(i)))).save(model)
    proc = _joblib_sweep(
        tmp_path, 2, f"model.path={model}", "+model.custom_objects.KillerDoubler=tests.killer:KillerDoubler", "quant.param_bw=4,6,8,16"
    )
    out = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    children = [r for r in runs if "stage" in r.data.tags]
    final = {}
    for run in sorted(children, key=lambda r: r.info.start_time):  # a job run again has a newer run
        final[run.data.params["quant.param_bw"]] = run
    assert sorted((bw, r.info.status) for bw, r in final.items()) == [
        ("16", "FINISHED"),
        ("4", "FINISHED"),
        ("6", "FAILED"),
        ("8", "FINISHED"),
    ], out
    assert "SIGKILL" in final["6"].data.tags["error"]
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert "TerminatedWorkerError" not in proc.stderr and "job 1" in out
