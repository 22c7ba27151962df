"""Reports: complete setting identities, paired verdicts, exclusions with reasons, missing stays missing."""

import math
import os

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from workbench.report import main as report_main
from workbench.reporting.report import ReportError, build_report, to_markdown

N = 200
LABELS = np.arange(N) % 10
# stage, model, scheme, per_channel, number of wrong images (None: sim/top1 never logged), status
RUNS = [
    ("baseline", "m1", "tf", "False", 60, "FINISHED"),
    ("cle", "m1", "tf", "False", 20, "FINISHED"),  # 40 more right, 0 fewer: better
    ("bc", "m1", "tf", "False", 58, "FINISHED"),  # 2 more right: within noise
    ("baseline", "m1", "tf_enhanced", "False", 30, "FINISHED"),
    ("cle", "m1", "tf_enhanced", "False", None, "FINISHED"),
    ("baseline", "m2", "tf", "False", 10, "FINISHED"),
    ("cle", "m2", "tf", "False", 50, "FINISHED"),  # worse
    ("cle", "m2", "tf", "True", 90, "FINISHED"),  # per-channel worse than per-tensor
    ("baseline", "m2", "tf", "True", 10, "FINISHED"),
    ("bc", "m1", "tf", "False", 0, "FAILED"),
    ("baseline", "m1", "tf", "False", 100, "FINISHED"),  # the same identity again, newer: supersedes the first
]


def _log(client, exp, parent, stage, model, scheme, pc, wrong, status, tmp_path):
    params = {
        "model.name": model,
        "quant.param_scheme": scheme,
        "quant.output_scheme": "tf",
        "quant.param_bw": "4",
        "quant.output_bw": "8",
        "quant.per_channel": pc,
        "cle.relu6_mode": "clip",
        "paths.outputs_dir": str(tmp_path),
    }
    tags = {"stage": stage, "mlflow.parentRunId": parent, "eval.digest": "d1"}
    if stage == "baseline":
        tags["deployable"] = "true"
    run = client.create_run(exp, tags=tags).info.run_id
    for k, v in params.items():
        client.log_param(run, k, v)
    client.log_metric(run, "fp32/top1", 0.95)
    if wrong is not None:
        predicted = LABELS.copy()
        predicted[:wrong] = (LABELS[:wrong] + 1) % 10  # the first `wrong` images are misclassified
        client.log_metric(run, "sim/top1", 1 - wrong / N)
        pd.DataFrame({"label": LABELS, "sim": predicted}).to_csv(tmp_path / "predictions.csv", index=False)
        client.log_artifact(run, str(tmp_path / "predictions.csv"))
    # network order, not alphabetical; the baseline (BN folded) lacks a layer the others have
    layers = ["stem_conv", "block1", "head"] if stage == "baseline" else ["stem_conv", "block1", "block1_bn", "head"]
    pd.DataFrame({"layer": layers, "sqnr_db": np.linspace(30, 10, len(layers))}).to_csv(tmp_path / "layers.csv", index=False)
    client.log_artifact(run, str(tmp_path / "layers.csv"))
    client.set_terminated(run, status)
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory):  # built once: the tests only read it (and write reports beside it)
    tmp_path = tmp_path_factory.mktemp("store")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("exp", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="sweep").info.run_id
    ids = [_log(client, exp, parent, *spec, tmp_path) for spec in RUNS]
    client.set_tag(ids[2], "coverage", "partial: scale: no rule for Scale.w: stays float")  # the m1/tf bc run
    client.set_terminated(parent, "FINISHED")
    return client, parent, tmp_path, ids


def test_two_models_and_two_schemes_stay_apart_with_paired_verdicts(store):
    client, parent, tmp, ids = store
    report = build_report(client, "exp", str(tmp / "reports"), parent)
    assert set(report.compared.setting_keys) == {"model.name", "quant.param_scheme", "quant.per_channel"}
    t = report.table.set_index(["stage", "setting"])
    m1_tf, m1_enh, m2_tf = (
        f"W4A8 · model.name={m}, quant.param_scheme={s}" for m, s in (("m1", "tf"), ("m1", "tf_enhanced"), ("m2", "tf"))
    )
    # the newer m1/tf baseline (100 wrong) is the reference; the older one is listed as superseded
    assert t.loc[("baseline", m1_tf), "sim/top1"] == pytest.approx(0.5)
    assert t.loc[("cle", m1_tf), "delta_vs_baseline"] == pytest.approx(0.4)
    assert t.loc[("cle", m1_tf), "verdict"] == "better" and t.loc[("cle", m1_tf), "p_value"] < 1e-6
    assert t.loc[("bc (partial sim)", m1_tf), "verdict"] == "better"  # 58 wrong vs 100; marked: part of it stayed float
    assert t.loc[("baseline", m1_enh), "sim/top1"] == pytest.approx(0.85)  # not merged with tf
    assert math.isnan(t.loc[("cle", m1_enh), "sim/top1"])  # never logged: missing, not zero
    assert t.loc[("cle", m2_tf), "verdict"] == "worse" and t.loc[("baseline", m2_tf), "verdict"] == "reference"
    pc = t.loc[("cle", "W4A8 pc · model.name=m2, quant.param_scheme=tf")]
    assert pc["notes"].startswith("per-channel worse than per-tensor") and pc["verdict"] == "worse"
    assert ci_ok(report.table)
    excluded = report.excluded.set_index("run_id")["reason"]
    assert excluded[ids[9]] == "status FAILED" and excluded[ids[0]] == f"superseded by the newer run {ids[10]}"
    assert len(report.table) + len(report.excluded) == len(RUNS)  # nothing dropped silently
    best = report.best.set_index("setting")["best"]
    assert best[m1_tf] == "cle" and best[m2_tf].startswith("none")
    md = open(report.files["report.md"]).read()
    assert "missing" in md and "Runs left out" in md and "model.name" in md
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/comparison.csv", "report/excluded.csv", "report/accuracy_vs_bitwidth.png", "report/report.html"} <= logged
    assert list(report.sqnr.index) == ["stem_conv", "block1", "block1_bn", "head"]  # network order


