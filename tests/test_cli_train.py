"""`rslad-tune train`: one trial from the YAML's fixed values, without Ray."""
import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from rslad_tune.cli import main

SPACE = {
    "experiment": "one",
    "data": {"dataset": "synthetic", "train_subset": 400, "test_subset": 100, "val_size": 80},
    "teachers": {"t": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1,
                                 "eval_steps": 2, "batch_size": 64}, "card_aa_examples": 0}},
    "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 2, "attack_steps": 2, "eval_steps": 2,
              "batch_size": 64},
    "search": {"teacher": {"choice": ["t"]}},
}


def test_train_runs_one_trial_with_overrides(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SPACE, "search": {**SPACE["search"], "epsilon": {"uniform": [0.06, 0.1]}}}))
    assert main(["train", "--space", "s.yaml", "--set", "alpha=0.9", "--set", "lr=1e-2", "--out", "out"]) == 0
    out = capsys.readouterr().out
    # each searched key says which value it got and why; --set keys say so too
    assert "alpha = 0.9 (--set)" in out and "lr = 0.01 (--set)" in out
    assert "teacher = 't' (centre of the searched choice" in out and "epsilon = 0.08" in out
    trial = json.loads((tmp_path / "out" / "trial.json").read_text())
    assert trial["trial"]["alpha"] == 0.9 and trial["trial"]["teacher"] == "t" and len(trial["history"]) == 2
    assert trial["trial"]["epsilon"] == pytest.approx(0.08) and trial["trial"]["lr"] == 0.01
    test = json.loads((tmp_path / "out" / "test_metrics.json").read_text())
    assert set(test) == {"best", "last"} and test["last"]["test_n"] == 100
    assert (tmp_path / "runs" / "teachers").is_dir()
    # logged to MLflow like a sweep's trial: params, per-epoch metrics, test numbers, checkpoint
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("one").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["rslad_tune.kind"] == "train"
    assert run.data.params["alpha"] == "0.9" and run.data.params["teacher"] == "t"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_pgd_acc")) == [1, 2]
    assert run.data.metrics["best_test_pgd_acc"] == pytest.approx(test["best"]["test_pgd_acc"])
    assert "checkpoint/best.safetensors" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
