"""Several commands on one runs/ folder: experiment names that collide with the tool's own entries are refused,
only an earlier sweep of ours is moved aside, a sweep locks its experiment, and two sweeps of different
experiments share one mlflow.db."""
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from helpers import tiny_grid_sweep
from mlflow.tracking import MlflowClient
from test_bad_input import GOOD

from rslad_tune.cli import main
from rslad_tune.sweep.layout import ExperimentDir
from rslad_tune.sweep.spec import check_experiment_name
from rslad_tune.sweep.spec import parse_sweep
from rslad_tune.trial.errors import SpecError


@pytest.mark.parametrize("name", ["teachers", "mlflow.db", "MLartifacts", "mlruns", "optuna.db", "quick-train", "a.lock",
                                  "x.db", "old.tmp", "quick.20240101-120000", "quick.20240101-120000-2", ".hidden",
                                  "a/b", ""])
def test_reserved_or_unusable_experiment_names_are_refused(name):
    with pytest.raises(SpecError) as e:
        check_experiment_name(name)
    msg = str(e.value)
    assert msg.startswith("experiment: ") and len(msg.splitlines()) == 1 and repr(name) in msg
    assert "reserved" in msg or "letters, digits" in msg


@pytest.mark.parametrize("name", ["quick", "paper_fmnist", "v1.2", "train-large", "teachers2", "a-training"])
def test_ordinary_names_are_allowed(name):
    assert check_experiment_name(name) == name


def test_the_yaml_refuses_a_reserved_or_non_string_experiment():
    for value, fragment in (("teachers", "reserved"), (True, "not a YAML bool"), (20240101, "not a YAML int")):
        with pytest.raises(SpecError, match=fragment):
            parse_sweep({**GOOD, "experiment": value}, sweep=True)


def _sweep_folder(path, info=None):
    path.mkdir(parents=True)
    (path / "sweep.json").write_text(json.dumps(info if info is not None else {"experiment": path.name}))
    return path


def test_archive_moves_an_earlier_sweep_aside(tmp_path):
    old = _sweep_folder(tmp_path / "quick")
    (old / "trial_1").mkdir()
    logs = []
    ExperimentDir(old).archive_previous(logs.append)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("quick.")]
    assert not old.exists() and len(moved) == 1 and (moved[0] / "trial_1").is_dir()
    assert len(logs) == 1 and str(moved[0]) in logs[0]


@pytest.mark.parametrize("kind", ["folder without sweep.json", "a file", "foreign sweep.json", "broken sweep.json"])
def test_archive_refuses_anything_else_and_moves_nothing(tmp_path, kind):
    path = tmp_path / "quick"
    if kind == "folder without sweep.json":
        path.mkdir()
        (path / "thesis.tex").write_text("mine")
    elif kind == "a file":
        path.write_text("mine")
    elif kind == "foreign sweep.json":
        _sweep_folder(path, ["not", "ours"])
    else:
        _sweep_folder(path)
        (path / "sweep.json").write_text("{half")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SpecError) as e:
        ExperimentDir(path).archive_previous(print)
    assert len(str(e.value).splitlines()) == 1 and ("sweep.json" in str(e.value))
    assert sorted(tmp_path.rglob("*")) == before


def test_a_second_command_on_a_locked_experiment_is_refused_naming_the_holder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(GOOD))
    exp = ExperimentDir(tmp_path / "runs" / "bad")
    with exp.lock("rslad-tune --space first.yaml"):
        with pytest.raises(SpecError, match=rf"in use by a running sweep \(pid {os.getpid()}: rslad-tune --space first.yaml\)"):
            with exp.lock("again"):
                pass
        rc = main(["--space", "space.yaml"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and f"pid {os.getpid()}" in err and "first.yaml" in err, err
        assert not exp.path.exists()  # nothing trained, nothing moved
        rc = main(["--space", "space.yaml", "--resume"])  # nothing to resume: that is said first
        assert rc == 2
    with exp.lock("third"):  # released when the block (or the process) ends
        pass


def test_a_foreign_folder_at_the_experiment_path_stops_the_sweep_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "runs" / "bad").mkdir(parents=True)
    (tmp_path / "runs" / "bad" / "notes.txt").write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    assert main(["--space", "space.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert "runs/bad" in err and "not a sweep folder" in err and len(err.splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_two_sweeps_of_different_experiments_share_one_mlflow_db_and_a_third_is_refused(tmp_path):
    procs, logs = {}, {}
    for name in ("left", "right"):
        space = dict(tiny_grid_sweep(name), runs_dir=str(tmp_path / "runs"))
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(space))
        logs[name] = open(tmp_path / f"{name}.log", "w")
        procs[name] = subprocess.Popen([sys.executable, "-m", "rslad_tune.cli", "--space", f"{name}.yaml", "--no-export"],
                                       cwd=tmp_path, stdout=logs[name], stderr=subprocess.STDOUT)
    lock = tmp_path / "runs" / ".left.lock"
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    same = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "--space", "left.yaml", "--no-export"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if procs["left"].poll() is None:  # (a machine slow enough may see it finish first)
        assert same.returncode == 2 and f"pid {procs['left'].pid}" in same.stderr, same.stderr
        assert len(same.stderr.strip().splitlines()) == 1
    for name, p in procs.items():
        assert p.wait(timeout=900) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    for name in ("left", "right"):
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        parents = [r for r in runs if r.data.tags.get("rslad_tune.kind") == "sweep"]
        children = [r for r in runs if r.data.tags.get("rslad_tune.kind") == "trial"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
        assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
