"""`rslad-tune train`: one trial from the YAML's fixed values, without Ray."""
import json
from types import SimpleNamespace

import pytest
import yaml
from mlflow.tracking import MlflowClient

from rslad_tune.cli import main
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.files import file_digest, save_weights
from rslad_tune.trial.metrics import CARD, as_metrics
from rslad_tune.trial.models import build_model
from rslad_tune.trial.scoring import protocol_key, score
from rslad_tune.trial.trainer import score_test_split

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
    # scored by scoring.score, as export scores: each number cached beside its checkpoint's weights, under its protocol
    for which, weights in (("best", "best"), ("last", "model")):
        store = json.loads((tmp_path / "out" / f"{weights}.scores.json").read_text())
        assert store["weights_sha256"] == file_digest(tmp_path / "out" / f"{weights}.safetensors")
        assert sorted(store["scores"].values()) == sorted([test[which]["test_clean_acc"], test[which]["test_pgd_acc"]])
    assert (tmp_path / "runs" / "teachers").is_dir()
    # logged to MLflow like a sweep's trial: params, per-epoch metrics, test numbers, checkpoint
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("one").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["rslad_tune.kind"] == "train"
    assert run.data.params["alpha"] == "0.9" and run.data.params["teacher"] == "t"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_pgd_acc")) == [1, 2]
    assert run.data.metrics["best_test_pgd_acc"] == pytest.approx(test["best"]["test_pgd_acc"])
    assert "checkpoint/best.safetensors" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]


def test_the_test_split_is_scored_through_scoring_score_and_cached_beside_the_weights(tmp_path):
    """`train`'s test numbers are scoring.score's (clean and the trial's own PGD column), under today's metric keys."""
    import torch

    model = build_model("small_cnn", 1, 10, 4).eval()
    splits = SimpleNamespace(test_x=torch.rand(24, 1, 28, 28), test_y=torch.arange(24) % 10)
    cfg = TrialConfig(eval_steps=2, seed=3)
    weights = tmp_path / "best.safetensors"
    save_weights(model, weights)
    m = score_test_split(model, cfg, splits, weights=weights)
    want = score(model, splits.test_x, splits.test_y, 0.1, ["Clean", "PGD-2@0.025"], seed=3)
    assert m == {"test_clean_acc": want["Clean"], "test_pgd_acc": want["PGD-2@0.025"], "test_n": 24}
    store = json.loads(weights.with_suffix(".scores.json").read_text())
    assert store["weights_sha256"] == file_digest(weights)
    assert store["scores"] == {protocol_key("Clean", 0.1, 24, 3): want["Clean"],
                               protocol_key("PGD-2@0.025", 0.1, 24, 3): want["PGD-2@0.025"]}
    assert score_test_split(model, cfg, splits, n=8) == as_metrics(
        score(model, splits.test_x[:8], splits.test_y[:8], 0.1, ["Clean", "PGD-2@0.025"], seed=3), "PGD-2@0.025",
        prefix="test_", n=8)


def test_the_metric_vocabulary_spells_todays_keys():
    """Saved files and runs are read back: the table must give the keys they hold."""
    scores = {"Clean": 0.9, "PGD_SAT": 0.5, "AA": 0.4}
    assert as_metrics(scores, "PGD_SAT", prefix="test_", n=7) == {"test_clean_acc": 0.9, "test_pgd_acc": 0.5,
                                                                  "test_aa_acc": 0.4, "test_n": 7}
    assert as_metrics(scores, "PGD_SAT", where=CARD) == {"clean_acc": 0.9, "pgd20_acc": 0.5, "aa_acc": 0.4}
