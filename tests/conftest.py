import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch):
    """Each test starts without $MLFLOW_TRACKING_URI (MLflow's set_tracking_uri sets it for the process): a run
    in this process goes to its own paths.outputs_dir, not to the store an earlier test pointed MLflow at."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
