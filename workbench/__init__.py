"""workbench: quantization simulation and post-training techniques for Keras 3, tracked in MLflow.

The library API, importable from the package root (loaded on first use, so that ``python -m workbench``
can check its configuration before TensorFlow is imported)::

    from workbench import QuantizationSimModel, QuantSettings, fold_batch_norms, equalize_model, correct_bias
    from workbench import autoquant  # the +stage=autoquant search from Python: autoquant("quant.param_bw=4")
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "workbench.options": ("QuantSettings", "QuantScheme", "Rounding", "ReLU6Mode", "BiasCorrectionMode"),
    "workbench.data.dataset": ("Dataset",),
    "workbench.graph.flatten": ("flatten_model",),
    "workbench.quantsim.sim": ("QuantizationSimModel", "forward_pass_over"),
    "workbench.quantsim.coverage": ("coverage_table",),
    "workbench.quantsim.export": ("export_encodings", "load_encodings", "export_model"),
    "workbench.quantsim.tflite": ("convert_to_int8_tflite", "evaluate_tflite_top1"),
    "workbench.techniques.batch_norm_fold": ("fold_batch_norms",),
    "workbench.techniques.cross_layer_equalization": ("equalize_model", "cross_layer_scale"),
    "workbench.techniques.bias_correction": ("correct_bias",),
    "workbench.techniques.range_learning": ("train_qat", "simulate_trained"),
    "workbench.evaluation.accuracy": ("evaluate_top1", "predict_classes"),
    "workbench.evaluation.statistics": ("wilson_interval", "mcnemar_exact", "bootstrap_interval", "paired_bootstrap"),
    "workbench.evaluation.tasks": ("score_task", "Classification", "Segmentation", "Regression", "Fidelity", "Custom"),
    "workbench.app": ("autoquant", "AutoQuantAnswer"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
