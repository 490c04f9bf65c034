import json

import pytest
import torch

from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.errors import TrialDiverged
from rslad_tune.trial.schedules import lr_factor
from rslad_tune.trial.trainer import train_model

TINY = dict(dataset="synthetic", train_subset=640, test_subset=100, val_size=128, arch="small_cnn", width=4,
            batch_size=64, lr=0.05, attack_steps=2, eval_steps=2, epsilon=0.05, eval_epsilon=0.05, num_threads=1)


def test_sat_trial_on_synthetic_data_improves_its_loss():
    reports = []
    r = train_model(TrialConfig(method="sat", epochs=4, **TINY), report=lambda m, c: reports.append(m))
    losses = [h["train_loss"] for h in r["history"]]
    assert [m["epoch"] for m in reports] == [1, 2, 3, 4]
    assert losses[-1] < 0.8 * losses[0], losses
    assert r["history"][-1]["clean_acc"] > 0.3  # chance is 0.1


def test_rslad_trial_reduces_kl_to_its_teacher():
    t = train_model(TrialConfig(method="sat", epochs=3, **TINY))["model"]
    r = train_model(TrialConfig(method="rslad", teacher="t", epochs=3, **TINY), teacher=t)
    losses = [h["train_loss"] for h in r["history"]]
    assert losses[-1] < losses[0], losses


def test_checkpoint_then_resume_continues_where_it_stopped(tmp_path):
    cfg = TrialConfig(method="sat", epochs=3, **TINY)
    full = train_model(cfg, checkpoint_dir=tmp_path / "full")
    part_cfg = TrialConfig(**{**cfg.to_dict(), "epochs": 3})
    seen = []

    class Stop(Exception):
        pass

    def report(m, c):
        seen.append(m["epoch"])
        if m["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train_model(part_cfg, checkpoint_dir=tmp_path / "part", report=report)
    resumed = train_model(part_cfg, checkpoint_dir=tmp_path / "part2", resume_dir=tmp_path / "part")
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    # same seed, same batches, same RNG state: the resumed run ends where the uninterrupted one did
    assert resumed["history"][-1]["train_loss"] == pytest.approx(full["history"][-1]["train_loss"], rel=1e-4)
    files = {p.name for p in (tmp_path / "part2").iterdir()}
    assert {"model.safetensors", "best.safetensors", "state.pt", "trial.json"} <= files
    assert json.loads((tmp_path / "part2" / "trial.json").read_text())["trial"]["epochs"] == 3


def test_divergence_is_reported_as_trial_diverged():
    with pytest.raises(TrialDiverged, match="loss became"):
        train_model(TrialConfig(method="natural", epochs=2, **{**TINY, "lr": 1e12, "momentum": 0.0}))


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "piecewise", "constant"])
def test_lr_schedules_finish_within_the_trial(schedule):
    cfg = TrialConfig(schedule=schedule)
    f = [lr_factor(cfg, s, 1000) for s in range(1001)]
    assert max(f) <= 1.0 + 1e-9
    if schedule in ("cosine", "onecycle"):
        assert f[-1] == pytest.approx(0.0, abs=1e-9)
    if schedule == "piecewise":
        assert f[0] == 1.0 and f[-1] == pytest.approx(1e-3)
        assert f[int(1000 * 214 / 300)] == 1.0 and f[int(1000 * 216 / 300)] == pytest.approx(0.1)


@pytest.mark.parametrize("method, kept", [("natural", 3), ("sat", 1)])
def test_a_model_trained_without_attacks_keeps_its_last_epoch(monkeypatch, method, kept):
    """Validation PGD accuracy that falls every epoch (as it does for a naturally trained model): best-by-PGD
    keeps epoch 1 for an adversarial method, but a natural model keeps its last epoch, weights included."""
    falling = iter([0.5, 0.4, 0.3])
    monkeypatch.setattr("rslad_tune.trial.trainer.clean_and_pgd", lambda *a, **k: {"clean_acc": 0.9, "pgd_acc": next(falling)})
    r = train_model(TrialConfig(method=method, epochs=3, **TINY))
    assert r["best_epoch"] == kept
    last = r["model"].state_dict()
    same = all(torch.equal(last[k], v) for k, v in r["best_state"].items())
    assert same == (kept == 3)
