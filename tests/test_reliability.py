"""Reliability, round three (issue 27): MLflow faults inside `train`, lock notes, verified weight reads on resume,
checks before work, tampered sweep-folder JSON, resume's manifest, full disks, read-only places and signals."""
import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rslad_tune.trial.files import file_lock


def test_a_lock_left_by_an_error_holds_no_stale_pid_note(tmp_path):
    lock = tmp_path / ".exp.lock"
    with pytest.raises(RuntimeError), file_lock(lock, "pid 123: rslad-tune export runs/exp", wait=False):
        assert lock.read_text().startswith("pid 123")
        raise RuntimeError("boom")
    assert lock.read_text() == ""


def test_mlflow_faults_inside_train_are_retried_and_never_raised(tmp_path, monkeypatch, capsys):
    from rslad_tune.sweep.tracking import TrainRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = TrainRun(uri, "one", tmp_path, "train-x", {"lr": 0.1})
    run.tracker.store.delays = (0.01, 0.01)
    real, calls = MlflowClient.log_batch, []

    def flaky(self, *args, **kwargs):  # the server restarts: the first try of each call fails
        calls.append(1)
        if len(calls) % 2:
            raise ConnectionError("tracking server went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    run.epoch({"epoch": 1, "pgd_acc": 0.25, "clean_acc": 0.5})
    assert [m.value for m in MlflowClient(uri).get_metric_history(run.run_id, "pgd_acc")] == [0.25]
    monkeypatch.setattr(MlflowClient, "log_batch", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    run.epoch({"epoch": 2, "pgd_acc": 0.3})  # away for good: one warning line, the training goes on
    run.finish("FINISHED")
    out = capsys.readouterr().out
    assert out.count("warning: could not log an epoch") == 1, out
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FINISHED"


TINY = {"dataset": "synthetic", "train_subset": 200, "test_subset": 40, "val_size": 40, "arch": "small_cnn", "width": 4,
        "batch_size": 50, "attack_steps": 1, "eval_steps": 1, "num_threads": 1, "device": "cpu", "method": "sat"}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A trial's checkpoints after epochs 1 and 2 (what Ray keeps with num_to_keep=2)."""
    import shutil

    from rslad_tune.trial.config import TrialConfig
    from rslad_tune.trial.trainer import train_model

    root = tmp_path_factory.mktemp("ckpts")
    work = root / "work"
    copy = lambda m, d: shutil.copytree(d, root / f"checkpoint_{m['epoch']:06d}")  # noqa: E731
    train_model(TrialConfig(**TINY, epochs=2), checkpoint_dir=work, report=copy)
    return root / "checkpoint_000001", root / "checkpoint_000002"


def _flip_a_weight(path: Path) -> None:
    """One bit of a tensor's bytes: the file still parses, its digest no longer matches."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_refuses_a_damaged_checkpoint_in_one_line_naming_it(two_checkpoints, tmp_path):
    import shutil

    from rslad_tune.trial.config import TrialConfig
    from rslad_tune.trial.errors import SpecError
    from rslad_tune.trial.trainer import train_model

    last = shutil.copytree(two_checkpoints[1], tmp_path / "checkpoint_000002")
    _flip_a_weight(last / "model.safetensors")
    with pytest.raises(SpecError) as e:
        train_model(TrialConfig(**TINY, epochs=3), resume_dir=last)
    msg = str(e.value)
    assert "model.safetensors" in msg and "damaged" in msg and len(msg.splitlines()) == 1, msg


def test_resume_falls_back_to_the_previous_good_checkpoint(two_checkpoints, tmp_path):
    import shutil

    from rslad_tune.trial.config import TrialConfig
    from rslad_tune.trial.trainer import train_model

    last = shutil.copytree(two_checkpoints[1], tmp_path / "checkpoint_000002")
    _flip_a_weight(last / "best.safetensors")
    lines = []
    r = train_model(TrialConfig(**TINY, epochs=3), resume_dir=last, fallbacks=[two_checkpoints[0]], log=lines.append)
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3]  # epoch 1 from the good checkpoint, then 2 and 3 again
    assert any("previous good checkpoint" in ln and "checkpoint_000001" in ln for ln in lines), lines


def test_resume_of_a_sweep_whose_only_checkpoint_is_damaged_is_one_line_before_anything_runs(two_checkpoints, tmp_path):
    import shutil
    from types import SimpleNamespace

    from rslad_tune.sweep.tuning import check_resumable
    from rslad_tune.trial.errors import SpecError

    exp = tmp_path / "runs" / "exp"
    (exp / "trial_a").mkdir(parents=True)
    (exp / "sweep.json").write_text("{}")
    last = shutil.copytree(two_checkpoints[1], exp / "trial_a" / "checkpoint_000002")
    _flip_a_weight(last / "model.safetensors")
    spec = SimpleNamespace(runs_dir=str(tmp_path / "runs"), experiment="exp", source="", path="s.yaml")
    with pytest.raises(SpecError, match=r"checkpoint_000002/model.safetensors.*is damaged.*trial a has no earlier good"):
        check_resumable(spec)
    shutil.copytree(two_checkpoints[0], exp / "trial_a" / "checkpoint_000001")  # a good one before it: the trial falls back
    with pytest.raises(SpecError, match="holds no sweep to resume"):
        check_resumable(spec)
