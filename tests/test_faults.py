"""Trial faults in a real sweep: a trial whose process is SIGKILLed is retried by Ray from its last
checkpoint (tune.max_failures), a trial whose loss becomes inf/NaN ends FAILED with the reason in its
MLflow run, the sweep goes on, and the summary lists the failure and why."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

SPACE = {
    "experiment": "faults",
    "data": {"dataset": "synthetic", "train_subset": 700, "test_subset": 100, "val_size": 100},
    "trial": {"method": "sat", "arch": "small_cnn", "width": 4, "epochs": 4, "attack_steps": 2, "eval_steps": 2,
              "batch_size": 32},
    "search": {"lr": {"grid": [0.05, 1.0e12]}},  # the second one diverges
    "tune": {"num_samples": 1, "max_concurrent": 2, "scheduler": {"type": "fifo"}, "searcher": {"type": "random"},
             "resources": {"cpu": 1}, "max_failures": 1},
}


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _trial_workers(session: int) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ImplicitFunc"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if _session(int(p)) == session]


def _epochs_done(exp: Path, lr: float) -> int:
    for d in exp.glob("trial_*"):
        rows = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines() if ln.strip()] \
            if (d / "result.json").is_file() else []
        if rows and rows[-1]["config"]["lr"] == lr:
            return rows[-1]["epoch"]
    return 0


@pytest.mark.slow
def test_killed_trial_is_retried_and_a_diverged_one_fails_with_its_reason(tmp_path):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(dict(SPACE, runs_dir=str(tmp_path / "runs"))))
    proc = subprocess.Popen([sys.executable, "-m", "rslad_tune.cli", "--space", "space.yaml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    exp = tmp_path / "runs" / "faults"
    killed = False
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and not killed:
        if 1 <= _epochs_done(exp, 0.05) < 4:  # the healthy trial is mid-way: kill its process
            for pid in _trial_workers(proc.pid):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"ImplicitFunc" in cmdline:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
        time.sleep(0.3)
    out, _ = proc.communicate(timeout=600)
    assert killed, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    children = {float(r.data.params["lr"]): r for r in runs if r.data.tags.get("rslad_tune.kind") == "trial"}
    assert len(children) == 2  # the retried trial kept its one run
    ok, bad = children[0.05], children[1.0e12]
    assert ok.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(ok.info.run_id, "val_pgd_acc")) == [1, 2, 3, 4]
    assert bad.info.status == "FAILED" and "TrialDiverged" in bad.data.tags["error"] and "loss became" in bad.data.tags["error"]
    assert "failed: " in out and "loss became" in out  # the summary says which trial failed and why


def test_a_trial_retried_to_its_last_epoch_is_finished_despite_the_error_ray_left(tmp_path):
    from rslad_tune.sweep.layout import TrialDir

    ckpt = tmp_path / "trial_1" / "checkpoint_000003"
    ckpt.mkdir(parents=True)
    (ckpt / "trial.json").write_text(json.dumps({"trial": {"epochs": 4}, "history": []}))
    (tmp_path / "trial_1" / "error.txt").write_text("Traceback ...\nRayActorError: the actor died\n")
    result = tmp_path / "trial_1" / "result.json"
    result.write_text(json.dumps({"trial_id": "1", "epoch": 3, "best_pgd_acc": 0.5}) + "\n")
    assert TrialDir(tmp_path / "trial_1").error == "RayActorError: the actor died"  # it stopped there
    result.write_text(result.read_text() + json.dumps({"trial_id": "1", "epoch": 4, "best_pgd_acc": 0.6}) + "\n")
    trial = TrialDir(tmp_path / "trial_1")  # the retry ran every epoch: the error is history
    assert trial.error is None and trial.finished
