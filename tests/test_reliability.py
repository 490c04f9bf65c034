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
