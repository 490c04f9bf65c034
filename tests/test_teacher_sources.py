"""Teacher sources are adapters in a registry: a source registered here, and nowhere else, runs `rslad-tune train`."""
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from rslad_tune.cli import main
from rslad_tune.teachers import sources
from rslad_tune.teachers.folders import card, publish
from rslad_tune.teachers.sources import load_teacher
from rslad_tune.teachers.source import Source, TeacherSpec, load_weights_folder
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.data import load_data, resolve_device
from rslad_tune.trial.errors import SpecError
from rslad_tune.trial.files import save_weights, write_json
from rslad_tune.trial.models import build_from_config, model_config


class RandomInit(Source):
    """A throw-away source: a teacher that is an untrained small CNN of the given width and seed."""

    key = "random_init"
    example = "`random_init:` (a width)"
    entry_keys = ("init_seed",)

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        if not isinstance(raw["random_init"], int) or raw["random_init"] < 1:
            raise SpecError(f"{label}.random_init", raw["random_init"], "must be a positive width")
        return {"width": raw["random_init"], "seed": raw.get("init_seed", 0)}

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log) -> Path:
        final = runs_dir / "teachers" / f"random-w{spec.args['width']}-s{spec.args['seed']}"
        if final.exists():
            return final
        splits = load_data(trial, resolve_device(trial.device))
        saved = model_config("small_cnn", spec.args["width"], splits.in_channels, splits.num_classes, splits.image_size)
        torch.manual_seed(spec.args["seed"])
        model = build_from_config(saved).eval()
        tmp = final.with_name(final.name + ".tmp")
        tmp.mkdir(parents=True)
        save_weights(model, tmp / "model.safetensors")
        write_json(saved, tmp / "config.json")
        write_json(card(model, trial, splits, "random_init", spec, {}, log), tmp / "card.json")
        publish(tmp, final)
        log(f"teacher {spec.name}: random init -> {final}")
        return final


@pytest.fixture
def random_source(monkeypatch):
    monkeypatch.setitem(sources.SOURCES, "random_init", RandomInit())


def _space(tmp_path, teacher) -> str:
    raw = {"experiment": "rand", "runs_dir": str(tmp_path / "runs"),
           "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40},
           "teachers": {"r": teacher},
           "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 2,
                     "batch_size": 50, "teacher": "r", "num_threads": 1}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_source_registered_in_a_test_file_runs_rslad_tune_train(random_source, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(out)]
    assert main(["train", "--space", _space(tmp_path, {"random_init": 6, "init_seed": 3, "card_aa_examples": 0})] + args) == 0
    (folder,) = (tmp_path / "runs" / "teachers").glob("random-w6-s3")
    assert (folder / "card.json").is_file() and (out / "best.safetensors").is_file()
    assert list(folder.glob("soft-labels-*.safetensors"))  # the trial read the teacher through the soft-label cache
    # resolved once: the source that wrote the folder is stamped into its config.json, the default loader reads it
    assert yaml.safe_load((folder / "config.json").read_text())["teacher_source"] == "random_init"
    teacher = load_teacher(folder)
    assert torch.equal(teacher(torch.zeros(1, 1, 28, 28)),
                       load_weights_folder(folder, yaml.safe_load((folder / "config.json").read_text()))(torch.zeros(1, 1, 28, 28)))
    assert "random init" in capsys.readouterr().out


def test_a_registered_source_checks_its_entry_and_others_name_it(random_source, tmp_path, capsys):
    assert main(["train", "--space", _space(tmp_path, {"random_init": 0})]) == 2
    assert "teachers.r.random_init: 0 is not allowed; must be a positive width" in capsys.readouterr().err
    assert main(["train", "--space", _space(tmp_path, {"zoo": "fashion_mnist/sat_w8", "init_seed": 1})]) == 2
    assert "teachers.r.init_seed: 1 is not allowed; only a `random_init:` teacher takes init_seed" in capsys.readouterr().err
    assert main(["train", "--space", _space(tmp_path, {"random_inti": 4})]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'random_init'" in err and len(err.splitlines()) == 1


def _tiny(tmp_path, entry: dict, **trial) -> str:
    raw = {"experiment": "src", "runs_dir": str(tmp_path / "runs"),
           "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40},
           "teachers": {"t": entry},
           "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 2,
                     "batch_size": 50, "teacher": "t", "num_threads": 1, **trial}}
    path = tmp_path / f"space-{len(list(tmp_path.glob('space-*')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_the_no_teacher_baseline_trains_the_student_alone_bit_for_bit(tmp_path):
    uri = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(["train", "--space", _tiny(tmp_path, {"baseline": "sat"}), "--out", str(tmp_path / "base")] + uri) == 0
    assert main(["train", "--space", _tiny(tmp_path, {"baseline": "sat"}, method="sat", teacher=None),
                 "--out", str(tmp_path / "sat")] + uri) == 0
    a, b = _weights(tmp_path / "base"), _weights(tmp_path / "sat")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same student as SAT alone
    assert yaml.safe_load((tmp_path / "base" / "trial.json").read_text())["trial"]["method"] == "sat"
    assert not list((tmp_path / "runs" / "teachers" / "baseline-sat").glob("soft-labels-*"))  # nothing to cache


def test_the_label_teacher_gives_the_true_labels_as_soft_labels(tmp_path):
    from rslad_tune.teachers.labels import FLOOR, SOURCE
    from rslad_tune.trial.config import TrialConfig

    splits = load_data(TrialConfig(dataset="synthetic", train_subset=200, val_size=40), "cpu")
    table = SOURCE.soft_labels(Path("."), {"labels": {"smoothing": 0.1}}, None, splits).float()
    probs = torch.softmax(table[:, 0], 1)
    expected = torch.full_like(probs, 0.01).scatter_(1, splits.train_y[:, None].long(), 0.91)
    assert torch.allclose(probs, expected, atol=1e-3)  # (1 - s) one-hot + s / C
    hard = SOURCE.soft_labels(Path("."), {"labels": {"smoothing": 0.0}}, None, splits).float()
    assert hard.max() == 0 and hard.min() == FLOOR and (hard[:, 0].argmax(1) == splits.train_y).all()
    out = tmp_path / "out"
    assert main(["train", "--space", _tiny(tmp_path, {"labels": {"smoothing": 0.1}}), "--out", str(out),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    assert (out / "best.safetensors").is_file() and (tmp_path / "runs" / "teachers" / "labels-s0.1" / "card.json").is_file()


@pytest.mark.parametrize("teacher,words", [
    ({"baseline": "rslad"}, ["teachers.t.baseline: 'rslad'", "sat, trades, mart"]),
    ({"baseline": "sat", "card_aa_examples": 3}, ["teachers.t.card_aa_examples", "a baseline has no teacher to card"]),
    ({"labels": {"smoothing": 1.5}}, ["teachers.t.labels.smoothing: 1.5", "0 <= smoothing < 1"]),
    ({"labels": 0.1}, ["teachers.t.labels: 0.1", "{smoothing: s}"]),
    ({"labels": {"smooth": 0.1}}, ["teachers.t.labels", "{smoothing: s}"]),
    ({"baseline": "sat", "labels": {}}, ["teachers.t", "give exactly one of"]),
])
def test_bad_baseline_and_label_entries_are_one_line_errors(tmp_path, capsys, teacher, words):
    assert main(["train", "--space", _tiny(tmp_path, teacher)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "runs").exists()
