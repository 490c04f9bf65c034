"""Teacher proxies (docs/teacher-proxies/predictions.md): hand-computed values, the label teacher, the card cache."""
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rslad_tune.teachers.proxies import PROXIES, folder_proxies, teacher_proxies
from rslad_tune.teachers.source import TeacherSpec
from rslad_tune.trial.config import TrialConfig

# a 2-class linear teacher whose logits are its inputs: softmax of [0, ln(q/(1-q))] puts q on class 1
PROBS = [(0.75, 0), (0.15, 1), (0.9, 1), (0.24, 0)]  # (probability of class 0, true label)


def _tiny():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    x = torch.tensor([[math.log(p / (1 - p)), 0.0] for p, _ in PROBS])
    return model, x, torch.tensor([y for _, y in PROBS])


def _entropy(q: float) -> float:
    return -(q * math.log(q) + (1 - q) * math.log(1 - q))


# by hand: true-class probabilities .75, .85, .1, .24; correct, correct, wrong, wrong; confidences .75, .85, .9, .76
EXPECTED = {
    "true_prob": (0.75 + 0.85 + 0.1 + 0.24) / 4,
    "clean_acc": 0.5,
    "nll": -(math.log(0.75) + math.log(0.85) + math.log(0.1) + math.log(0.24)) / 4,
    # bins of width 1/15: .75 and .76 share (11/15, 12/15] (accuracy 1/2, confidence .755); .85 and .9 are alone
    "ece": (2 * abs(0.5 - 0.755) + abs(1 - 0.85) + abs(0 - 0.9)) / 4,
    "entropy": sum(_entropy(q) for q in (0.75, 0.85, 0.9, 0.76)) / 4,
}


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_the_proxies_of_a_tiny_teacher_equal_the_hand_computed_values(batch_size):
    model, x, y = _tiny()
    got = teacher_proxies(model, x, y, batch_size=batch_size)
    assert set(PROXIES) <= set(got) and got["n"] == 4
    for k, v in EXPECTED.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert EXPECTED["ece"] == pytest.approx(0.39)  # not the unbinned mean |correct - confidence| (0.515)


def test_a_logits_table_gives_the_same_proxies_as_its_module():
    model, x, y = _tiny()
    with torch.no_grad():
        table = model(x)
    assert teacher_proxies(table, None, y, batch_size=3) == pytest.approx(teacher_proxies(model, x, y))


def _splits_cfg():
    return TrialConfig(dataset="synthetic", train_subset=200, val_size=40, test_subset=40, device="cpu")


@pytest.mark.parametrize("s", [0.0, 0.1])
def test_the_label_teachers_proxies(s):
    from rslad_tune.teachers.labels import SOURCE
    from rslad_tune.trial.data import load_data

    splits = load_data(_splits_cfg(), "cpu")
    c = splits.num_classes
    table = SOURCE.soft_labels(Path("."), {"labels": {"smoothing": s}}, None, splits)[:, 0]
    got = teacher_proxies(table, None, splits.train_y)
    on, off = 1 - s + s / c, s / c
    assert got["true_prob"] == pytest.approx(on, abs=1e-3)
    assert got["clean_acc"] == 1.0
    assert got["nll"] == pytest.approx(-math.log(on), abs=1e-3)
    assert got["ece"] == pytest.approx(1 - on, abs=1e-3)  # all exact, all at confidence 1 - s + s/C
    assert got["entropy"] == pytest.approx(-(on * math.log(on) + (c - 1) * off * math.log(off)) if s else 0, abs=1e-3)


def test_folder_proxies_are_cached_in_the_card_per_data_and_a_baseline_has_none(tmp_path):
    from rslad_tune.teachers.sources import SOURCES

    cfg = _splits_cfg()
    spec = TeacherSpec("l", "labels", {"smoothing": 0.1})
    folder = SOURCES["labels"].resolve(spec, cfg, tmp_path, log=lambda s: None)
    got = folder_proxies(folder, cfg)
    assert got["training"]["n"] == 160 and got["validation"]["n"] == 40 and got["training"]["true_prob"] == pytest.approx(0.91, abs=1e-3)
    (entry,) = json.loads((folder / "card.json").read_text())["proxies"].values()
    assert entry == got and folder_proxies(folder, cfg) == got  # the second call reads the card
    other = TrialConfig(**{**cfg.to_dict(), "train_subset": 120})
    assert folder_proxies(folder, other)["training"]["n"] == 80
    assert len(json.loads((folder / "card.json").read_text())["proxies"]) == 2  # one entry per data
    base = SOURCES["baseline"].resolve(TeacherSpec("b", "baseline", {"method": "sat"}), cfg, tmp_path, log=lambda s: None)
    assert folder_proxies(base, cfg) is None


