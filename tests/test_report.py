"""Reports: runs read back into the stage × setting table, missing stays missing, plain errors."""

import math
import os

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from workbench.report import main as report_main
from workbench.reporting.report import ReportError, build_report, to_markdown

RUNS = [  # stage, param_bw, sim/top1 (None: never logged), status
    ("baseline", 4, 0.90, "FINISHED"),
    ("cle", 4, 0.95, "FINISHED"),
    ("baseline", 8, 0.97, "FINISHED"),
    ("cle", 8, None, "FINISHED"),
    ("bc", 4, 0.10, "FAILED"),
]


@pytest.fixture
def store(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("exp", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="sweep").info.run_id
    for stage, bw, top1, status in RUNS:
        tags = {"stage": stage, "param_bw": str(bw), "output_bw": "8", "per_channel": "False", "mlflow.parentRunId": parent}
        run = client.create_run(exp, tags=tags).info.run_id
        client.log_metric(run, "fp32/top1", 0.98)
        if top1 is not None:
            client.log_metric(run, "sim/top1", top1)
        layers = pd.DataFrame({"layer": ["conv", "dense"], "sqnr_db": [20.0 + bw, 10.0 + bw]})
        path = tmp_path / "layers.csv"
        layers.to_csv(path, index=False)
        client.log_artifact(run, str(path))
        client.set_terminated(run, status)
    client.set_terminated(parent, "FINISHED")
    return client, parent, tmp_path


def test_table_matches_the_runs(store):
    client, parent, tmp = store
    report = build_report(client, "exp", str(tmp / "reports"), parent)
    t = report.table.set_index(["stage", "setting"])
    assert t.loc[("cle", "W4A8"), "sim/top1"] == pytest.approx(0.95)
    assert t.loc[("cle", "W4A8"), "recovery_vs_baseline"] == pytest.approx(0.05)
    assert t.loc[("baseline", "W8A8"), "drop_vs_fp32"] == pytest.approx(0.01)
    assert math.isnan(t.loc[("cle", "W8A8"), "sim/top1"])  # never logged: missing, not zero
    assert ("bc", "W4A8") not in t.index  # failed runs are not compared
    assert list(report.wide.index) == ["baseline", "cle"]
    md = open(report.files["sim_top1_by_stage.md"]).read()
    assert "missing" in md and "| 0.0000 |" not in md
    assert set(report.sqnr.columns) == {"baseline", "cle"}
    assert {"accuracy_vs_bitwidth.png", "layer_sqnr.png", "comparison.csv", "comparison.html"} <= set(report.files)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert "report/comparison.csv" in logged


def test_unknown_and_empty_experiments_say_so(store, tmp_path):
    client, _, tmp = store
    with pytest.raises(ReportError, match="does not exist"):
        build_report(client, "nope", str(tmp / "r"))
    client.create_experiment("empty", artifact_location=(tmp / "a2").as_uri())
    with pytest.raises(ReportError, match="no stage runs"):
        build_report(client, "empty", str(tmp / "r"))


def test_cli_prints_plain_message(store, capsys):
    _, _, tmp = store
    code = report_main(["--experiment", "nope", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--outputs-dir", str(tmp)])
    assert code == 1
    assert capsys.readouterr().err.strip() == "workbench.report: experiment 'nope' does not exist in this tracking store"
    code = report_main(["--experiment", "exp", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--outputs-dir", str(tmp)])
    assert code == 0 and os.path.exists(tmp / "reports" / "exp" / "comparison.md")


def test_markdown_marks_nan_as_missing():
    text = to_markdown(pd.DataFrame({"a": [1.0, float("nan")], "b": ["x", "y"]}))
    assert text.splitlines()[2] == "| 1.0000 | x |" and "missing" in text.splitlines()[3]