def test_html_report_is_one_self_contained_file(store):
    client, parent, tmp, _ = store
    report = build_report(client, "exp", str(tmp / "reports"), parent, title="sweep 1234")
    html = open(report.files["report.html"]).read()
    assert html.startswith("<!DOCTYPE html>") and "<title>sweep 1234</title>" in html
    assert "tensorflow " in html and "mlflow " in html and "Generated 20" in html  # versions and date
    assert html.count('src="data:image/png;base64,') == 2  # both plots embedded
    assert "http://" not in html and "https://" not in html and "<script" not in html and "<link" not in html  # nothing outside it
    assert "python -m workbench +stage=cle" in html  # the commands that rerun each run
    assert "model.name, quant.param_scheme, quant.per_channel" in html  # the settings that differ
    assert "#dafbe1" in html and "#ffebe9" in html  # better / worse cells coloured by the Styler
    assert html.index(">stem_conv<") < html.index(">block1<") < html.index(">block1_bn<") < html.index(">head<")
    assert not [f for f in os.listdir(tmp / "reports") if f.endswith(".html") and f != "report.html"]  # one HTML file


def ci_ok(table):
    return table["ci_low"].isna().all()  # the fixture logs no intervals: none are invented


def test_unknown_and_empty_experiments_say_so(store):
    client, _, tmp, _ = store
    with pytest.raises(ReportError, match="does not exist"):
        build_report(client, "nope", str(tmp / "r"))
    client.create_experiment("empty", artifact_location=(tmp / "a2").as_uri())
    with pytest.raises(ReportError, match="no stage runs"):
        build_report(client, "empty", str(tmp / "r"))


