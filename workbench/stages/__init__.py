"""Stages: orchestration only (which transforms, which sim, which evaluations)."""

STAGE_NAMES = ("baseline",)


def get_stage(name: str):
    """The stage function for ``name`` (imported lazily: stages pull in TensorFlow)."""
    if name == "baseline":
        from workbench.stages.baseline import run_baseline

        return run_baseline
    raise ValueError(f"stage.name={name!r} is not allowed; allowed: {', '.join(STAGE_NAMES)}")
