"""Zoo teachers: named from a YAML, used without training, checked before anything runs."""
import json
from pathlib import Path

import pytest
import yaml

from rslad_tune.cli import main
from rslad_tune.teachers import zoo
from rslad_tune.trial.files import save_weights, write_json
from rslad_tune.trial.models import build_model, model_config

DATA = {"dataset": "synthetic", "train_subset": 320, "test_subset": 64, "val_size": 64}


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """A zoo holding one built synthetic teacher (synthetic/w4) and one recipe without weights (synthetic/todo)."""
    root = tmp_path / "zoo"
    folder = root / "synthetic" / "w4"
    folder.mkdir(parents=True)
    recipe = {"data": {"dataset": "synthetic"}, "teacher": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1}}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    save_weights(build_model("small_cnn", 1, 10, 4), folder / "model.safetensors")
    write_json(model_config("small_cnn", 4, 1, 10, 28), folder / "config.json")
    write_json({"params": 1, "macs": 1, "clean_acc": 0.5, "pgd20_acc": 0.25, "eval_n": 64, "source": "train",
                "eval_epsilon": 0.1, "eval_steps": 20}, folder / "card.json")
    (root / "synthetic" / "todo").mkdir()
    (root / "synthetic" / "todo" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(zoo, "ZOO_ROOT", root)
    return folder


def _space(tmp_path, teacher: dict) -> str:
    space = {"experiment": "z", "data": DATA, "runs_dir": str(tmp_path / "runs"), "teachers": {"t": teacher},
             "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 1, "teacher": "t",
                       "attack_steps": 1, "eval_steps": 2, "batch_size": 64, "num_threads": 1}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def test_a_yaml_that_names_a_zoo_teacher_runs_without_training_it(fake_zoo, tmp_path, capsys):
    assert main(["train", "--space", _space(tmp_path, {"zoo": "synthetic/w4"}), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "training" not in out and "zoo teacher synthetic/w4" in out
    (folder,) = (tmp_path / "runs" / "teachers").glob("zoo-synthetic-w4-*")
    assert json.loads((folder / "card.json").read_text()) == json.loads((fake_zoo / "card.json").read_text())  # read, not recomputed
    assert (tmp_path / "out" / "best.safetensors").is_file()


@pytest.mark.parametrize("teacher, words", [
    ({"zoo": "synthetic/w5"}, ["teachers.t.zoo", "synthetic/w4"]),         # unknown: did you mean
    ({"zoo": "synthetic/todo"}, ["teachers.t.zoo", "zoo build"]),          # a recipe without weights
    ({"zoo": "synthetic/w4", "card_examples": 10}, ["card"]),               # its card ships with it
])
def test_bad_zoo_teachers_are_one_line_errors(fake_zoo, tmp_path, capsys, teacher, words):
    assert main(["train", "--space", _space(tmp_path, teacher)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "runs").exists()


def test_a_corrupt_zoo_weights_file_is_refused_before_anything_runs(fake_zoo, tmp_path, capsys):
    data = (fake_zoo / "model.safetensors").read_bytes()
    (fake_zoo / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["train", "--space", _space(tmp_path, {"zoo": "synthetic/w4"})]) == 2
    assert "teachers.t.zoo" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_the_shipped_zoo_is_complete_and_small():
    """Every built teacher has weights, config and a card measured on the full test split; a recipe not built yet
    (the zoo grows one build at a time) is refused in one line naming the command that builds it."""
    from rslad_tune.trial.errors import SpecError

    built = [n for n in zoo.zoo_names() if (zoo.ZOO_ROOT / n / "model.safetensors").is_file()]
    assert len(built) >= 6
    for name in set(zoo.zoo_names()) - set(built):
        with pytest.raises(SpecError, match=f"rslad-tune zoo build {name}"):
            zoo.zoo_folder(name)
    names = built
    total = 0
    for name in names:
        folder = zoo.zoo_folder(name)
        card = json.loads((folder / "card.json").read_text())
        assert card["eval_n"] == 10000 and card["aa_n"] >= 200 and card["build_time_s"] > 0
        total += sum((folder / f).stat().st_size for f in zoo.FILES)
    assert total < 25 * 2**20
    params = [json.loads((zoo.ZOO_ROOT / n / "card.json").read_text())["params"] for n in names]
    assert max(params) >= 8 * min(params)


def test_a_damaged_resolved_zoo_teacher_folder_is_refused_in_one_line(fake_zoo, tmp_path):
    from rslad_tune.sweep.spec import load_sweep
    from rslad_tune.teachers.sources import prepare_teachers
    from rslad_tune.trial.errors import SpecError

    spec = load_sweep(_space(tmp_path, {"zoo": "synthetic/w4"}), sweep=False)
    runs = tmp_path / "runs"
    folder = Path(prepare_teachers(spec.teachers, spec.trial, runs, log=lambda s: None)["t"].folder)
    (folder / "card.json").write_text("[")
    with pytest.raises(SpecError, match=r"teachers\.t: .*damaged.*card\.json.*delete it") as e:
        prepare_teachers(spec.teachers, spec.trial, runs, log=lambda s: None)
    assert len(str(e.value).splitlines()) == 1
    (folder / "card.json").write_text("{}")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(SpecError, match=r"teachers\.t: .*damaged.*not the zoo's"):
        prepare_teachers(spec.teachers, spec.trial, runs, log=lambda s: None)


def test_a_zoo_teacher_whose_shipped_weights_changed_is_refused_before_anything_runs(fake_zoo, tmp_path, capsys):
    data = bytearray((fake_zoo / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # readable, but not the bytes its digest was written for
    (fake_zoo / "model.safetensors").write_bytes(bytes(data))
    assert main(["train", "--space", _space(tmp_path, {"zoo": "synthetic/w4"})]) == 2
    err = capsys.readouterr().err.strip()
    assert "teachers.t.zoo" in err and "damaged" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_zoo_list_shows_true_prob_only_once_zoo_proxies_stored_it(fake_zoo, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "LIST_DATA", {"train_subset": 320, "val_size": 64})
    row = lambda: next(line for line in zoo.zoo_table().splitlines() if line.startswith("synthetic/w4")).split()
    assert row()[7:9] == ["–", "–"]  # not stored yet: not computed by `zoo list`
    before = json.loads((fake_zoo / "card.json").read_text())
    assert main(["zoo", "proxies"]) == 0  # every built teacher (synthetic/todo has no weights)
    assert "zoo teacher synthetic/w4: true_prob" in capsys.readouterr().out
    card = json.loads((fake_zoo / "card.json").read_text())
    (entry,) = card.pop("proxies").values()
    assert card == before and entry["training"]["n"] == 256 and entry["validation"]["n"] == 64
    assert row()[7:9] == [f"{entry['training']['true_prob']:.4f}", f"{100 * entry['training']['clean_acc']:.2f}"]


def test_the_zoo_lists_proxies_on_teacher_yamls_data():
    space = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "teacher.yaml").read_text())
    assert {"dataset": "fashion_mnist", **zoo.LIST_DATA} == space["data"]
    for name in [n for n in zoo.zoo_names() if (zoo.ZOO_ROOT / n / "card.json").is_file()]:  # rslad-tune zoo proxies
        (entry,) = json.loads((zoo.ZOO_ROOT / name / "card.json").read_text())["proxies"].values()
        assert entry["data"] == space["data"] and entry["training"]["n"] == 9000 and entry["validation"]["n"] == 1000
