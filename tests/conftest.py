import os
import subprocess
import sys

import pytest
import torch
import yaml

# each test process keeps its own cache and never touches the user's
os.environ.setdefault("RSLAD_TUNE_CACHE", os.path.join(os.path.dirname(__file__), "..", "runs", ".test-cache"))
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # the tests' sweeps use their own stores, never the user's server


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TINY_TEACHER_SWEEP = {
    "experiment": "tiny",
    "data": {"dataset": "synthetic", "train_subset": 600, "test_subset": 200, "val_size": 100},
    "teachers": {"t1": {"train": {"method": "sat", "arch": "small_cnn", "width": 8, "epochs": 2, "attack_steps": 2,
                                  "batch_size": 32, "lr": 0.05}, "card_aa_examples": 16},
                 "t2": {"train": {"method": "natural", "arch": "small_cnn", "width": 4, "epochs": 1, "batch_size": 32},
                        "card_aa_examples": 0}},
    "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 2, "attack_steps": 2, "eval_steps": 3,
              "lr": 0.05, "batch_size": 32},
    "search": {"alpha": {"uniform": [0.5, 1.0]}, "epsilon": {"uniform": [0.05, 0.1]}, "teacher": {"choice": ["t1", "t2"]}},
    "report": {"n_examples": 50, "n_aa": 6},
    "tune": {"num_samples": 2, "max_concurrent": 2, "scheduler": {"grace_period": 1}, "resources": {"cpu": 1}},
}


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory):
    """A real Ray Tune sweep of two tiny synthetic trials with two teachers, exported and reported, run once per
    session: (folder holding space.yaml and runs/, the sweep's stdout). Tests that change it work on a copy, except
    tests/test_sweep.py's, which read it as the sweep left it and run the verbs on it."""
    d = tmp_path_factory.mktemp("sweep")
    space = dict(TINY_TEACHER_SWEEP, runs_dir=str(d / "runs"))
    (d / "space.yaml").write_text(yaml.safe_dump(space))
    proc = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", str(d / "space.yaml")],
                          cwd=d, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return d, proc.stdout
