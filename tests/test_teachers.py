from pathlib import Path

import pytest

from rslad_tune.teachers.train import cache_key
import torch

from rslad_tune.sweep.spec import parse_sweep
from rslad_tune.teachers.folders import read_card
from rslad_tune.teachers.sources import check_teachers, load_teacher, prepare_teachers
from rslad_tune.trial.errors import SpecError
from rslad_tune.trial.files import save_weights
from rslad_tune.trial.models import build_model

DATA = {"dataset": "synthetic", "train_subset": 320, "test_subset": 64, "val_size": 64}


def _spec(tmp_path, teachers):
    teachers = {k: {"card_aa_examples": 0, **v} for k, v in teachers.items()}  # AutoAttack on cards: its own test
    raw = {"experiment": "t", "data": DATA, "teachers": teachers,
           "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 1, "teacher": next(iter(teachers)),
                     "eval_steps": 2, "num_threads": 1}}
    return parse_sweep(raw, path=str(tmp_path / "space.yaml"), sweep=False)


def test_trained_teacher_is_cached_and_reused(tmp_path):
    recipe = {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 2,
                        "num_threads": 1}}
    spec = _spec(tmp_path, {"a": recipe})
    logs = []
    dirs = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=logs.append)
    card = read_card(dirs["a"].folder)
    assert card["params"] > 0 and 0 <= card["pgd20_acc"] <= card["clean_acc"] <= 1 and card["source"] == "train"
    logs.clear()
    again = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=logs.append)
    assert again == dirs and any("cached" in line for line in logs)
    assert not list((tmp_path / "runs" / "teachers").glob(".*tmp"))  # no half-built folder left behind
    # a different recipe gets a different key (and folder)
    spec2 = _spec(tmp_path, {"a": {"train": {**recipe["train"], "width": 6}}})
    assert cache_key(spec2.teachers["a"].args["train"]) != cache_key(spec.teachers["a"].args["train"])
    model = load_teacher(dirs["a"].folder)
    assert not model.training and all(not p.requires_grad for p in model.parameters())


def test_checkpoint_teacher_from_safetensors(tmp_path):
    m = build_model("small_cnn", 1, 10, 6)
    save_weights(m, tmp_path / "t.safetensors")
    spec = _spec(tmp_path, {"file": {"checkpoint": "t.safetensors", "arch": "small_cnn", "width": 6}})
    dirs = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)
    loaded = load_teacher(dirs["file"].folder)
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded(x), m.eval()(x))
    assert read_card(dirs["file"].folder)["params"] == sum(p.numel() for p in m.parameters())


def test_checkpoint_teacher_with_the_wrong_architecture_is_refused(tmp_path):
    save_weights(build_model("small_cnn", 1, 10, 6), tmp_path / "t.safetensors")
    spec = _spec(tmp_path, {"file": {"checkpoint": "t.safetensors", "arch": "small_cnn", "width": 8}})
    with pytest.raises(SpecError, match="teachers.file.checkpoint.*does not match the architecture"):
        prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)


def test_corrupt_checkpoint_teacher_is_refused(tmp_path):
    (tmp_path / "t.safetensors").write_bytes(b"\x00" * 7)
    spec = _spec(tmp_path, {"file": {"checkpoint": "t.safetensors", "arch": "small_cnn", "width": 8}})
    with pytest.raises(SpecError, match="not a readable safetensors file"):
        prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)