def _rank_space(tmp_path) -> str:
    import yaml

    from rslad_tune.trial.files import save_weights
    from rslad_tune.trial.models import build_model

    teachers = {"none": {"baseline": "sat"}}
    for seed, name in enumerate(("a", "b")):
        torch.manual_seed(seed)
        save_weights(build_model("small_cnn", 1, 10, 4), tmp_path / f"{name}.safetensors")
        teachers[name] = {"checkpoint": f"{name}.safetensors", "arch": "small_cnn", "width": 4, "card_aa_examples": 0}
    raw = {"experiment": "rank", "runs_dir": str(tmp_path / "runs"), "teachers": teachers,
           "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40},
           "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "teacher": "a", "eval_steps": 2, "num_threads": 1}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(raw))
    return str(tmp_path / "space.yaml")


def test_teachers_rank_prints_one_table_sorted_by_the_proxy(tmp_path, capsys):
    from rslad_tune.cli import main

    space = _rank_space(tmp_path)
    assert main(["teachers", "rank", "--space", space, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    value = {r["teacher"]: r["training"] and r["training"]["nll"] for r in rows}
    assert value["none"] is None and value["a"] != value["b"] and rows[-1]["teacher"] == "none"
    for by, lower_first in (("true_prob", False), ("nll", True)):
        assert main(["teachers", "rank", "--space", space, "--by", by]) == 0
        out = capsys.readouterr().out
        lines = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"], ["–"])]
        assert [line[1] for line in lines][-1] == "none" and lines[-1][2] == "–"  # no proxies: last, unranked
        col = 2 + PROXIES.index(by)
        got = [float(line[col]) for line in lines[:2]]
        assert got == sorted(got, reverse=not lower_first) and [line[0] for line in lines[:2]] == ["1", "2"]
        assert f"sorted by {by}, {'lower' if lower_first else 'higher'} first" in out
    assert main(["teachers", "rank", "--space", space, "--by", "accuracy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("rslad-tune: error: --by: 'accuracy' is not allowed; must be one of the proxies true_prob, clean_acc, "
                   "nll, ece, entropy (docs/teacher-proxies/predictions.md)")


def test_teachers_rank_shows_every_built_zoo_teacher_of_the_dataset_marked_when_the_yaml_does_not_name_it(
        tmp_path, monkeypatch, capsys):
    """teacher.yaml names six zoo teachers: rank lists every built zoo teacher of fashion_mnist, the others marked
    (in_space false, `*`), each with its proxies (cached on the shipped cards); --space-only lists the YAML's alone."""
    from rslad_tune.cli import main
    from rslad_tune.sweep.spec import load_sweep
    from rslad_tune.teachers.zoo import FILES, ZOO_ROOT, zoo_names

    space = str(Path("search_spaces/teacher.yaml").resolve())
    monkeypatch.chdir(tmp_path)  # its runs_dir (runs/) resolves here
    named = {t.args["zoo"].split("/")[1] for t in load_sweep(space, sweep=False).teachers.values() if t.source == "zoo"}
    built = {z.split("/")[1] for z in zoo_names() if z.startswith("fashion_mnist/")
             and all((ZOO_ROOT / z / f).is_file() for f in FILES)}
    assert len(built - named) >= 6  # the held-out teachers are not in teacher.yaml
    assert main(["teachers", "rank", "--space", space, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["teacher"] for r in rows if r["in_space"]} == named | {"none"}
    assert {r["teacher"] for r in rows if not r["in_space"]} == built - named
    assert all(r["training"]["true_prob"] > 0 for r in rows if r["teacher"] != "none")
    assert main(["teachers", "rank", "--space", space]) == 0
    out = capsys.readouterr().out
    assert "natural_w32 *" in out and "natural_w16 *" not in out and "add `<name>: {zoo: fashion_mnist/<name>}`" in out
    assert main(["teachers", "rank", "--space", space, "--space-only", "--json"]) == 0
    assert {r["teacher"] for r in json.loads(capsys.readouterr().out)["rows"]} == named | {"none"}
