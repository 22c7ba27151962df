"""Nothing lost, nothing hung: a new store shared by many processes, bad sweep values, dead processes."""

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from workbench.runs import main as runs_main
from workbench.tracking.mlflow_run import Tracker, open_client

pytestmark = pytest.mark.slow  # subprocesses: left out of the fast loop

ROOT = Path(__file__).resolve().parents[1]
STARTER = textwrap.dedent(
    """
    import sys, time
    from workbench.tracking.mlflow_run import Tracker
    uri, start = sys.argv[1], float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))  # every process opens the new store at the same moment
    tracker = Tracker(uri, "shared")
    with tracker.run("job", {"stage": "baseline"}, {"k": sys.argv[3]}) as run:
        run.log_metrics({"sim/top1": 0.5})
    """
)


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_PARENT_RUN_ID")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def test_eight_processes_create_one_new_store_together(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    start = time.time() + 8  # after all eight have imported MLflow
    procs = [
        subprocess.Popen([sys.executable, "-c", STARTER, uri, str(start), str(i)], cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
        for i in range(8)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, "\n".join(e[-1500:] for e in errors)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 8
    assert {r.data.tags["host"] for r in runs} == {socket.gethostname()} and len({r.data.tags["pid"] for r in runs}) == 8


def _sweep(tmp_path, *overrides):
    cmd = [sys.executable, "-m", "workbench", "-m", *overrides, f"paths.outputs_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    parents = [r for r in runs if "sweep" in r.data.tags]
    children = [r for r in runs if "sweep" not in r.data.tags]
    return proc, parents, children


def test_a_sweep_where_every_value_is_invalid_fails_each_job_and_its_parent(tmp_path):
    proc, parents, children = _sweep(tmp_path, "+stage=baseline", "quant.param_bw=1,0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED"]
    assert all("quant.param_bw" in c.data.tags["error"] and "2..16" in c.data.tags["error"] for c in children)
    assert [p.info.status for p in parents] == ["FAILED"]
    assert "job failed: quant.param_bw=1 is not allowed" in proc.stderr + proc.stdout


def test_a_sweep_value_cannot_move_a_job_folder_out_of_the_outputs(tmp_path):
    outputs = tmp_path / "outputs"
    proc, _, children = _sweep(outputs, "+stage=baseline", "model=keras_file", "model.path=../../../../../../escaped/x.keras,../../y.keras")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED"]  # no such model files
    jobs = [p for p in (outputs / "multirun").glob("*/*/*") if p.is_dir()]
    assert len(jobs) == 2 and all(p.name.startswith("stage_baseline_model.path_") for p in jobs), jobs
    assert not (tmp_path / "escaped").exists() and not any(p.name == "escaped" for p in Path("/").iterdir())


def test_one_invalid_value_fails_its_job_only(tmp_path):
    from helpers import SMALL_SYNTHETIC, small_convnet

    model = tmp_path / "m.keras"
    small_convnet().save(model)
    small = [*SMALL_SYNTHETIC, "model=keras_file", f"model.path={model}"]
    proc, parents, children = _sweep(tmp_path, "+stage=baseline", *small, "quant.param_bw=1,8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = sorted((c.data.params["quant.param_bw"], c.info.status) for c in children)
    assert status == [("1", "FAILED"), ("8", "FINISHED")]
    assert [p.info.status for p in parents] == ["FINISHED"]


def test_repair_ends_runs_whose_process_is_gone(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tracker.start("gone", {"pid": str(dead.pid)}, {}).run_id  # as if killed with -9
    alive = tracker.start("alive", {}, {}).run_id  # this process
    # a dead run whose pid now belongs to another (living) process: the start time tells them apart
    reused = tracker.start("reused", {"pid": str(os.getpid()), "pid.start": f"{psutil.Process().create_time() - 3600:.2f}"}, {}).run_id
    assert runs_main(["repair", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    client = MlflowClient(uri)
    assert client.get_run(gone).info.status == "FAILED" and "marked FAILED" in client.get_run(gone).data.tags["repaired"]
    assert client.get_run(alive).info.status == "RUNNING"
    assert client.get_run(reused).info.status == "FAILED"
    assert f"{gone}\tmarked FAILED" in out and "2 marked FAILED" in out


@pytest.mark.parametrize("name", ["../../x", "/Users/me/exp", "C:\\\\evil\\\\x", "..", "a/../../b", ""])
def test_names_make_folders_that_stay_under_their_root(tmp_path, name):
    from workbench.paths import under

    path = under(str(tmp_path / "reports"), name)
    assert os.path.dirname(path) == str(tmp_path / "reports") and os.path.basename(path) not in ("", ".", "..")


def test_the_report_of_a_traversing_experiment_name_stays_under_outputs(tmp_path):
    from workbench.report import main as report_main

    outputs = tmp_path / "outputs"
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    exp = client.create_experiment("../../escaped", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp, tags={"stage": "baseline", "deployable": "true"}).info.run_id
    client.log_metric(run, "sim/top1", 0.5)
    client.set_terminated(run)
    uri = f"sqlite:///{outputs}/mlflow.db"
    assert report_main(["--experiment", "../../escaped", "--outputs-dir", str(outputs), "--tracking-uri", uri]) == 0
    assert not (tmp_path / "escaped").exists() and (outputs / "reports" / "escaped").is_dir()


def test_a_store_killed_while_it_is_created_is_never_left_half_made(tmp_path):
    """kill -9 at several moments of a new SQLite store's creation: the next process always gets a working store."""
    script = "import sys; from workbench.tracking.mlflow_run import open_client; open_client(sys.argv[1])"
    for i, delay in enumerate((0.9, 1.2, 1.5, 1.8, 2.1, 2.6)):  # import ~1 s, creation ~1.3 s here
        uri = f"sqlite:///{tmp_path}/s{i}/mlflow.db"
        proc = subprocess.Popen([sys.executable, "-c", script, uri], cwd=ROOT, env=_env())
        time.sleep(delay)
        proc.kill()
        proc.wait()
        client = open_client(uri)  # a complete store: created anew if the killed one had not finished
        exp = client.create_experiment("after")
        assert client.get_experiment(exp).name == "after"
        assert not list((tmp_path / f"s{i}").glob("mlflow.db.creating-*"))


FILLER = textwrap.dedent(
    """
    import os, sys
    from workbench.tracking.mlflow_run import Tracker
    uri, folder, fail = sys.argv[1], sys.argv[2], sys.argv[3] == "fail"
    tracker = Tracker(uri, "exp", artifact_location=os.path.join(folder, "art"))
    with tracker.run("export", {"stage": "qat"}, {"k": "v"}) as run:
        run.log_metrics({"sim/top1": 0.5})
        with open(os.path.join(folder, "filler"), "wb") as f:  # the export fills the disk the store is on
            try:
                f.write(b"\\0" * (64 << 20))
            except OSError:
                pass
        if fail:
            raise OSError(28, "No space left on device")
    """
)


@pytest.mark.parametrize("ending", ["fail", "finish"])
def test_a_full_disk_at_a_runs_end_exits_1_names_the_run_and_repair_ends_it(tmp_path, ending):
    """A 4 MB tmpfs holds the store; the stage fills it: the final status cannot be written."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        uri = f"sqlite:///{mount}/mlflow.db"
        proc = subprocess.run([sys.executable, "-c", FILLER, uri, str(mount), ending], cwd=ROOT, env=_env(), capture_output=True, text=True)
        status = "FAILED" if ending == "fail" else "FINISHED"
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1, proc.stderr[-3000:]  # never 0 while the run is not FINISHED
        assert f"could not be marked {status} (database or disk is full): it stays RUNNING until" in last, last
        assert f"python -m workbench.runs repair --tracking-uri {uri}" in last
        assert "SQLAlchemy database error" not in proc.stderr  # MLflow's own traceback of the refusal is not printed
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
        assert run.info.status == "RUNNING" and run.data.metrics["sim/top1"] == 0.5  # what was logged is kept
        (mount / "filler").unlink()  # space is back: repair ends it (its process is gone)
        assert runs_main(["repair", "--tracking-uri", uri]) == 0
        assert client.get_run(run.info.run_id).info.status == "FAILED"
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_damaged_store_is_named_with_the_command_that_fixes_it(tmp_path, capsys):
    (tmp_path / "mlflow.db").write_bytes(os.urandom(4096))
    assert runs_main(["repair", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 2
    err = capsys.readouterr().err
    assert "tracking.uri=" in err and "file is not a database" in err and f"mv '{tmp_path}/mlflow.db'" in err
    assert len(err.strip().splitlines()) == 1
