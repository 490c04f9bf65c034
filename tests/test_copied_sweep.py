"""A finished sweep copied to another folder (to share a result, to back it up) is a sweep of its own: export,
evaluate, compare, report and resume on the copy never write into the original, and work with the original gone.
A copy broken one way (a locked or broken store, a link out of the folder, an earlier report, a lock held) is
refused in one line, the copy left byte for byte as it was. All on copies of conftest's finished tiny sweep."""
import hashlib
import json
import shutil
import sqlite3
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rslad_tune.cli import main
from rslad_tune.sweep.layout import ExperimentDir


def tree(root: Path) -> dict[str, str]:
    """sha256 of every file below `root` (links not followed)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _copy(finished_sweep, tmp_path: Path) -> Path:
    shutil.copytree(finished_sweep[0] / "runs", tmp_path / "runs", symlinks=True)
    return tmp_path / "runs" / "tiny"


@pytest.fixture(scope="module")
def ray_stopped_after():
    """resume starts Ray in this process: stopped again after this module if it was not running before."""
    import ray

    running = ray.is_initialized()
    yield
    if not running and ray.is_initialized():
        ray.shutdown()


VERBS = [["export", "{exp}", "--force"],
         ["evaluate", "{exp}/best", "--attacks", "clean", "--n-examples", "16", "--n-aa", "0", "--device", "cpu"],
         ["compare", "{exp}", "--force", "--attacks", "clean", "--n-examples", "16", "--n-aa", "0", "--device", "cpu"],
         ["report", "{exp}", "--force", "--device", "cpu"],
         ["resume", "{exp}", "--no-export", "--no-report"]]


@pytest.mark.parametrize("original", ["kept", "deleted"])
def test_a_copied_sweep_never_writes_into_the_original(original, finished_sweep, tmp_path, monkeypatch, capsys,
                                                       ray_stopped_after):
    """Every file of the original is byte-identical after the five commands ran on the copy. "deleted": the original
    runs folder is moved away while they run (the copy can no longer reach it) and must not come back."""
    runs = finished_sweep[0] / "runs"
    before = tree(runs)
    exp = _copy(finished_sweep, tmp_path)
    monkeypatch.chdir(tmp_path)
    away = runs.with_name("runs.away")
    if original == "deleted":
        runs.rename(away)
    try:
        for argv in VERBS:
            argv = [a.format(exp=exp) for a in argv]
            assert main(argv) == 0, (argv, capsys.readouterr().err[-2000:])
            if original == "kept":
                assert tree(runs) == before, f"{argv[0]} on the copy changed the original"
            else:
                assert not runs.exists(), f"{argv[0]} on the copy wrote into the original's place"
    finally:
        if original == "deleted":
            away.rename(runs)
    assert tree(runs) == before
    # the copy is a sweep of its own: its paths relative, its MLflow store logging into its own mlartifacts/
    info = json.loads((exp / "sweep.json").read_text())
    assert info["teacher_dirs"] and all(not Path(v).is_absolute() for v in info["teacher_dirs"].values())
    source = json.loads((exp / "best" / "config.json").read_text())["source"]
    assert not Path(source).is_absolute() and (exp / source / "model.safetensors").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    here = (tmp_path / "runs" / "mlartifacts").resolve().as_uri()
    assert client.get_experiment_by_name("tiny").artifact_location.startswith(here)
    parent = client.get_run(info["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.artifact_uri.startswith(here)
    champion = client.get_model_version_by_alias("tiny-student", "champion")  # registered by the copy's export
    assert client.get_run(champion.run_id).info.artifact_uri.startswith(here)
    assert str(runs) not in champion.source and str(runs.resolve()) not in champion.source


@contextmanager
def _sqlite_held(db: Path, how: str = "EXCLUSIVE"):
    """Another process's write lock on a SQLite file (a dashboard writing, a stuck command), held for the block.
    EXCLUSIVE: nobody reads either; IMMEDIATE: a writer in the middle of a transaction, reads still answered."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute(f"BEGIN {how}")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def _link_out(exp: Path) -> Path:
    """A trial folder moved out of the sweep, a symbolic link left in its place."""
    trial = sorted(exp.glob("trial_*"))[0]
    outside = exp.parent.parent / "elsewhere"
    trial.rename(outside)
    trial.symlink_to(outside, target_is_directory=True)
    return exp


def _renamed(exp: Path) -> Path:
    exp.rename(exp.with_name("otherexp"))
    return exp.with_name("otherexp")


def _store(data: bytes):
    def make(exp: Path) -> Path:
        (exp.parent / "mlflow.db").write_bytes(data)
        return exp
    return make


def _export_running(exp: Path):
    return ExperimentDir(exp).lock(f"rslad-tune export {exp}")


