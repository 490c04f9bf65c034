"""Ctrl-C (SIGINT to the process group, as a terminal sends it) or SIGTERM (to the driver) stops a sweep cleanly:
exit 130 / 143, MLflow's parent and unfinished trial runs KILLED, no export, one line with the resume command, no
temporary folder left; `rslad-tune resume` then finishes it with every trial's run exactly once."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import tiny_grid_sweep
from mlflow.tracking import MlflowClient

from rslad_tune.trial.errors import Interrupted

EPOCHS = 5


def _start(tmp_path, space: dict) -> subprocess.Popen:
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(dict(space, runs_dir=str(tmp_path / "runs"))))
    return subprocess.Popen([sys.executable, "-m", "rslad_tune.cli", "--space", "space.yaml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(proc, ready, what: str, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.communicate()[0][-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout}s")
        time.sleep(0.3)


def _epochs_reported(exp: Path) -> int:
    return sum(1 for f in exp.glob("trial_*/result.json") for ln in f.read_text().splitlines() if ln.strip())


def _leftovers(root: Path) -> list[str]:
    """Temporary names this tool uses: trial scratch folders, half exports, half teachers, half files."""
    return [str(p) for p in root.rglob("*") if p.name.startswith(("rslad-trial-", ".trial-work", ".best."))
            or p.name.endswith((".tmp", ".bad"))]


def _runs(tmp_path, name):
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    return (client, [r for r in runs if r.data.tags.get("rslad_tune.kind") == "sweep"],
            [r for r in runs if r.data.tags.get("rslad_tune.kind") == "trial"])


@pytest.mark.slow
@pytest.mark.parametrize("signum,to_group,code", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)])
def test_an_interrupted_sweep_stops_cleanly_and_resumes(tmp_path, signum, to_group, code):
    space = tiny_grid_sweep("intr")
    space["trial"]["epochs"] = EPOCHS
    space["data"]["train_subset"] = 1500  # epochs of a few seconds: the signal lands mid-sweep
    proc = _start(tmp_path, space)
    exp = tmp_path / "runs" / "intr"
    _wait_for(proc, lambda: _epochs_reported(exp) >= 1, "epoch reported")
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, out[-3000:] + err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last == f"rslad-tune: interrupted by {signal.Signals(signum).name}; the sweep is saved, continue it with: " \
                   "rslad-tune resume runs/intr", err[-2000:]
    assert "Traceback" not in err
    assert not (exp / "best").exists() and not _leftovers(tmp_path)
    client, parents, children = _runs(tmp_path, "intr")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert children and all(c.info.status == "KILLED" for c in children)  # none had finished: all KILLED
    assert "killed" in out and not re.search(r" (ASHA|no) +[\d.]+ +[\d.]+$", out, re.M)  # not finished / stopped by ASHA

    res = subprocess.run([sys.executable, "-m", "rslad_tune.cli", "resume", "runs/intr"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    client, parents, children = _runs(tmp_path, "intr")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = [c.data.tags["ray.trial_id"] for c in children]
    assert len(children) == 2 and len(set(ids)) == 2  # each trial's run exactly once
    for c in children:
        assert c.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(c.info.run_id, "val_pgd_acc")) == list(range(1, EPOCHS + 1))
    assert (exp / "best" / "model.safetensors").is_file() and not _leftovers(tmp_path)


@pytest.mark.slow
def test_ctrl_c_while_a_teacher_trains_leaves_no_half_teacher(tmp_path):
    space = tiny_grid_sweep("early")
    space["teachers"] = {"t": {"train": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 50, "attack_steps": 1,
                                         "batch_size": 32}, "card_aa_examples": 0}}
    space["trial"].update(method="rslad", teacher="t")
    proc = _start(tmp_path, space)
    teachers = tmp_path / "runs" / "teachers"
    _wait_for(proc, lambda: teachers.is_dir() and any(p.name.endswith(".tmp") for p in teachers.iterdir()),
              "teacher training")
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert err.strip().splitlines()[-1] == "rslad-tune: interrupted by SIGINT"  # nothing to resume yet
    assert "Traceback" not in err and not _leftovers(tmp_path)
    assert not [p for p in teachers.iterdir()]  # no teacher folder, half or whole


def test_the_first_signal_raises_outside_tune_and_asks_tune_to_stop_inside_it():
    from rslad_tune.sweep import interrupts

    with interrupts.handled():
        with pytest.raises(Interrupted) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert e.value.exit_code == 143 and interrupts.received() == signal.SIGTERM
    asked = []
    with interrupts.handled():
        with interrupts.tune_stops_on_signal():
            signal.signal(signal.SIGUSR1, lambda *a: asked.append(a))  # what Tune's fit() installs
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert asked and interrupts.received() == signal.SIGINT  # Tune was asked; nothing raised
            with pytest.raises(Interrupted) as e:  # a second signal stops at once
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        assert e.value.exit_code == 130 and os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # Tune's handler belonged to that fit() only


def _result(tid, epoch, error=None):
    metrics = {"trial_id": tid, "epoch": epoch, "clean_acc": 0.5, "pgd_acc": 0.25} if epoch else {}
    return SimpleNamespace(metrics=metrics, error=error, config={"method": "sat"}, path=f"/r/trial_{tid}", checkpoint=None)


def test_unfinished_trials_are_not_labelled_finished_or_stopped_by_asha():
    from rslad_tune.sweep.tuning import format_summary, result_rows

    grid = [_result("a", 4), _result("b", 2), _result("c", 0), _result("d", 1, RuntimeError("boom"))]
    status = lambda rows: {r.trial_id.removeprefix("trial_"): (r.status, r.early_stopped) for r in rows}
    assert status(result_rows(grid, 4)) == {"a": ("TERMINATED", False), "b": ("TERMINATED", True),  # b: ASHA
                                            "c": ("TERMINATED", True), "d": ("ERROR", False)}
    cut = result_rows(grid, 4, unfinished={"b"})  # interrupted: b's MLflow run had not ended, c never started
    assert status(cut) == {"a": ("TERMINATED", False), "b": ("INTERRUPTED", False), "c": ("INTERRUPTED", False),
                           "d": ("ERROR", False)}
    table = format_summary(cut).splitlines()[2:-1]
    assert sum("killed" in ln for ln in table) == 2 and not any(" ASHA " in ln for ln in table)
    assert status(result_rows(grid, 4, unfinished=None))["b"] == ("INTERRUPTED", False)  # MLflow could not say