class _RunsCodeWhenUnpickled:
    """Unpickling this calls Path.touch(marker): a stand-in for any code a hostile checkpoint could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_teacher_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "code-ran"
    state = {k: v for k, v in build_model("small_cnn", 1, 10, 6).state_dict().items()}
    torch.save({"state_dict": state, "extra": _RunsCodeWhenUnpickled(marker)}, tmp_path / "evil.pt")
    assert not marker.exists()
    spec = _spec(tmp_path, {"file": {"checkpoint": "evil.pt", "arch": "small_cnn", "width": 6}})
    with pytest.raises(SpecError, match="teachers.file.checkpoint.*refused.*weights_only"):
        prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)
    assert not marker.exists()  # the reduce was never called
    assert not (tmp_path / "runs" / "teachers").exists() or not list((tmp_path / "runs" / "teachers").iterdir())


def test_plain_pytorch_state_dict_teacher_loads_with_weights_only(tmp_path):
    m = build_model("small_cnn", 1, 10, 6).eval()
    torch.save({"state_dict": {"module." + k: v for k, v in m.state_dict().items()}}, tmp_path / "t.pth")
    spec = _spec(tmp_path, {"file": {"checkpoint": "t.pth", "arch": "small_cnn", "width": 6}})
    dirs = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(load_teacher(dirs["file"].folder)(x), m(x))


def _cifar_spec(tmp_path, teacher):
    raw = {"experiment": "t", "data": {"dataset": "synthetic_cifar", "train_subset": 64, "test_subset": 8, "val_size": 16},
           "teachers": {"rb": teacher},
           "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 1, "teacher": "rb", "eval_steps": 2,
                     "num_threads": 1}}
    spec = parse_sweep(raw, path=str(tmp_path / "space.yaml"), sweep=False)
    check_teachers(spec.teachers, raw["data"])  # preflight: RobustBench's list, the file, the network
    return spec


def test_robustbench_teacher_loads_offline_from_a_preplaced_checkpoint(tmp_path, monkeypatch):
    from rslad_tune.teachers import robustbench_loader as robustbench_zoo

    monkeypatch.setenv("RSLAD_TUNE_OFFLINE", "1")  # never try Google Drive, whatever the network
    rb = robustbench_zoo.robustbench()
    original = rb.zoo[rb.Dataset("cifar10")][rb.Threat("Linf")]["Wong2020Fast"]["model"]().eval()
    target = tmp_path / "rbmodels" / "cifar10" / "Linf" / "Wong2020Fast.pt"
    teacher = {"robustbench": "Wong2020Fast", "model_dir": "rbmodels", "card_aa_examples": 0}
    # offline and the file is not there yet: a one-line error naming the file to place
    with pytest.raises(SpecError, match=r"teachers\.rb\.robustbench.*offline and .*rbmodels/cifar10/Linf/Wong2020Fast\.pt is missing"):
        _cifar_spec(tmp_path, teacher)
    target.parent.mkdir(parents=True)
    torch.save({"state_dict": original.state_dict()}, target)  # the layout RobustBench's files have
    spec = _cifar_spec(tmp_path, teacher)
    dirs = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)
    card = read_card(dirs["rb"].folder)
    assert card["source"] == "robustbench:Wong2020Fast" and card["params"] == sum(p.numel() for p in original.parameters())
    assert card["macs"] > 0 and 0 <= card["pgd20_acc"] <= card["clean_acc"] <= 1
    assert not list((tmp_path / "runs" / "teachers").glob("*/model.safetensors"))  # RobustBench's file is not copied
    loaded = load_teacher(dirs["rb"].folder)
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(loaded(x), original(x), atol=1e-5)


def test_robustbench_teacher_input_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("RSLAD_TUNE_OFFLINE", "1")
    with pytest.raises(SpecError, match=r"teachers\.rb\.robustbench: 'Wong2020Fats'.*did you mean Wong2020Fast"):
        _cifar_spec(tmp_path, {"robustbench": "Wong2020Fats"})
    with pytest.raises(SpecError, match=r"teachers\.rb\.threat_model: 'Linfinity'.*Linf, L2, corruptions"):
        _cifar_spec(tmp_path, {"robustbench": "Wong2020Fast", "threat_model": "Linfinity"})
    with pytest.raises(SpecError, match=r"teachers\.rb\.dataset: 'cifar100'.*does not match data.dataset 'synthetic_cifar'"):
        _cifar_spec(tmp_path, {"robustbench": "Wong2020Fast", "dataset": "cifar100"})
    with pytest.raises(SpecError, match=r"teachers\.rb\.dataset: 'synthetic'.*CIFAR images"):
        _spec(tmp_path, {"rb": {"robustbench": "Wong2020Fast"}})
    with pytest.raises(SpecError, match=r"teachers\.rb\.arch: 'resnet18'.*model zoo"):
        _cifar_spec(tmp_path, {"robustbench": "Wong2020Fast", "arch": "resnet18"})


def test_robustbench_checkpoint_that_is_not_plain_weights_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RSLAD_TUNE_OFFLINE", "1")
    target = tmp_path / "rbmodels" / "cifar10" / "Linf" / "Wong2020Fast.pt"
    target.parent.mkdir(parents=True)
    marker = tmp_path / "ran"
    torch.save({"state_dict": {}, "extra": _RunsCodeWhenUnpickled(marker)}, target)
    spec = _cifar_spec(tmp_path, {"robustbench": "Wong2020Fast", "model_dir": "rbmodels", "card_aa_examples": 0})
    with pytest.raises(SpecError, match="refused"):
        prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)
    assert not marker.exists()


def test_teacher_card_has_autoattack_and_a_cached_card_gains_it_later(tmp_path):
    recipe = {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 2,
                        "num_threads": 1}}
    spec = _spec(tmp_path, {"a": recipe})  # card_aa_examples 0: no AutoAttack
    dirs = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)
    assert "aa_acc" not in read_card(dirs["a"].folder)
    spec = _spec(tmp_path, {"a": {**recipe, "card_aa_examples": 6}})
    logs = []
    again = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=logs.append)
    card = read_card(again["a"].folder)
    assert again == dirs and any("cached" in s for s in logs) and any("AutoAttack" in s for s in logs)
    assert card["aa_n"] == 6 and 0 <= card["aa_acc"] <= card["pgd20_acc"] + 1 / 6 + 1e-9


def test_natural_teacher_keeps_its_last_epoch_and_its_card_uses_the_full_test_split(tmp_path):
    recipe = {"train": {"method": "natural", "arch": "small_cnn", "width": 4, "epochs": 3, "eval_steps": 2,
                        "num_threads": 1}}
    spec = _spec(tmp_path, {"nat": recipe})
    card = read_card(prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)["nat"].folder)
    assert card["best_epoch"] == 3
    assert card["eval_n"] == DATA["test_subset"]  # no card_examples: every test image


def test_a_cached_card_is_rescored_when_its_settings_change(tmp_path, monkeypatch):
    recipe = {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 2,
                        "num_threads": 1}}
    spec = _spec(tmp_path, {"a": {**recipe, "card_examples": 32}})
    folder = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)["a"].folder
    assert read_card(folder)["eval_n"] == 32
    spec = _spec(tmp_path, {"a": recipe})  # same recipe (same cached teacher), card on every test image now
    logs = []
    assert prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=logs.append)["a"].folder == folder
    assert read_card(folder)["eval_n"] == DATA["test_subset"] and any("rescoring" in line for line in logs)
    # asked the same again: the card records the request, so the data is not even loaded to check it
    import rslad_tune.teachers.folders as teachers_mod

    monkeypatch.setattr(teachers_mod, "load_data", lambda *a, **k: pytest.fail("data loaded for a complete card"))
    assert prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=logs.append)["a"].folder == folder


# --------------------------------------------------------------------------- verified teacher folders

RECIPE = {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1, "eval_steps": 2,
                    "num_threads": 1}}


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the last tensor's bytes: readable, but not what was written
    path.write_bytes(bytes(data))


DAMAGE = {
    "weights bytes changed": lambda d: _flip_last_byte(d / "model.safetensors"),
    "weights truncated": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:300]),
    "weights missing": lambda d: (d / "model.safetensors").unlink(),
    "card.json not JSON": lambda d: (d / "card.json").write_text("{half"),
    "config.json not JSON": lambda d: (d / "config.json").write_text(""),
}


def test_a_damaged_trained_teacher_is_rebuilt_with_one_log_line(tmp_path):
    spec = _spec(tmp_path, {"a": RECIPE})
    runs = tmp_path / "runs"
    folder = Path(prepare_teachers(spec.teachers, spec.trial, runs, log=lambda s: None)["a"].folder)
    good = load_teacher(folder).state_dict()
    for kind, damage in DAMAGE.items():
        damage(folder)
        logs = []
        assert prepare_teachers(spec.teachers, spec.trial, runs, log=logs.append)["a"].folder == folder
        damaged = [line for line in logs if " is damaged" in line]
        assert len(damaged) == 1 and "rebuilding" in damaged[0] and str(folder) in damaged[0], (kind, logs)
        rebuilt = load_teacher(folder).state_dict()  # sound again, and the same recipe gives the same weights
        assert all(torch.equal(rebuilt[k], good[k]) for k in good), kind
        assert not [p for p in (runs / "teachers").iterdir() if p.name.startswith(".")]  # no .tmp or .bad left


def test_checkpoint_teachers_are_keyed_by_content_and_a_damaged_folder_is_refused(tmp_path):
    save_weights(build_model("small_cnn", 1, 10, 6), tmp_path / "t.safetensors")
    spec = _spec(tmp_path, {"file": {"checkpoint": "t.safetensors", "arch": "small_cnn", "width": 6}})
    runs = tmp_path / "runs"
    folder = Path(prepare_teachers(spec.teachers, spec.trial, runs, log=lambda s: None)["file"].folder)
    # the same bytes under another name (and a later mtime) are the same teacher
    (tmp_path / "copy.safetensors").write_bytes((tmp_path / "t.safetensors").read_bytes())
    same = _spec(tmp_path, {"other": {"checkpoint": "copy.safetensors", "arch": "small_cnn", "width": 6}})
    assert prepare_teachers(same.teachers, same.trial, runs, log=lambda s: None)["other"].folder == folder
    # other weights in the same file name are another teacher
    save_weights(build_model("small_cnn", 1, 10, 6), tmp_path / "t.safetensors")
    assert prepare_teachers(spec.teachers, spec.trial, runs, log=lambda s: None)["file"].folder != folder
    _flip_last_byte(folder / "model.safetensors")
    with pytest.raises(SpecError) as e:
        prepare_teachers(same.teachers, same.trial, runs, log=lambda s: None)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "teachers.other" in msg and str(folder) in msg
    assert "damaged" in msg and "sha256" in msg and "delete it" in msg


@pytest.mark.parametrize("suffix,bad", [(".safetensors", float("nan")), (".pt", float("inf")), (".safetensors", -float("inf"))])
def test_a_teacher_with_nan_or_inf_weights_is_refused_before_anything_runs(tmp_path, suffix, bad):
    from rslad_tune.teachers.sources import check_teacher_weights as check_teacher_files
    from rslad_tune.trial.data import load_data

    model = build_model("small_cnn", 1, 10, 6)
    with torch.no_grad():
        next(model.parameters())[0].view(-1)[0] = bad
    if suffix == ".pt":
        torch.save(model.state_dict(), tmp_path / f"t{suffix}")
    else:
        save_weights(model, tmp_path / f"t{suffix}")
    spec = _spec(tmp_path, {"nan": {"checkpoint": f"t{suffix}", "arch": "small_cnn", "width": 6}})
    with pytest.raises(SpecError) as e:
        check_teacher_files(spec.teachers, load_data(spec.trial, "cpu"))
    msg = str(e.value)
    assert msg.startswith("teachers.nan.checkpoint: ") and f"t{suffix}" in msg and "NaN or infinite" in msg
    assert len(msg.splitlines()) == 1
    with pytest.raises(SpecError, match="NaN or infinite"):  # and prepare_teachers never cards it
        prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)


def test_a_safetensors_file_whose_bytes_changed_is_refused_by_its_digest(tmp_path):
    from rslad_tune.trial.files import read_state_dict

    save_weights(build_model("small_cnn", 1, 10, 4), tmp_path / "w.safetensors")
    assert read_state_dict(tmp_path / "w.safetensors", "w")
    _flip_last_byte(tmp_path / "w.safetensors")
    with pytest.raises(SpecError, match=r"w: .*w\.safetensors.*damaged.*sha256"):
        read_state_dict(tmp_path / "w.safetensors", "w")


def test_a_cards_autoattack_is_scored_through_scoring_score(monkeypatch):
    """The card's AutoAttack number is scoring.score's column AA (seeded like every column); its time is recorded."""
    from types import SimpleNamespace

    import rslad_tune.teachers.folders as folders
    import rslad_tune.trial.robustness as rob
    from rslad_tune.teachers.source import TeacherSpec
    from rslad_tune.trial.config import TrialConfig

    calls, real = [], folders.score
    monkeypatch.setattr(folders, "score", lambda *a, **k: calls.append(list(a[4])) or real(*a, **k))
    monkeypatch.setattr(rob, "autoattack_accuracy", lambda model, x, y, eps, **k: calls.append(("AA", len(x), k["seed"])) or 0.5)
    model = build_model("small_cnn", 1, 10, 4).eval()
    splits = SimpleNamespace(test_x=torch.rand(12, 1, 28, 28), test_y=torch.arange(12) % 10)
    spec = TeacherSpec("t", "train", {}, card_examples=8, card_aa_examples=6)
    card = folders.score_card({}, model, TrialConfig(eval_steps=2, seed=3), splits, spec, log=lambda s: None)
    assert calls == [["Clean", "PGD-2@0.025"], ["AA"], ("AA", 6, 3)]
    assert card["aa_acc"] == 0.5 and card["aa_n"] == 6 and card["aa_time_s"] >= 0 and card["eval_n"] == 8
    assert 0 <= card["pgd20_acc"] <= 1 and 0 <= card["clean_acc"] <= 1
