"""An exported model as an MLflow model: Keras flavor, signature, input example, the int8 TFLite file and
the encodings beside it; with ``export.register_as=NAME`` a version in the Model Registry whose tags say its
scheme, bitwidths and accuracies.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os

from workbench import keys
from workbench.results import ExportedModel

log = logging.getLogger(__name__)
MODEL_NAME = "model"  # the logged model's name within its run
# the run tags and metrics a registered version carries as its own tags
VERSION_TAGS = (keys.TAG_STAGE, keys.TAG_MODEL, keys.TAG_SCHEME, keys.TAG_PARAM_BW, keys.TAG_OUTPUT_BW, keys.TAG_PER_CHANNEL)
VERSION_METRICS = (keys.SIM_TOP1, keys.TFLITE_TOP1, keys.FP32_TOP1)


def log_exported_model(
    uri: str, run_id: str, exported: ExportedModel, tags: dict[str, str], metrics: dict[str, float], register_as: str | None = None
) -> str:
    """Log ``exported`` to the run (and register it); returns the model's URI."""
    import mlflow
    import tensorflow as tf
    from mlflow.models import infer_signature

    files = sorted(os.path.join(exported.directory, f) for f in os.listdir(exported.directory) if not f.endswith(".keras"))
    outputs = exported.model(exported.example, training=False)
    signature = infer_signature(exported.example, outputs.numpy())
    # the logged model belongs to the run's experiment (else the fluent default, experiment 0, gets it)
    experiment_id = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    with fluent_store(uri), contextlib.redirect_stdout(io.StringIO()):  # MLflow checks the input example with Keras' progress bar
        mlflow.set_experiment(experiment_id=experiment_id)
        info = mlflow.tensorflow.log_model(
            exported.model,
            name=MODEL_NAME,
            run_id=run_id,
            signature=signature,
            input_example=exported.example,
            pip_requirements=[f"tensorflow=={tf.__version__}"],
            extra_files=files,
        )
    log.debug("logged the MLflow model %s (%d files beside it)", info.model_uri, len(files))
    if register_as:
        register(uri, info.model_uri, register_as, tags, metrics)
    return info.model_uri


@contextlib.contextmanager
def fluent_store(uri: str):
    """MLflow's fluent API (Model.log, register_model) pointed at ``uri`` for the block only: ``set_tracking_uri`` also
    sets ``$MLFLOW_TRACKING_URI``, which would send every later run of this process (a reused sweep worker, a second
    ``app.run``) to this store whatever its ``paths.outputs_dir``."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def register(uri: str, model_uri: str, name: str, tags: dict[str, str], metrics: dict[str, float]) -> str:
    """A new version of ``name`` in the Model Registry, tagged with the run's setting and accuracies."""
    import mlflow

    version_tags = {k: str(tags[k]) for k in VERSION_TAGS if k in tags}
    version_tags.update({k: f"{metrics[k]:.4f}" for k in VERSION_METRICS if k in metrics})
    with (
        fluent_store(uri),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):  # our own log line says it
        version = mlflow.register_model(model_uri, name, tags=version_tags)
    log.info("registered %s version %s", name, version.version)
    return str(version.version)
