"""The README's main job, end to end on real Fashion-MNIST (about 5 minutes on 2 cores): slow-marked.

    python -m pytest -m slow tests/test_quickstart_slow.py

`check_quickstart(runs_dir)` is also usable on the output of a sweep run by hand.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")

RELOAD = """
import json, sys, torch, rslad_tune
from rslad_tune.trial.data import load_splits
from rslad_tune.trial.robustness import clean_and_pgd
model = rslad_tune.load_student(sys.argv[1])
cfg = json.load(open(sys.argv[1] + '/config.json'))['trial']
s = load_splits('fashion_mnist', data_dir=cfg['data_dir'], val_size=cfg['val_size'], test_subset=cfg['test_subset'])
print(json.dumps(clean_and_pgd(model, s.test_x, s.test_y, 0.1, 0.025, 20, seed=123)))
"""


def check_quickstart(runs: Path) -> dict:
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quickstart")
    runs_ = client.search_runs([exp.experiment_id])
    parents = [r for r in runs_ if r.data.tags.get("rslad_tune.kind") == "sweep"]
    children = [r for r in runs_ if r.data.tags.get("rslad_tune.kind") == "trial"]
    assert len(parents) == 1 and len(children) >= 6
    for c in children:
        assert c.info.status == "FINISHED" and {"alpha", "epsilon", "attack_steps", "teacher"} <= set(c.data.params)
        steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "val_pgd_acc"))
        assert steps == list(range(1, int(c.data.tags["epochs_run"]) + 1))
    early = [c for c in children if c.data.tags["early_stopped"] == "true"]
    assert early, "no trial was stopped early by ASHA"
    best = runs / "quickstart" / "best"
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["test_n"] == 2000 and metrics["test_clean_acc"] >= 0.70 and metrics["test_pgd_acc"] >= 0.55
    assert all((best / f).is_file() for f in ("model.safetensors", "model.pt", "model.onnx"))
    assert client.get_model_version_by_alias("quickstart-student", "champion")
    first = (runs / "quickstart" / "selection.md").read_text().splitlines()[0]
    assert "distil" in first and "no no-teacher baseline" not in first, first
    # the baseline is a reference arm: ASHA never stops it, so the report compares the teachers with it
    assert "ASHA stopped every student trained alone" not in first, first
    alone = [c for c in children if c.data.params["teacher"] == "none"]
    assert alone and all(c.data.tags["early_stopped"] == "false" for c in alone), first
    fresh = json.loads(subprocess.run([sys.executable, "-c", RELOAD, str(best)], capture_output=True, text=True,
                                      check=True).stdout)
    assert abs(fresh["clean_acc"] - metrics["test_clean_acc"]) <= 0.01
    assert abs(fresh["pgd_acc"] - metrics["test_pgd_acc"]) <= 0.01
    return {"children": len(children), "early_stopped": len(early), "metrics": metrics, "reloaded": fresh}


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_quickstart_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", str(ROOT / "search_spaces" / "quickstart.yaml"),
                           "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_quickstart(tmp_path / "runs")
