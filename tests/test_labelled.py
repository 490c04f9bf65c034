"""Few labels (`data.labelled`): which training images each kind of trial sees, and the pseudo-label baseline."""
import json

import pytest
import torch
import yaml

from rslad_tune.cli import main
from rslad_tune.teachers.sources import read_teacher
from rslad_tune.trial import trainer
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.data import UNLABELLED, load_splits
from rslad_tune.trial.models import build_model

N = 60  # labelled images of the 250 training images below (300 - 50 held out)


def _splits(labelled=N):
    return load_splits("synthetic", train_subset=300, test_subset=40, val_size=50, labelled=labelled)


def test_only_the_first_n_training_images_keep_their_labels():
    full, few = _splits(None), _splits()
    assert torch.equal(few.train_x, full.train_x) and torch.equal(few.val_y, full.val_y)  # the same split
    assert torch.equal(few.train_y[:N], full.train_y[:N]) and (few.train_y[N:] == UNLABELLED).all()
    lab = few.only_labelled()
    assert len(lab.train_x) == N and lab.images_per_epoch == 250 and (lab.train_y >= 0).all()
    assert full.only_labelled() is full  # without data.labelled nothing changes


def _seen_rows(method: str, splits, monkeypatch, teacher=None, soft=None) -> tuple[set[int], int]:
    """Which training images (row numbers of the full split) the trial's steps received, and how many steps."""
    rows_of = {tuple(x.flatten()[:64].tolist()): i for i, x in enumerate(_splits(None).train_x)}
    seen, steps = set(), [0]
    real_step = trainer.train_step

    def spy(model, method_, cfg, x, y, opt, teacher=None, teacher_logits=None):
        steps[0] += 1
        seen.update(rows_of[tuple(r.flatten()[:64].tolist())] for r in x)
        return real_step(model, method_, cfg, x, y, opt, teacher, teacher_logits)

    monkeypatch.setattr(trainer, "train_step", spy)
    cfg = TrialConfig(dataset="synthetic", method=method, width=4, epochs=1, batch_size=25, attack_steps=1,
                      eval_steps=1, device="cpu", labelled=N)
    trainer.train_model(cfg, teacher, splits=splits, soft_labels=soft)
    return seen, steps[0]


def test_a_label_method_never_sees_an_unlabelled_image_but_takes_as_many_steps(monkeypatch):
    seen, steps = _seen_rows("sat", _splits(), monkeypatch)
    assert seen == set(range(N))  # every labelled image, several times; no other
    assert steps == 250 // 25  # the whole split's steps per epoch: every arm has the same compute


def test_a_label_free_method_trains_on_the_unlabelled_images(monkeypatch):
    splits = _splits()
    teacher = build_model("small_cnn", 1, 10, width=4).eval()
    seen, steps = _seen_rows("rslad", splits, monkeypatch, teacher=teacher)
    assert seen == set(range(250)) and steps == 10


def test_a_label_reading_loss_on_an_unlabelled_image_fails_loudly():
    splits = _splits()
    x, y = splits.train_x[N:N + 4], splits.train_y[N:N + 4]
    with pytest.raises((IndexError, RuntimeError)):
        torch.nn.functional.cross_entropy(build_model("small_cnn", 1, 10, width=4)(x), y)


def test_the_pseudo_baseline_labels_the_unlabelled_images_with_the_teachers_argmax(tmp_path):
    splits = _splits()
    cfg = TrialConfig(dataset="synthetic", method="natural", width=4, epochs=2, batch_size=25, eval_steps=1, device="cpu")
    teacher = trainer.train_model(cfg, splits=_splits(None))["model"].eval()  # a teacher that tells classes apart
    folder = tmp_path / "labeller"
    folder.mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"baseline": "sat", "pseudo": "lab"}))  # the baseline's folder
    from rslad_tune.trial.files import save_weights
    save_weights(teacher, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"arch": "small_cnn", "width": 4, "in_channels": 1, "num_classes": 10,
                                                    "image_size": 28}))
    baseline = read_teacher("pseudo", tmp_path)  # a folder written before the source stamp: found by its keys
    assert baseline.source == "baseline"
    out = baseline.train_splits(splits, {"lab": read_teacher("lab", folder)}, "cpu")
    with torch.no_grad():
        argmax = teacher(splits.train_x[N:]).argmax(1)
    assert out.labelled is None and torch.equal(out.train_y[N:], argmax)
    assert torch.equal(out.train_y[:N], splits.train_y[:N])  # the true labels where there are some
    assert len(set(argmax.tolist())) > 1  # not a constant: the check above could fail


SPACE = {
    "experiment": "few",
    "data": {"dataset": "synthetic", "train_subset": 300, "test_subset": 40, "val_size": 50, "labelled": N},
    "teachers": {"t": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1,
                                 "eval_steps": 1, "batch_size": 25}, "card_aa_examples": 0},
                 "none": {"baseline": "sat"},
                 "pseudo": {"baseline": {"pseudo": "sat"}}},  # the one teacher, t, labels by default
    "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 1,
              "batch_size": 25},
    "search": {"teacher": {"choice": ["t", "none", "pseudo"]}},
}


@pytest.mark.parametrize("teacher", ["pseudo", "t"])
def test_rslad_tune_train_runs_the_few_label_arms(teacher, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    assert main(["train", "--space", "s.yaml", "--set", f"teacher={teacher}", "--out", "out"]) == 0
    trial = json.loads((tmp_path / "out" / "trial.json").read_text())
    assert trial["trial"]["labelled"] == N and len(trial["history"]) == 1
    teachers = {p.name for p in (tmp_path / "runs" / "teachers").iterdir()}
    # the pseudo baseline's labeller is resolved with it; its folder names the labeller
    assert ("baseline-sat-pseudo-t" in teachers) == (teacher == "pseudo")
    assert "labelled by teacher t's argmax" in capsys.readouterr().out or teacher == "t"
