"""A sweep folder received from someone else (or copied): its pending MLflow records replay only files inside it,
only into the store this command resolved (never a URI read from the folder), and a copy of runs/ points at its
own store. Also: nothing overwrites an export unless asked (--force), and then whole. No Ray: one trial trained
in-process and laid out as Ray does."""
import http.server
import json
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from mlflow.tracking import MlflowClient

from rslad_tune.cli import main
from rslad_tune.sweep.layout import ExperimentDir
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.trainer import train_model

TINY = {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40, "arch": "small_cnn",
        "width": 4, "batch_size": 50, "lr": 0.05, "attack_steps": 1, "eval_steps": 1, "epsilon": 0.05,
        "eval_epsilon": 0.05, "num_threads": 1, "device": "cpu", "method": "sat", "epochs": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished trial's folder, as Ray leaves it (result.json, checkpoint_000000/ with our files)."""
    torch.set_num_threads(1)
    trial = tmp_path_factory.mktemp("trial") / "trial_t1"
    ckpt = trial / "checkpoint_000000"
    r = train_model(TrialConfig(**TINY), checkpoint_dir=ckpt)
    h = r["history"][-1]
    (trial / "result.json").write_text(json.dumps({**h, "trial_id": "t1"}) + "\n")
    (trial / "params.json").write_text(json.dumps(TrialConfig(**TINY).to_dict()))
    return trial


class _Listener(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        type(self).seen.append((self.command, self.path, self.rfile.read(n) if n else b""))
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def log_message(self, *args):
        pass


@pytest.fixture
def listener():
    """A local HTTP server that records every request (and answers 500)."""
    _Listener.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Listener.seen
    server.shutdown()
    server.server_close()


def _sweep(root: Path, trained: Path, sweep_json: dict) -> Path:
    exp = root / "runs" / "exp"
    exp.mkdir(parents=True)
    shutil.copytree(trained, exp / "trial_t1")
    (exp / "sweep.json").write_text(json.dumps({"experiment": "exp", "parent_run_id": "0" * 32, **sweep_json}))
    return exp


def _plant(exp: Path, secret: Path) -> None:
    """Records this tool never writes: files outside the folder (absolute, and climbing out), an unknown call."""
    lines = [{"op": "artifact", "run": "0" * 32, "trial": None, "path": str(secret), "folder": "x"},
             {"op": "artifact", "run": "0" * 32, "trial": None, "path": "../../secret.txt", "folder": "x"},
             {"op": "artifact", "run": "0" * 32, "trial": None, "path": "trial_t1/../../../secret.txt"},
             {"op": "shell", "run": "0" * 32, "cmd": "touch pwned"}]
    (exp / "mlflow-pending.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


VERBS = {"export": lambda e: ["export", str(e)],
         "compare": lambda e: ["compare", str(e), "--attacks", "clean", "--n-aa", "0", "--n-examples", "10"],
         "report": lambda e: ["report", str(e), "--n-aa", "0"],
         "evaluate": lambda e: ["evaluate", str(e / "trial_t1" / "checkpoint_000000"), "--attacks", "clean",
                                "--n-aa", "0", "--n-examples", "10"]}


@pytest.mark.parametrize("verb", list(VERBS))
def test_a_received_folder_contacts_no_host_it_names_and_uploads_nothing_outside_it(verb, trained, listener, tmp_path,
                                                                                    monkeypatch, capsys):
    url, seen = listener
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    uploaded = []
    monkeypatch.setattr(MlflowClient, "log_artifact", lambda self, run, path, folder=None: uploaded.append(path))
    exp = _sweep(tmp_path, trained, {"tracking_uri": url})  # the folder names a host: never contacted on its say-so
    _plant(exp, secret)
    main(VERBS[verb](exp))
    err = capsys.readouterr().err
    assert seen == [], seen
    assert not any("secret" in str(p) or "passwd" in str(p) for p in uploaded), uploaded
    assert f"names the MLflow store '{url}'" in err and "nothing is logged or replayed" in err
    assert not Path("pwned").exists()


def test_pending_records_naming_files_outside_the_folder_are_refused_in_one_line(trained, tmp_path, monkeypatch, capsys):
    """The store is this command's own (the runs root's default): only the file inside the folder is uploaded."""
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    exp = _sweep(tmp_path, trained, {})
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("exp")).info.run_id
    info = json.loads((exp / "sweep.json").read_text())
    (exp / "sweep.json").write_text(json.dumps({**info, "tracking_uri": "sqlite:///mlflow.db", "parent_run_id": parent}))
    _plant(exp, secret)
    inside = exp / "trial_t1" / "checkpoint_000000" / "trial.json"
    with open(exp / "mlflow-pending.jsonl", "a") as f:
        f.write(json.dumps({"op": "artifact", "run": parent, "trial": None, "path": "trial_t1/checkpoint_000000/trial.json",
                            "folder": "ok"}) + "\n")
    uploaded = []
    monkeypatch.setattr(MlflowClient, "log_artifact", lambda self, run, path, folder=None: uploaded.append(path))
    main(["report", str(exp), "--n-aa", "0"])  # used no teacher: refused after the replay
    out = capsys.readouterr()
    assert uploaded == [str(inside.resolve())], uploaded
    refused = [ln for ln in out.out.splitlines() if "refused" in ln]
    assert len(refused) == 1 and "4 pending record(s) refused" in refused[0] and "secret.txt" in refused[0], out.out
    assert not (exp / "mlflow-pending.jsonl").exists()  # replayed or refused: nothing left to try again


def test_a_copied_runs_folder_points_at_its_own_store(tmp_path):
    """sweep.json keeps a store inside runs/ relative to the runs root: a copy uses its own."""
    exp = ExperimentDir(tmp_path / "a" / "runs" / "exp")
    root = (tmp_path / "a" / "runs").resolve()
    exp.write_sweep({"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "teacher_dirs": {"t": str(root / "teachers" / "k"),
                     "z": "/opt/zoo/t"}}, "experiment: exp\n")
    saved = json.loads(exp.sweep_file.read_text())
    assert saved["tracking_uri"] == "sqlite:///mlflow.db"
    assert saved["teacher_dirs"] == {"t": "teachers/k", "z": "/opt/zoo/t"}  # inside runs/: relative, like the store
    sqlite3.connect(root / "mlflow.db").execute("CREATE TABLE t (x)")  # a SQLite store (without runs to check)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = ExperimentDir(tmp_path / "b" / "runs" / "exp")
    own = f"sqlite:///{(tmp_path / 'b' / 'runs' / 'mlflow.db').resolve()}"
    assert copy.recorded_tracking_uri == own and copy.tracking_uri == own
    assert copy.teacher_dirs == {"t": str(tmp_path / "b" / "runs" / "teachers" / "k"), "z": "/opt/zoo/t"}
    (tmp_path / "b" / "runs" / "mlflow.db").unlink()  # copied without its store: nothing is logged, none is created
    assert ExperimentDir(tmp_path / "b" / "runs" / "exp").tracking_uri is None
    assert not (tmp_path / "b" / "runs" / "mlflow.db").exists()
    climbing = ExperimentDir(tmp_path / "b" / "runs" / "exp")
    climbing.__dict__["sweep"] = {"tracking_uri": "sqlite:///../../elsewhere.db"}
    assert climbing.recorded_tracking_uri is None and climbing.tracking_uri is None


def test_pending_artifact_paths_are_written_relative_to_the_folder(tmp_path):
    from rslad_tune.sweep.pending import append_record, read_records

    pending = tmp_path / "exp" / "mlflow-pending.jsonl"
    pending.parent.mkdir()
    append_record(pending, {"op": "artifact", "path": str(tmp_path / "exp" / "trial_1" / "model.safetensors")})
    assert read_records(pending) == [{"op": "artifact", "path": "trial_1/model.safetensors"}]


def test_export_refuses_to_overwrite_an_export_without_force_and_replaces_it_whole_with_it(trained, tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    exp = _sweep(tmp_path, trained, {})
    best = exp / "best"
    best.mkdir()
    (best / "model.safetensors").write_bytes(b"an earlier export")
    (best / "model.onnx").write_bytes(b"its onnx")
    assert main(["export", str(exp)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "export" in err and "--force" in err and str(best) in err, err
    assert (best / "model.safetensors").read_bytes() == b"an earlier export"
    assert main(["export", str(exp), "--force"]) == 0
    assert (best / "model.safetensors").read_bytes() != b"an earlier export"
    assert (best / "model.onnx").read_bytes() != b"its onnx" and (best / "metrics.json").is_file()
    assert not [p for p in exp.iterdir() if p.name.startswith(".")]  # no scratch or old folder left


def test_train_refuses_an_out_folder_that_holds_files_before_any_teacher_is_built(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.chdir(tmp_path)
    space = {"experiment": "one", "data": {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40},
             "teachers": {"t": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1}}},
             "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 1, "teacher": "t"},
             "search": {"alpha": {"uniform": [0.5, 1.0]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
    best = tmp_path / "runs" / "exp" / "best"
    best.mkdir(parents=True)
    (best / "model.safetensors").write_bytes(b"an export")
    assert main(["train", "--space", "s.yaml", "--out", str(best)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "--force" in err, err
    assert (best / "model.safetensors").read_bytes() == b"an export"
    assert not (tmp_path / "runs" / "teachers").exists() and not (tmp_path / "runs" / "mlflow.db").exists()
