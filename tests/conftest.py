import os

import pytest
import torch

# each test process keeps its own cache and never touches the user's
os.environ.setdefault("RSLAD_TUNE_CACHE", os.path.join(os.path.dirname(__file__), "..", "runs", ".test-cache"))
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # the tests' sweeps use their own stores, never the user's server


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
