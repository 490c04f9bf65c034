"""Teacher sources are adapters in a registry: a source registered here, and nowhere else, runs `rslad-tune train`."""
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from rslad_tune.cli import main
from rslad_tune.teachers import sources
from rslad_tune.teachers.folders import card, load_weights_folder, publish
from rslad_tune.teachers.source import Source, TeacherSpec
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
    teacher = sources.load_teacher(folder)  # a plain weights folder: the registry's default loader
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
