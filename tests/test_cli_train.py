"""`rslad-tune train`: one trial from the YAML's fixed values, without Ray."""
import json

import yaml

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
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    # the teacher is searched in the YAML: `train` needs it fixed with --set
    assert main(["train", "--space", "s.yaml"]) == 2
    assert "--set teacher=" in capsys.readouterr().err
    assert main(["train", "--space", "s.yaml", "--set", "teacher=t", "--set", "alpha=0.9", "--out", "out"]) == 0
    trial = json.loads((tmp_path / "out" / "trial.json").read_text())
    assert trial["trial"]["alpha"] == 0.9 and trial["trial"]["teacher"] == "t" and len(trial["history"]) == 2
    test = json.loads((tmp_path / "out" / "test_metrics.json").read_text())
    assert set(test) == {"best", "last"} and test["last"]["test_n"] == 100
    assert (tmp_path / "runs" / "teachers").is_dir() and not (tmp_path / "runs" / "mlflow.db").exists()
