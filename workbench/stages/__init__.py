"""Stages: orchestration only (which transforms, which sim, which evaluations)."""

import importlib

# stage name -> (module, function); imported lazily because stages pull in TensorFlow
_STAGES = {
    "baseline": ("workbench.stages.baseline", "run_baseline"),
    "bn_fold": ("workbench.stages.bn_fold", "run_bn_fold"),
    "cle": ("workbench.stages.cle", "run_cle"),
    "bc": ("workbench.stages.bc", "run_bc"),
    "qat": ("workbench.stages.qat", "run_qat"),
    "adaround": ("workbench.stages.adaround", "run_adaround"),
    "analyze": ("workbench.stages.analyze", "run_analyze"),
    "mixed_precision": ("workbench.stages.mixed_precision", "run_mixed_precision"),
}
STAGE_NAMES = tuple(_STAGES)


def get_stage(name: str):
    """The stage function for ``name``."""
    if name not in _STAGES:
        raise ValueError(f"stage.name={name!r} is not allowed; allowed: {', '.join(STAGE_NAMES)}")
    module, function = _STAGES[name]
    return getattr(importlib.import_module(module), function)