# (id, prepare the copy -> the folder to name, a context held while the command runs, argv after the folder,
#  exit status, fragments of the one line)
FAULTS = [
    ("resume with optuna.db locked", None, lambda exp: _sqlite_held(exp / "optuna.db"), ["resume"], 1,
     ["--resume", "optuna.db", "is locked by another process", "nothing was changed"]),
    ("resume with mlflow.db locked", None, lambda exp: _sqlite_held(exp.parent / "mlflow.db"), ["resume"], 1,
     ["mlflow.db", "is locked by another process", "nothing was changed"]),
    ("compare through a trial folder linked out of the sweep", _link_out, None,
     ["compare", "--force", "--attacks", "clean", "--n-examples", "8", "--n-aa", "0"], 2,
     ["experiment", "trial_", "symbolic link out of the sweep folder"]),
    ("resume with a trial folder linked out of the sweep", _link_out, None, ["resume"], 2,
     ["--resume", "symbolic link out of the sweep folder"]),
    ("export into a zero-byte mlflow.db", _store(b""), None, ["export", "--force"], 2,
     ["tracking URI", "mlflow.db", "is empty (0 bytes)"]),
    ("report into an mlflow.db that is not SQLite", _store(b"not a database at all" * 4), None, ["report", "--force"], 2,
     ["tracking URI", "mlflow.db", "is not an SQLite database"]),
    ("report on 20 images over the sweep's report, without --force", None, None, ["report", "--n-examples", "20"], 2,
     ["report", "selection.md", "--force"]),
    ("compare over an earlier comparison, without --force", lambda exp: (exp / "comparison.md").write_text("x") and exp,
     None, ["compare", "--n-examples", "8"], 2, ["compare", "comparison.md", "--force"]),
    ("evaluate over an earlier eval.json, without --force", lambda exp: (exp / "best" / "eval.json").write_text("{}") and exp,
     None, ["evaluate", "--n-examples", "8", "--n-aa", "0"], 2, ["evaluate", "eval.json", "--force"]),
    ("export with mlflow.db locked", None, lambda exp: _sqlite_held(exp.parent / "mlflow.db"), ["export", "--force"], 1,
     ["mlflow.db", "is locked by another process", "nothing was changed"]),
    ("export while another process writes to mlflow.db", None,
     lambda exp: _sqlite_held(exp.parent / "mlflow.db", "IMMEDIATE"), ["export", "--force"], 1,
     ["mlflow.db", "is locked by another process", "nothing was changed"]),
    ("report with mlflow.db locked", None, lambda exp: _sqlite_held(exp.parent / "mlflow.db"), ["report", "--force"], 1,
     ["mlflow.db", "is locked by another process", "nothing was changed"]),
    ("resume of a copy under another name", _renamed, None, ["resume"], 2, ["experiment", "otherexp", "'tiny'", "move it to"]),
    ("export while another export runs", None, _export_running, ["export", "--force"], 2,
     ["another `rslad-tune export`", "wait for it to end"]),
]


@pytest.mark.parametrize("prepare,held,argv,rc,fragments", [r[1:] for r in FAULTS], ids=[r[0] for r in FAULTS])
def test_a_broken_copy_is_one_line_and_nothing_changes(prepare, held, argv, rc, fragments, finished_sweep, tmp_path,
                                                       monkeypatch, capsys):
    exp = _copy(finished_sweep, tmp_path)
    monkeypatch.chdir(tmp_path)
    exp = prepare(exp) if prepare else exp
    with held(exp) if held else nullcontext():
        before = tree(tmp_path)
        got = main([argv[0], str(exp), *argv[1:]])
        err = capsys.readouterr().err.strip()
        assert got == rc, err
        assert len(err.splitlines()) == 1 and err.startswith("rslad-tune: error: "), err
        for f in fragments:
            assert f in err, f"{f!r} not in {err!r}"
        assert "choose another experiment name" not in err
        assert tree(tmp_path) == before  # nothing changed: files, the MLflow store (the parent run's status), optuna.db


def test_export_says_which_store_it_looked_in_for_the_trials_run(finished_sweep, tmp_path, monkeypatch, capsys):
    """sweep.json naming a store elsewhere: nothing is logged there, and the line saying so names both stores."""
    exp = _copy(finished_sweep, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("rslad_tune.sweep.export.write_formats", lambda *a: [])  # (TorchScript and ONNX: tested elsewhere)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    info = json.loads((exp / "sweep.json").read_text())
    (exp / "sweep.json").write_text(json.dumps({**info, "tracking_uri": elsewhere}))
    assert main(["export", str(exp), "--force"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "not registered" in ln)
    assert elsewhere in line and str(tmp_path / "runs" / "mlflow.db") in line, line
    assert not (tmp_path / "elsewhere").exists()


def test_an_earlier_versions_absolute_paths_are_read_inside_the_folder_only(tmp_path):
    """A sweep of an earlier version stored absolute paths: a copy reads them re-rooted inside itself, or not at all."""
    from rslad_tune.sweep.relocation import read_back

    runs = tmp_path / "copy" / "runs"
    (runs / "teachers" / "k").mkdir(parents=True)
    (runs / "exp" / "trial_1" / "checkpoint_000002").mkdir(parents=True)
    assert read_back("/old/runs/teachers/k", runs, "teachers") == runs / "teachers" / "k"
    assert read_back("/old/runs/exp/trial_1/checkpoint_000002", runs / "exp", "trial_*") == runs / "exp" / "trial_1" / "checkpoint_000002"
    assert read_back("/old/runs/teachers/gone", runs, "teachers") is None  # never the original's
    assert read_back(str(runs / "teachers" / "k"), runs, "teachers") == runs / "teachers" / "k"  # inside: as it is
    assert read_back("teachers/k", runs, "teachers") == runs / "teachers" / "k"
    assert read_back("../elsewhere", runs, "teachers") is None and read_back(None, runs, "teachers") is None
