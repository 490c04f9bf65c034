"""The exported student as other tools load it: TorchScript, ONNX (onnxruntime), and the MLflow registered model."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from rslad_tune.sweep import formats
from rslad_tune.sweep.mlflow_models import register_student
from rslad_tune.sweep.spec import parse_sweep
from rslad_tune.trial.data import load_splits
from rslad_tune.trial.errors import SpecError
from rslad_tune.trial.models import build_model


@pytest.fixture(scope="module")
def student_and_images():
    """A small_cnn whose BatchNorm statistics are not the identity, and 100 synthetic test images."""
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10, 4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    splits = load_splits("synthetic", train_subset=100, test_subset=100, val_size=10)
    return model.eval(), splits.test_x[:100].cpu()


@pytest.fixture(scope="module")
def written(student_and_images, tmp_path_factory):
    model, x = student_and_images
    folder = tmp_path_factory.mktemp("best")
    logs = []
    names = formats.write_formats(model, x[:2], folder, logs.append)
    return folder, names, logs


def _logits(model, x):
    with torch.no_grad():
        return model(x).numpy()


def test_torchscript_reproduces_the_logits(student_and_images, written):
    model, x = student_and_images
    folder, names, logs = written
    assert names == ["model.pt", "model.onnx"] and not logs
    scripted = torch.jit.load(str(folder / "model.pt"))
    for n in (1, 100):
        assert np.abs(_logits(scripted, x[:n]) - _logits(model, x[:n])).max() < 1e-4
    assert not list(folder.glob(".*tmp"))  # written atomically


def test_onnx_is_valid_and_reproduces_the_logits_for_any_batch(student_and_images, written):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, x = student_and_images
    folder, _, _ = written
    proto = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is symbolic
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for n in (1, 100):
        out = session.run(["logits"], {"images": x[:n].numpy()})[0]
        assert out.shape == (n, 10) and np.abs(out - _logits(model, x[:n])).max() < 1e-4


def test_without_onnx_the_export_writes_torchscript_and_says_so(student_and_images, tmp_path, monkeypatch):
    model, x = student_and_images
    monkeypatch.setattr(formats, "ONNX_MODULES", ("onnx", "no_such_module_for_rslad_tune"))
    logs = []
    assert formats.write_formats(model, x[:2], tmp_path, logs.append) == ["model.pt"]
    assert len(logs) == 1 and "model.onnx skipped" in logs[0] and "rslad-tune[onnx]" in logs[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_a_failed_conversion_is_one_line(student_and_images, tmp_path, monkeypatch):
    model, x = student_and_images

    def broken(*a):
        raise RuntimeError("unsupported operator\nsecond line")
    broken.__name__ = "to_onnx"
    monkeypatch.setattr(formats, "to_onnx", broken)
    logs = []
    assert formats.write_formats(model, x[:2], tmp_path, logs.append) == ["model.pt"]
    assert logs == ["model.onnx skipped: to_onnx failed: RuntimeError: unsupported operator"]


def test_registered_model_key(tmp_path):
    raw = {"experiment": "e", "data": {"dataset": "synthetic"}, "trial": {"method": "sat", "arch": "small_cnn"},
           "search": {"lr": {"uniform": [0.01, 0.1]}}}
    assert parse_sweep(raw).registered_model is None
    assert parse_sweep({**raw, "registered_model": "fmnist-student.v2"}).registered_model == "fmnist-student.v2"
    for bad in ("two words", "", 5, "a/b"):
        with pytest.raises(SpecError) as e:
            parse_sweep({**raw, "registered_model": bad})
        msg = str(e.value)
        assert "registered_model" in msg and "\n" not in msg and "letters, digits" in msg


def test_registering_into_a_broken_store_is_one_line(student_and_images, tmp_path):
    model, x = student_and_images
    logs = []
    (tmp_path / "mlflow.db").write_text("not a database")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert register_student(uri, "0" * 32, model, x[:2], "m", {}, logs.append) is None
    assert len(logs) == 1 and logs[0].startswith("could not register the student as MLflow model 'm'")
    assert "\n" not in logs[0] and "not a database" in logs[0]
    assert register_student(uri, None, model, x[:2], "m", {}, logs.append) is None  # no trial run found
    assert len(logs) == 2 and "not registered" in logs[1]


LOAD_CHAMPION = """
import sys, numpy as np, torch, mlflow.pytorch
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pytorch.load_model(sys.argv[2])
assert "rslad_tune" not in sys.modules, "loading the registered model imported rslad_tune"
x = torch.from_numpy(np.load(sys.argv[3]))
with torch.no_grad():
    np.save(sys.argv[4], model(x).numpy())
