"""One stage registry: every table that names stages is derived from it, and a new stage is one declaration."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import TINY_EMBEDDED
from workbench import registry
from workbench.config.help import help_template
from workbench.reporting.runs import applies, stage_key
from workbench.tracking.datasets import dataset_inputs

ROOT = Path(__file__).resolve().parents[1]


def test_every_table_of_stages_is_the_registrys():
    names = registry.stage_names()
    assert names[:3] == ("baseline", "bn_fold", "cle")  # the report's and pipeline's order
    assert [stage_key(n) for n in names] == list(range(len(names))) and stage_key("unknown") == len(names)
    assert {f.stem for f in (ROOT / "conf" / "stage").glob("*.yaml")} == set(names)  # each built-in has its YAML file
    text = help_template()
    for record in registry.stages().values():
        assert f"  {record.name:<17}{record.help}" in text
        assert callable(record.function())  # "module:function" names a function
    assert set(registry.with_role(registry.Role.DIAGNOSTIC)) == {"bn_fold", "analyze"}
    # option groups: a bc.* key changes a bc run, not a cle run; a quant.* key changes every run
    assert applies("bc", {}, "bc.mode") and not applies("cle", {}, "bc.mode") and applies("cle", {}, "quant.param_bw")
    inputs = dataset_inputs("d", None, "qat", {}, {}, 0)  # the training stages log their training split
    assert (
        [i.tags[0].value for i in inputs]
        == ["training"]
        == [i.tags[0].value for s in registry.training_stages() for i in dataset_inputs("d", None, s, {}, {}, 0)]
    )


def test_an_unknown_stage_is_one_line_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"stage.name='nope' is not allowed; allowed: baseline, bn_fold, cle"):
        registry.get("nope")


PLUGIN = textwrap.dedent(
    '''
    """A stage declared by a test, in a package of its own: FP32 and the sim of the model as it is."""
    from dataclasses import dataclass

    from workbench.registry import Stage


    @dataclass
    class Options:
        scale: float = 1.0

        def __post_init__(self):
            if self.scale <= 0:
                raise ValueError(f"scale={self.scale!r} is not allowed: use a value > 0")


    STAGE = Stage("throwaway", "throwaway_stage:run", "a stage a test declared in a module of its own", schema=Options)


    def run(ctx, result):
        from workbench.stages.common import evaluate_fp32, quantize_and_evaluate

        evaluate_fp32(ctx, result)
        quantize_and_evaluate(ctx, ctx.model, result)
        result.metrics["throwaway/scale"] = ctx.options("throwaway").scale
    '''
)


@pytest.mark.slow  # subprocesses
def test_a_stage_declared_in_another_package_is_everywhere(tmp_path):
    """Declared under the ``workbench.stages`` entry point of an installed package, with no other edit: in
    --help, a +stage= choice, in a pipeline, and in the report's stage order; its own options are composed
    (``throwaway.scale=3``), checked by their type and refused when misspelt."""
    site = tmp_path / "site"
    (site / "throwaway-0.1.dist-info").mkdir(parents=True)
    (site / "throwaway_stage.py").write_text(PLUGIN)
    (site / "throwaway-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway\nVersion: 0.1\n")
    (site / "throwaway-0.1.dist-info" / "entry_points.txt").write_text("[workbench.stages]\nthrowaway = throwaway_stage:STAGE\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])

    def workbench(*args):
        cmd = [sys.executable, "-m", "workbench", *args]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    shown = workbench("--help")
    assert "  throwaway        a stage a test declared in a module of its own" in shown.stdout, shown.stdout
    assert "throwaway" in next(line for line in shown.stdout.splitlines() if line.strip().startswith("stage:"))
    for wrong, line in (("throwaway.scal=3", "Key 'scal' not in 'Options'"), ("throwaway.scale=-1", "throwaway.scale=-1.0 is not allowed")):
        refused = workbench("+stage=throwaway", wrong, f"paths.outputs_dir={tmp_path}")
        assert refused.returncode == 2 and line in refused.stderr, refused.stderr[-3000:]
    one = workbench("+stage=throwaway", "throwaway.scale=3", *TINY_EMBEDDED, f"paths.outputs_dir={tmp_path}")
    assert one.returncode == 0, one.stderr[-3000:]
    both = workbench("pipeline.stages=[baseline,throwaway]", *TINY_EMBEDDED, f"paths.outputs_dir={tmp_path}")
    assert both.returncode == 0, both.stderr[-3000:]
    summary = both.stdout[both.stdout.index("== W8A8") :]
    assert summary.index("  baseline ") < summary.index("  throwaway ")  # the report's order: after the built-in stages
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    stages = sorted((r.data.tags.get("stage"), r.info.status) for r in runs if "stage" in r.data.tags)
    assert stages == [("baseline", "FINISHED"), ("throwaway", "FINISHED"), ("throwaway", "FINISHED")]
    scales = sorted(r.data.metrics["throwaway/scale"] for r in runs if r.data.tags.get("stage") == "throwaway")
    assert scales == [1.0, 3.0] and all(r.data.params["throwaway.scale"] in ("1.0", "3.0") for r in runs if "stage" in r.data.tags)