def test_cli_prints_plain_message(store, capsys):
    _, _, tmp, _ = store
    code = report_main(["--experiment", "nope", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--outputs-dir", str(tmp)])
    assert code == 1
    assert capsys.readouterr().err.strip() == "workbench.report: experiment 'nope' does not exist in this tracking store"
    code = report_main(["--experiment", "exp", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--outputs-dir", str(tmp)])
    assert code == 0 and os.path.exists(tmp / "reports" / "exp" / "comparison.md")
    assert "Best technique per setting" in capsys.readouterr().out


def test_markdown_marks_nan_as_missing():
    text = to_markdown(pd.DataFrame({"a": [1.0, float("nan")], "b": ["x", "y"]}))
    assert text.splitlines()[2] == "| 1.0000 | x |" and "missing" in text.splitlines()[3]


def test_a_sweep_of_technique_stages_is_compared_with_the_experiments_baseline(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("exp", artifact_location=(tmp_path / "artifacts").as_uri())
    earlier = client.create_run(exp, run_name="baselines").info.run_id
    _log(client, exp, earlier, "baseline", "m1", "tf", "False", 60, "FINISHED", tmp_path)
    _log(client, exp, earlier, "baseline", "m9", "tf", "False", 0, "FINISHED", tmp_path)  # another setting: not borrowed
    sweep = client.create_run(exp, run_name="sweep").info.run_id
    _log(client, exp, sweep, "cle", "m1", "tf", "False", 20, "FINISHED", tmp_path)
    _log(client, exp, sweep, "bc", "m1", "tf", "False", 58, "FINISHED", tmp_path)
    report = build_report(client, "exp", str(tmp_path / "reports"), sweep)
    t = report.table.set_index("stage")
    assert t.loc["cle", "verdict"] == "better" and t.loc["bc", "verdict"].startswith("within")  # tested, not "no baseline"
    assert t.loc["baseline", "verdict"] == "reference" and "earlier run of the experiment" in t.loc["baseline", "notes"]
    assert len(report.table) == 3


def test_an_autoquant_run_is_judged_by_its_own_held_out_test_not_called_untested(tmp_path):
    from workbench.reporting.report import OWN_TEST

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("exp", artifact_location=(tmp_path / "artifacts").as_uri())
    sweep = client.create_run(exp, run_name="sweep").info.run_id
    _log(client, exp, sweep, "baseline", "m1", "tf", "False", 60, "FINISHED", tmp_path)  # every image (digest d1)
    auto = _log(client, exp, sweep, "autoquant", "m1", "tf", "False", 20, "FINISHED", tmp_path)
    client.set_tag(auto, "eval.digest", "held-out")  # its figures are on its held-out images: no pair with the baseline run
    report = build_report(client, "exp", str(tmp_path / "reports"), sweep)
    row = report.table.set_index("stage").loc["autoquant"]
    assert row["verdict"] == "not paired" and report.best.iloc[0]["best"].endswith("(untested: not paired)")  # no test logged
    # the test the run made itself, against the configured deployable baseline on those held-out images
    for key, value in {"autoquant/delta_vs_baseline": 0.05, "autoquant/p_value": 0.004}.items():
        client.log_metric(auto, key, value)
    client.set_tag(auto, "autoquant.verdict", "better")
    report = build_report(client, "exp", str(tmp_path / "reports"), sweep)
    row = report.table.set_index("stage").loc["autoquant"]
    assert (row["verdict"], row["delta_vs_baseline"], row["p_value"], row["notes"]) == ("better", 0.05, 0.004, OWN_TEST)
    assert report.best.iloc[0]["best"] == "autoquant" and report.table.set_index("stage").loc["baseline", "notes"] == ""


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs filled to about 30 KB free (root only: skipped where mount is not allowed)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        (mount / "filler").write_bytes(b"\0" * (free - 30_000))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_at_the_report_leaves_no_cut_file_and_no_error_exit(store, full_disk, caplog):
    from types import SimpleNamespace

    from workbench.app import report_and_summarise

    client, parent, tmp, _ = store
    out = full_disk / "report"
    with caplog.at_level("ERROR"):
        assert (
            report_and_summarise(SimpleNamespace(client=client, uri="sqlite://"), "exp", str(out), "sweep", parent, parent_run_id=parent)
            is None
        )
    assert "no report:" in caplog.text and "No space left on device" in caplog.text
    written = {p.name for p in out.iterdir()} if out.exists() else set()
    assert "report.html" not in written and not [n for n in written if n.startswith(".")]  # nothing cut, no temporary left


def test_another_tasks_runs_are_compared_by_its_metric_with_a_paired_bootstrap(tmp_path):
    """Regression runs (MAE, lower is better) from their samples.csv: the lowest MAE is the best technique, the
    paired bootstrap gives the verdicts, and a top-1 run of the same experiment is left out with the reason."""
    from workbench.evaluation.tasks import Regression
    from workbench.reporting.headline import task_spec

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("reg", artifact_location=(tmp_path / "artifacts").as_uri())
    rng = np.random.default_rng(0)
    base = np.abs(rng.normal(0.2, 0.05, N))
    errors = {"baseline": base, "cle": base * 0.6, "bc": base * 1.5, "qat": base + rng.normal(0, 0.002, N)}
    ids = {}
    for stage, error in errors.items():
        tags = {"stage": stage, "eval.digest": "r1", "task": "regression", "task.metric": "mae", "task.spec": task_spec(Regression())}
        tags |= {"deployable": "true"} if stage == "baseline" else {}
        run = ids[stage] = client.create_run(exp, tags=tags).info.run_id
        client.log_param(run, "quant.param_bw", "8")
        for key, value in {"sim/mae": error.mean(), "sim/mae_ci_low": error.mean() - 0.01, "sim/mae_ci_high": error.mean() + 0.01}.items():
            client.log_metric(run, key, value)
        client.log_metric(run, "fp32/mae", 0.1)
        pd.DataFrame({"sim:0": error, "sim:1": error**2}).to_csv(tmp_path / "samples.csv", index=False)
        client.log_artifact(run, str(tmp_path / "samples.csv"))
        client.set_terminated(run, "FINISHED")
    classifier = client.create_run(exp, tags={"stage": "cle", "eval.digest": "d"}).info.run_id  # recorded before tasks: top-1
    client.log_metric(classifier, "sim/top1", 0.9)
    client.set_terminated(classifier, "FINISHED")
    report = build_report(client, "reg", str(tmp_path / "reports"))
    verdicts = report.table.set_index("stage")["verdict"]
    assert (verdicts["cle"], verdicts["bc"], verdicts["qat"], verdicts["baseline"]) == ("better", "worse", "within noise", "reference")
    assert report.table.set_index("stage").loc["cle", "drop_vs_fp32"] == pytest.approx(errors["cle"].mean() - 0.1)
    assert report.best.iloc[0]["best"] == "cle"  # the lowest MAE
    assert report.excluded.set_index("run_id").loc[classifier, "reason"] == "measured by top1: this report compares mae"
    md = open(report.files["report.md"]).read()
    assert "### sim/mae by stage and setting (95 % BCa bootstrap interval, lower is better" in md and "(%)" not in md
    assert f"{errors['cle'].mean():.4g}" in md  # its own unit, not a percentage