"""


FINE_TUNE = """
import sys, numpy as np, torch, mlflow.pytorch
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pytorch.load_model(sys.argv[2])
assert "rslad_tune" not in sys.modules, "loading the registered model imported rslad_tune"
x = torch.from_numpy(np.load(sys.argv[3]))
model.eval()
with torch.no_grad():
    np.save(sys.argv[4], model(x).numpy())
model.train()
assert model.training and all(m.training for m in model.modules())
before = {k: v.clone() for k, v in model.state_dict().items()}
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loss = torch.nn.functional.cross_entropy(model(x[:8]), torch.arange(8) % 10)
loss.backward()
opt.step()
after = model.state_dict()
changed = [k for k in before if not torch.equal(before[k], after[k])]
assert any("running_mean" in k for k in changed), "train() did not put batch norm in training mode"
assert any(k.endswith("weight") for k in changed), "the optimizer step changed no weight"
print("fine-tuned", len(changed))
"""


def test_the_registered_student_is_a_module_in_a_process_without_this_package(student_and_images, tmp_path):
    """eval(), train() (batch norm updating its statistics), an optimizer step, and logits equal to the exported
    student's: the registered model is TorchScript, not torch.export's inference-only GraphModule."""
    from mlflow.tracking import MlflowClient

    model, x = student_and_images
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp).info.run_id
    logs = []
    assert register_student(uri, run, model, x[:2], "stud", {"teacher": "t1"}, logs.append) == "1", logs
    np.save(tmp_path / "x.npy", x[:16].numpy())
    proc = subprocess.run([sys.executable, "-c", FINE_TUNE, uri, "models:/stud@champion", str(tmp_path / "x.npy"),
                           str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "fine-tuned" in proc.stdout, proc.stderr[-3000:]
    assert np.abs(np.load(tmp_path / "y.npy") - _logits(model, x[:16])).max() < 1e-5
    assert client.get_model_version("stud", "1").tags["teacher"] == "t1"


@pytest.mark.slow
def test_two_sweeps_register_two_versions_and_the_champion_loads_without_this_package(tmp_path):
    from mlflow.tracking import MlflowClient
    from test_sweep import SPACE

    import rslad_tune

    space = dict(SPACE, experiment="champ", runs_dir=str(tmp_path / "runs"), registered_model="champ-cnn")
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    versions = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", str(tmp_path / "space.yaml")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "registered MLflow model champ-cnn version" in proc.stdout
        print(next(ln for ln in proc.stdout.splitlines() if "exported the best student" in ln))  # with -s: its time
        client = MlflowClient(uri)
        mv = client.get_model_version_by_alias("champ-cnn", "champion")
        versions.append(int(mv.version))
        best = tmp_path / "runs" / "champ" / "best"
        metrics = json.loads((best / "metrics.json").read_text())
        assert mv.run_id == metrics["mlflow_run_id"]  # logged to the best trial's run
        assert float(mv.tags["test_clean_acc"]) == pytest.approx(metrics["test_clean_acc"])
        assert float(mv.tags["test_pgd_acc"]) == pytest.approx(metrics["test_pgd_acc"])
        assert mv.tags["teacher"] == metrics["teacher"] and mv.tags["eval_steps"] == "3"
        assert {p.name for p in best.iterdir()} >= {"model.safetensors", "config.json", "metrics.json", "model.pt",
                                                    "model.onnx"}
    assert versions[1] > versions[0]

    x = load_splits("synthetic", train_subset=600, test_subset=200, val_size=100).test_x[:100].cpu()
    np.save(tmp_path / "x.npy", x.numpy())
    code = subprocess.run([sys.executable, "-c", LOAD_CHAMPION, uri, "models:/champ-cnn@champion",
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr[-3000:]
    expected = _logits(rslad_tune.load_student(tmp_path / "runs" / "champ" / "best"), x)
    assert np.abs(np.load(tmp_path / "y.npy") - expected).max() < 1e-5
