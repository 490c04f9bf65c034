"""MLflow away while a sweep runs: the Tune callback's calls are retried briefly, then given up with one warning
line, kept in runs/<experiment>/mlflow-pending.jsonl and replayed by the next command on that experiment.
No Ray: the callback is driven with a stand-in trial."""
import json
import shutil
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from rslad_tune.cli import main
from rslad_tune.sweep.pending import read_records
from rslad_tune.sweep.tracking import MLflowTrialCallback, SweepTracker, replay_pending


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow SQLite file with its tables (creating them takes seconds: done once, copied per test)."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def sweep(tmp_path, empty_store):
    """A sweep folder (sweep.json) with its parent run in a SQLite store, and a tracker that retries fast."""
    exp = tmp_path / "runs" / "faulty"
    exp.mkdir(parents=True)
    shutil.copyfile(empty_store, tmp_path / "runs" / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    tracker = SweepTracker(uri, "faulty", tmp_path / "runs", pending=exp / "mlflow-pending.jsonl")
    tracker.store.delays = (0.01, 0.01)
    parent = tracker.start_parent("faulty-1", {"epochs": 2}, "experiment: faulty\n", {})
    (exp / "sweep.json").write_text(json.dumps({"experiment": "faulty", "tracking_uri": uri, "parent_run_id": parent}))
    return SimpleNamespace(exp=exp, uri=uri, tracker=tracker, parent=parent, pending=exp / "mlflow-pending.jsonl")


def _trial(tid="t0001"):
    return SimpleNamespace(trial_id=tid, config={"method": "sat", "lr": 0.05, "epsilon": 0.1}, last_result={"epoch": 2},
                           checkpoint=None, error_file=None)


def _fail(*args, **kwargs):
    raise ConnectionError("tracking server went away")


def _child(sweep, tid):
    client = MlflowClient(sweep.uri)
    runs = client.search_runs([sweep.tracker.experiment_id], f"tags.`ray.trial_id` = '{tid}'")
    assert len(runs) <= 1
    return runs[0] if runs else None


def _drive(callback, trial):
    callback.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "pgd_acc": 0.1 * epoch, "clean_acc": 0.5})
    callback.on_trial_complete(0, [], trial)


def _lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def test_failing_log_batch_costs_one_warning_line_and_is_replayed(sweep, monkeypatch, capsys):
    callback = MLflowTrialCallback(sweep.tracker, max_epochs=2)
    trial = _trial()
    callback.on_trial_start(0, [], trial)  # the run exists (params logged) before the store goes
    capsys.readouterr()
    monkeypatch.setattr(sweep.tracker.client, "log_batch", _fail)
    for epoch in (1, 2):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "pgd_acc": 0.1 * epoch, "clean_acc": 0.5})
    callback.on_trial_complete(0, [], trial)
    out = capsys.readouterr()
    warnings = _lines(out.out + out.err)
    assert len(warnings) == 1 and "warning: could not log a trial's epoch" in warnings[0], warnings
    assert "ConnectionError" in warnings[0] and str(sweep.pending) in warnings[0] and "Traceback" not in out.err
    ops = [r["op"] for r in read_records(sweep.pending)]
    assert ops == ["log_batch", "log_batch", "log_batch"]  # two epochs and the end-of-trial tags
    run = _child(sweep, trial.trial_id)
    assert run.info.status == "FINISHED" and "val_pgd_acc" not in run.data.metrics  # status went through, metrics did not
    monkeypatch.undo()

    assert replay_pending(sweep.pending, sweep.uri, "faulty", sweep.parent, log=lambda s: None) == 3
    client = MlflowClient(sweep.uri)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_pgd_acc")) == [1, 2]
    assert _child(sweep, trial.trial_id).data.tags["epochs_run"] == "2"
    assert not sweep.pending.exists()


def test_a_store_away_for_the_whole_trial_is_replayed_by_the_next_command(sweep, monkeypatch, capsys):
    callback = MLflowTrialCallback(sweep.tracker, max_epochs=2)
    client = sweep.tracker.client
    for name in ("search_runs", "create_run", "log_batch", "set_terminated", "update_run", "get_metric_history"):
        monkeypatch.setattr(client, name, _fail)
    trial = _trial("t0002")
    _drive(callback, trial)
    out = capsys.readouterr()
    assert len(_lines(out.out + out.err)) == 1  # one line for the whole outage, however many calls it cost
    assert [r["op"] for r in read_records(sweep.pending)] == ["create_run", "log_batch", "log_batch", "log_batch", "terminate"]
    monkeypatch.undo()
    assert _child(sweep, "t0002") is None

    rc = main(["export", str(sweep.exp)])  # the next command on the experiment replays first (then has nothing to export)
    assert rc == 2 and "replayed 5" in capsys.readouterr().out
    run = _child(sweep, "t0002")
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.05"
    assert run.data.tags["mlflow.parentRunId"] == sweep.parent
    assert sorted(m.step for m in MlflowClient(sweep.uri).get_metric_history(run.info.run_id, "val_pgd_acc")) == [1, 2]
    assert not sweep.pending.exists()
    main(["export", str(sweep.exp)])  # nothing pending: nothing replayed twice
    assert _child(sweep, "t0002").info.run_id == run.info.run_id


def test_a_replay_that_fails_again_keeps_what_is_left(sweep, monkeypatch, capsys):
    callback = MLflowTrialCallback(sweep.tracker, max_epochs=2)
    trial = _trial("t0003")
    callback.on_trial_start(0, [], trial)
    monkeypatch.setattr(sweep.tracker.client, "log_batch", _fail)
    monkeypatch.setattr(sweep.tracker.client, "set_terminated", _fail)
    callback.on_trial_result(0, [], trial, {"epoch": 1, "pgd_acc": 0.1})
    callback.on_trial_complete(0, [], trial)
    monkeypatch.undo()
    monkeypatch.setattr(MlflowClient, "set_terminated", _fail)  # the store takes metrics again, not the status
    logs = []
    assert replay_pending(sweep.pending, sweep.uri, "faulty", sweep.parent, log=logs.append) == 2
    assert len(logs) == 1 and "1 MLflow call(s) still pending" in logs[0]
    assert [r["op"] for r in read_records(sweep.pending)] == ["terminate"]
    monkeypatch.undo()
    assert replay_pending(sweep.pending, sweep.uri, "faulty", sweep.parent, log=logs.append) == 1
    assert _child(sweep, "t0003").info.status == "FINISHED" and not sweep.pending.exists()


def test_the_parent_run_bookkeeping_degrades_too(sweep, monkeypatch, capsys):
    monkeypatch.setattr(sweep.tracker.client, "set_terminated", _fail)
    sweep.tracker.finish_parent("FINISHED")  # no exception
    assert "could not end the sweep's run" in capsys.readouterr().out
    assert read_records(sweep.pending) == [{"op": "terminate", "run": sweep.parent, "trial": None, "status": "FINISHED"}]
    monkeypatch.undo()
    replay_pending(sweep.pending, sweep.uri, "faulty", sweep.parent, log=lambda s: None)
    assert MlflowClient(sweep.uri).get_run(sweep.parent).info.status == "FINISHED"


def test_a_store_that_does_not_answer_at_the_start_is_one_line(tmp_path, monkeypatch, empty_store):
    from rslad_tune.sweep import pending
    from rslad_tune.trial.errors import SpecError

    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setattr(pending.Flaky.__init__, "__defaults__", (print, (0.01,)))
    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", _fail)
    with pytest.raises(SpecError, match="MLflow store does not answer") as e:
        SweepTracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", "x", tmp_path)
    assert len(str(e.value).splitlines()) == 1
