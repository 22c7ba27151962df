"""The data a run used, as MLflow dataset inputs (the run page's *Datasets* and the runs table's column).

One entry per role the split played, with MLflow's context tag: ``validation`` (digest = the run's
``eval.digest``: runs with equal digests were evaluated on the same images), ``calibration`` (the
effective sample count and seed), ``training`` (QAT fine-tuning and the embedded model's training). Only
metadata is logged (``MetaDataset``): no images leave the machine.
"""

from __future__ import annotations

import hashlib
import os
import warnings

from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag

from workbench import keys, registry


def _source(where: str | None) -> DatasetSource:
    if where and os.path.exists(where):
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():  # "can be interpreted in multiple ways": any local-file source will do
            warnings.simplefilter("ignore")
            return resolve_dataset_source(os.path.abspath(where))
    return CodeDatasetSource({"generator": where or "unknown"})


def _digest(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def dataset_inputs(name: str, where: str | None, stage: str | None, metrics: dict, tags: dict, seed: int) -> list[DatasetInput]:
    """What a run's ``log_inputs`` receives: one metadata dataset per role the data played in it."""
    source = _source(where)
    roles: list[tuple[str, str, str]] = []  # (context, dataset name, digest)
    if keys.TAG_EVAL_DIGEST in tags:
        samples = int(metrics.get(keys.EVAL_SAMPLES, 0))
        roles.append(("validation", f"{name} validation ({samples} images)", tags[keys.TAG_EVAL_DIGEST]))
    if keys.CALIBRATION_SAMPLES in metrics:
        samples = int(metrics[keys.CALIBRATION_SAMPLES])
        roles.append(("calibration", f"{name} calibration ({samples} training images)", _digest(name, where, "calibration", samples, seed)))
    if stage in registry.training_stages():
        roles.append(("training", f"{name} training split", _digest(name, where, "training", seed)))
    return [
        DatasetInput(MetaDataset(source, name=label, digest=digest)._to_mlflow_entity(), tags=[InputTag(keys.TAG_DATA_CONTEXT, context)])
        for context, label, digest in roles
    ]
