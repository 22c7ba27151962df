"""Stages: orchestration only (which transforms, which sim, which evaluations)."""

STAGE_NAMES = ("baseline", "bn_fold", "cle", "bc", "qat")


def get_stage(name: str):
    """The stage function for ``name`` (imported lazily: stages pull in TensorFlow)."""
    if name == "baseline":
        from workbench.stages.baseline import run_baseline

        return run_baseline
    if name == "bn_fold":
        from workbench.stages.bn_fold import run_bn_fold

        return run_bn_fold
    if name == "cle":
        from workbench.stages.cle import run_cle

        return run_cle
    if name == "bc":
        from workbench.stages.bc import run_bc

        return run_bc
    if name == "qat":
        from workbench.stages.qat import run_qat

        return run_qat
    raise ValueError(f"stage.name={name!r} is not allowed; allowed: {', '.join(STAGE_NAMES)}")
