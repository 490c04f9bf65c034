"""A sweep whose driver is SIGKILLed mid-run continues with --resume: finished trials are kept,
unfinished ones continue from their last checkpoint, the Optuna study continues from optuna.db,
and MLflow ends with every trial exactly once under the same parent run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import planted_sweep_folder
from mlflow.tracking import MlflowClient

SPACE = {
    "experiment": "crash",
    "data": {"dataset": "synthetic", "train_subset": 700, "test_subset": 100, "val_size": 100},
    "teachers": {"t1": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 1, "attack_steps": 1,
                                  "batch_size": 64}, "card_aa_examples": 0}},
    "trial": {"method": "rslad", "arch": "small_cnn", "width": 4, "epochs": 4, "attack_steps": 2, "eval_steps": 2,
              "batch_size": 32, "teacher": "t1"},
    "search": {"alpha": {"uniform": [0.5, 1.0]}},
    "tune": {"num_samples": 4, "max_concurrent": 2, "scheduler": {"type": "fifo"}, "resources": {"cpu": 1}},
}


def _progress(exp: Path) -> tuple[int, int]:
    """(trials with a checkpoint, trials finished) from the files Tune writes."""
    with_ckpt = finished = 0
    for d in exp.glob("trial_*"):
        if list(d.glob("checkpoint_*")):
            with_ckpt += 1
        rows = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines() if ln.strip()] \
            if (d / "result.json").is_file() else []
        finished += any(r.get("epoch") == SPACE["trial"]["epochs"] for r in rows)
    return with_ckpt, finished


@pytest.mark.slow
def test_sigkilled_sweep_resumes_without_losing_or_duplicating_a_trial(tmp_path):
    space = dict(SPACE, runs_dir=str(tmp_path / "runs"))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    cmd = [sys.executable, "-m", "rslad_tune.cli", "--space", str(tmp_path / "space.yaml"), "--no-export"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    exp = tmp_path / "runs" / "crash"
    deadline = time.time() + 400
    try:
        while time.time() < deadline:  # kill once a trial has finished and another is mid-way
            with_ckpt, finished = _progress(exp)
            if finished >= 1 and with_ckpt > finished:
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the sweep did not get far enough to be interrupted")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, as a crash would
        proc.wait()
    before = _progress(exp)
    assert before[1] < 4  # it really was interrupted

    res = subprocess.run(cmd + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resuming" in res.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("crash").experiment_id])
    parents = [r for r in runs if r.data.tags.get("rslad_tune.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("rslad_tune.kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_ids = [c.data.tags["ray.trial_id"] for c in children]
    assert len(children) == 4 and len(set(trial_ids)) == 4  # every trial exactly once
    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_pgd_acc")]
        assert sorted(steps) == [1, 2, 3, 4]  # each epoch logged once, none lost, none twice
    assert _progress(exp)[1] == 4  # finished trials == num_samples
    study = optuna.load_study(study_name="crash", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert len({t.params["alpha"] for t in study.trials}) == 4
    # the restored searcher (optuna_study.PruningOptunaSearch) tells a trial that ran every epoch COMPLETE, with
    # the last epoch among its intermediate values (FIFO here: no trial was stopped early); a trial the killed
    # driver had asked Optuna for after its last save is FAIL, not RUNNING for ever
    states = optuna.trial.TrialState
    complete = [t for t in study.trials if t.state == states.COMPLETE]
    assert len(complete) == 4 and all(4 in t.intermediate_values for t in complete)
    assert all(t.state in (states.COMPLETE, states.FAIL) for t in study.trials)


def test_resume_refuses_a_folder_written_by_someone_else(tmp_path, monkeypatch, capsys):
    """Resuming unpickles Ray's state (tuner.pkl): a folder with a file another user owns is refused in one line."""
    from test_bad_input import GOOD

    from rslad_tune.cli import main

    monkeypatch.chdir(tmp_path)
    exp = planted_sweep_folder(tmp_path, GOOD)
    if os.getuid() == 0:  # root can give the file away, as another user would have written it
        os.chown(exp / "tuner.pkl", 4242, -1)
        foreign = "tuner.pkl"
    else:  # otherwise the folder is "someone else's" from the point of view of a different uid
        real = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: real + 1)
        foreign = "bad"
    before = sorted(tmp_path.rglob("*"))
    for argv in (["resume", "runs/bad"], ["--space", "space.yaml", "--resume"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--resume" in err and "owned by uid" in err and foreign in err, err
        assert "unpickles" in err
    assert sorted(tmp_path.rglob("*")) == before
