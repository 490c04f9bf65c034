import pytest
import torch

from rslad_tune.models import build_model
from rslad_tune.spec import SpecError, parse_sweep
from rslad_tune.teachers import load_teacher, prepare_teachers, read_card
from rslad_tune.trainer import save_weights

DATA = {"dataset": "synthetic", "train_subset": 320, "test_subset": 64, "val_size": 64}


def _spec(tmp_path, teachers):
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
    card = read_card(dirs["a"])
    assert card["params"] > 0 and 0 <= card["pgd20_acc"] <= card["clean_acc"] <= 1 and card["source"] == "train"
    logs.clear()
    again = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=logs.append)
    assert again == dirs and any("cached" in line for line in logs)
    assert not list((tmp_path / "runs" / "teachers").glob(".*tmp"))  # no half-built folder left behind
    # a different recipe gets a different key (and folder)
    spec2 = _spec(tmp_path, {"a": {"train": {**recipe["train"], "width": 6}}})
    assert spec2.teachers["a"].cache_key() != spec.teachers["a"].cache_key()
    model = load_teacher(dirs["a"])
    assert not model.training and all(not p.requires_grad for p in model.parameters())


def test_checkpoint_teacher_from_safetensors(tmp_path):
    m = build_model("small_cnn", 1, 10, 6)
    save_weights(m, tmp_path / "t.safetensors")
    spec = _spec(tmp_path, {"file": {"checkpoint": "t.safetensors", "arch": "small_cnn", "width": 6}})
    dirs = prepare_teachers(spec.teachers, spec.trial, tmp_path / "runs", log=lambda s: None)
    loaded = load_teacher(dirs["file"])
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded(x), m.eval()(x))
    assert read_card(dirs["file"])["params"] == sum(p.numel() for p in m.parameters())


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
    assert torch.allclose(load_teacher(dirs["file"])(x), m(x))
