"""MLflow adapter: one parent run per sweep, one child run per trial, written from the Ray driver only.

Only the driver talks to the tracking store (SQLite has one writer then); the Tune callback
turns trial events into MLflow calls: params at start, one `log_batch` per epoch (step = epoch),
the final checkpoint as artifacts, FINISHED/FAILED status and an `early_stopped` tag at the end.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from ..trial.files import file_lock
from .relocation import resumed
from .stores import relocate_artifacts
from .pending import Flaky, append_record, keep_records, read_records, replayable
from .provenance import source_tags, trial_error_text, trial_run_name

# a trial's per-epoch result key -> its MLflow metric name: the validation numbers are named as in best/metrics.json
EPOCH_METRICS = {"train_loss": "train_loss", "clean_acc": "val_clean_acc", "pgd_acc": "val_pgd_acc", "lr": "lr",
                 "epoch_time_s": "epoch_time_s", "train_images_per_s": "train_images_per_s",
                 "best_pgd_acc": "best_val_pgd_acc"}
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray.trial_id"
KIND_TAG = "mlflow.experimentKind"


def find_child_run(client: MlflowClient, experiment_id: str, parent_id: str, trial_id: str) -> str | None:
    """The run id of a trial's child run under a sweep's parent run (None if there is none)."""
    runs = client.search_runs([experiment_id], f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
                              f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


def find_trial_run(uri: str | None, experiment: str, parent_id: str | None, trial_id: str) -> str | None:
    """A trial's child run id, by lookup only (nothing is created); None when the store is gone or has none."""
    if not uri or not parent_id:
        return None
    try:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        return find_child_run(client, exp.experiment_id, parent_id, trial_id) if exp else None
    except Exception:  # tracking store gone or unreachable: the caller's files still stand
        return None


def log_to_run(uri: str | None, run_id: str | None, *, metrics: dict[str, float] | None = None,
               tags: dict[str, str] | None = None, artifacts: list[tuple[Path, str]] = (),
               log: Callable[[str], None] | None = print) -> bool:
    """Log metrics (step 0), tags and artifacts (file, folder) to an existing run. A store that is gone or
    unreachable is reported in one line, never raised: what was computed is already in files."""
    if not uri or not run_id:
        return False
    try:
        client = MlflowClient(uri)
        ts = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items()],
                         tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
        for path, folder in artifacts:
            client.log_artifact(run_id, str(path), folder)
    except Exception as e:
        if log:
            log(f"could not log to MLflow run {run_id} at {uri}: {type(e).__name__}: {str(e)[:150]}")
        return False
    return True


def _params(d: dict[str, Any]) -> list[Param]:
    return [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in sorted(d.items())]


def _store_lock(uri: str):
    """Two commands that open a new SQLite store at once race on creating its tables (`duplicate column`):
    a flock on a file beside the database serialises that; other stores need none."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if db.parent.is_dir():
            return file_lock(db.with_name(f".{db.name}.lock"))
    return nullcontext()


def _op_log_batch(client: MlflowClient, run: str, f: dict) -> None:
    client.log_batch(run, metrics=[Metric(k, v, ts, step) for k, v, ts, step in f.get("metrics", [])],
                     params=[Param(k, v) for k, v in f.get("params", [])], tags=[RunTag(k, v) for k, v in f.get("tags", [])])


def _op_artifact(client: MlflowClient, run: str, f: dict) -> None:
    if Path(f["path"]).exists():  # a replay long after: a checkpoint Ray has since replaced is skipped
        client.log_artifact(run, f["path"], f.get("folder"))


def _op_inputs(client: MlflowClient, run: str, f: dict) -> None:
    """Datasets (mlflow_data.split_records' records) and logged models (ids) as the run's inputs."""
    from mlflow.entities import LoggedModelInput

    from .mlflow_data import to_inputs

    client.log_inputs(run, datasets=to_inputs(f.get("datasets", [])), models=[LoggedModelInput(m) for m in f.get("models", [])])


# what a store call does, from a JSON record (the same code runs it live and replays it from mlflow-pending.jsonl)
OPS: dict[str, Callable[[MlflowClient, str, dict], Any]] = {
    "log_batch": _op_log_batch, "artifact": _op_artifact,
    "terminate": lambda client, run, f: client.set_terminated(run, f["status"]),
    "status": lambda client, run, f: client.update_run(run, f["status"]),
    "dict": lambda client, run, f: client.log_dict(run, f["obj"], f["file"]),
    "inputs": _op_inputs,
}


class SweepTracker:
    """The parent run of a sweep and the lookup of its child runs. Calls made while the sweep runs go through
    `do` (pending.Flaky): retried briefly, then one warning line and a record in `pending` for a later replay."""

    def __init__(self, tracking_uri: str, experiment: str, runs_dir: Path, parent_id: str | None = None,
                 pending: Path | None = None, log: Callable[[str], None] | None = None):
        self.uri, self.experiment, self.runs_dir, self.pending = tracking_uri, experiment, runs_dir, pending
        self.store = Flaky(f"MLflow ({tracking_uri})", pending, log or _say)
        for k, v in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")):
            os.environ.setdefault(k, v)  # a server that is away: our retries, not minutes inside MLflow's
        with _store_lock(tracking_uri):  # a fresh SQLite store: its tables are created by one command at a time
            relocate_artifacts(tracking_uri, runs_dir, log or _say)  # a copied runs folder's store logs into the copy
            self.client = MlflowClient(tracking_uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                artifact_location = None
                if tracking_uri.startswith("sqlite:"):  # keep artifacts beside the database, not in the cwd
                    artifact_location = (runs_dir / "mlartifacts" / experiment).resolve().as_uri()
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
            else:
                self.experiment_id = exp.experiment_id
            # MLflow's experiment kind, for the clients that read it; 3.17's UI picks its view per browser (mlflow_ui.py)
            if exp is None or KIND_TAG not in exp.tags:
                self.client.set_experiment_tag(self.experiment_id, KIND_TAG, "custom_model_development")
        self.parent_id = parent_id

    @classmethod
    def open(cls, uri: str, *args, **kwargs) -> "SweepTracker":
        """A tracker, the store retried briefly first; a store that still does not answer is one SpecError line."""
        return _answered(uri, *Flaky("MLflow", None, lambda s: None).attempt("open", lambda: cls(uri, *args, **kwargs)))

    def start_parent(self, run_name: str, params: dict[str, Any], spec_text: str, tags: dict[str, str]) -> str:
        def start() -> str:
            run = self.client.create_run(self.experiment_id, run_name=run_name,
                                         tags={"rslad_tune.kind": "sweep", **source_tags(), **tags})
            self.client.log_batch(run.info.run_id, params=_params(params))
            self.client.log_text(run.info.run_id, spec_text, "space.yaml")
            return run.info.run_id

        self.parent_id = _answered(self.uri, *Flaky("MLflow", None, lambda s: None).attempt("start", start))
        return self.parent_id

    def child_run(self, trial_id: str) -> str | None:
        return find_child_run(self.client, self.experiment_id, self.parent_id, trial_id)

    def do(self, what: str, op: str, run_id: str | None, trial_id: str | None = None, **fields) -> bool:
        """One store call (OPS[op]) to `run_id` (a trial's run, or the parent's when trial_id is None). A run not
        known yet (the store was away when it was looked up) is recorded for replay, which finds it by trial id."""
        record = {"op": op, "run": run_id, "trial": trial_id, **fields}
        if run_id is None:
            if self.pending:
                append_record(self.pending, record)
            return False
        return self.store.attempt(what, lambda: OPS[op](self.client, run_id, fields), record)[0]

    def finish_parent(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.do("end the sweep's run", "terminate", self.parent_id, status=status)

    def end_interrupted(self) -> set[str] | None:
        """An interrupted sweep: the trial runs still RUNNING end KILLED (the parent with finish_parent). Returns the
        trial ids whose runs are KILLED now (earlier interruptions included), the trials that did not finish;
        None when the store could not say."""
        ok, runs = self.store.attempt("find the sweep's unfinished trial runs", lambda: self.client.search_runs(
            [self.experiment_id], f"tags.`{PARENT_TAG}` = '{self.parent_id}' and attributes.status != 'FINISHED' "
            "and attributes.status != 'FAILED'"))
        if not ok:
            return None
        for r in runs:
            if r.info.status == "RUNNING":
                self.do("end an unfinished trial's run", "terminate", r.info.run_id, r.data.tags.get(TRIAL_TAG),
                        status="KILLED")
        return {r.data.tags.get(TRIAL_TAG) for r in runs}


def _answered(uri: str, ok: bool, value: Any) -> Any:
    """What the store gave, or the one-line error for a store that does not answer before a sweep starts."""
    if not ok:
        from ..trial.errors import SpecError

        raise SpecError("tracking URI", uri, "the MLflow store does not answer (after retries): start it "
                        "(e.g. `mlflow server`), or give another --tracking-uri")
    return value


def _say(line: str) -> None:
    print(f"[rslad-tune] {line}", flush=True)


def replay_pending(path: Path, uri: str | None, experiment: str, parent_id: str | None,
                   log: Callable[[str], None] = _say) -> int:
    """Apply the calls a sweep could not make (mlflow-pending.jsonl), oldest first; what fails again stays in the
    file for the next command. Returns how many were applied. One log line, never a traceback."""
    records = replayable(path, read_records(path), {*OPS, "create_run"}, log)  # files inside the folder only
    if not records or not uri:
        keep_records(path, records)
        return 0
    done = 0
    try:
        tracker = SweepTracker(uri, experiment, path.parent.parent, parent_id)
        for rec in records:
            trial, run = rec.get("trial"), rec.get("run")
            if rec["op"] == "create_run":
                run = tracker.child_run(trial) or tracker.client.create_run(
                    tracker.experiment_id, run_name=rec["name"], tags=rec["tags"]).info.run_id
                _op_log_batch(tracker.client, run, {"params": rec["params"]})
            else:
                run = run or (tracker.child_run(trial) if trial else parent_id)
                if run is None:
                    raise LookupError(f"no MLflow run of trial {trial}")
                OPS[rec["op"]](tracker.client, run, rec)
            done += 1
    except Exception as e:
        log(f"warning: {len(records) - done} MLflow call(s) still pending in {path} "
            f"({type(e).__name__}: {' '.join(str(e).split())[:120]}); the next command on this experiment tries again")
    else:
        log(f"MLflow: replayed {done} call(s) a sweep could not make then ({path})")
    keep_records(path, records[done:])
    return done


class TrainRun:
    """The MLflow run of `rslad-tune train` (one trial outside a sweep), logged like a sweep's trial run:
    params at the start, metrics per epoch (step = epoch), test numbers and the checkpoint at the end."""

    def __init__(self, uri: str, experiment: str, runs_dir: Path, name: str, params: dict[str, Any]):
        self.tracker = SweepTracker.open(uri, experiment, runs_dir)  # every call retried, then one line (pending.Flaky)
        self.client = self.tracker.client
        tags = {"rslad_tune.kind": "train", **source_tags()}
        self.run_id = _answered(uri, *self.tracker.store.attempt("start the run", lambda: self.client.create_run(
            self.tracker.experiment_id, run_name=name, tags=tags).info.run_id))
        self.tracker.store.attempt("log the params", lambda: self.client.log_batch(self.run_id, params=_params(params)))

    def epoch(self, metrics: dict) -> None:
        ts = int(time.time() * 1000)
        self.tracker.store.attempt("log an epoch", lambda: self.client.log_batch(self.run_id, metrics=[
            Metric(name, float(metrics[k]), ts, int(metrics["epoch"])) for k, name in EPOCH_METRICS.items() if k in metrics]))

    def finish(self, status: str, metrics: dict[str, float] | None = None, folder: Path | None = None) -> None:
        files = [(folder / f, "checkpoint") for f in ("model.safetensors", "best.safetensors", "trial.json")
                 if folder is not None and (folder / f).is_file()]
        log_to_run(self.tracker.uri, self.run_id, metrics=metrics, artifacts=files)
        self.tracker.store.attempt("end the run", lambda: self.client.set_terminated(self.run_id, status))


class MLflowTrialCallback(Callback):
    """Tune callback: mirrors every trial into an MLflow child run of the sweep's parent run. A store that is away
    costs one warning line; the calls it missed wait in the tracker's pending file (SweepTracker.do)."""

    def __init__(self, tracker: SweepTracker, max_epochs: int, teacher_cards: dict[str, dict] | None = None,
                 teacher_models: dict[str, str] | None = None):
        from .mlflow_data import SplitRecords

        self.tracker, self.max_epochs = tracker, max_epochs
        self.cards = teacher_cards or {}
        self.teacher_models = teacher_models or {}  # teacher name -> its MLflow logged model id (mlflow_models)
        self.splits = SplitRecords()  # a trial's datasets, per distinct data keys
        self.run_ids: dict[str, str] = {}
        self.logged_epoch: dict[str, int] = {}  # a resumed trial re-reports nothing MLflow already has
        self.recorded: set[str] = set()  # trials whose run creation waits in the pending file

    # Tune pickles its run config (and this callback) into the experiment folder for Tuner.restore:
    # keep the plain values and reconnect to the store when unpickled.
    def __getstate__(self):
        t = self.tracker
        return {"where": (t.uri, t.experiment, t.runs_dir, t.parent_id, t.pending), "max_epochs": self.max_epochs,
                "cards": self.cards, "teacher_models": self.teacher_models}

    def __setstate__(self, state):  # a resumed sweep (a copy, maybe) logs to the store its command opened
        tracker = resumed("tracker") or SweepTracker.open(*state["where"])
        self.__init__(tracker, state["max_epochs"], state["cards"], state.get("teacher_models"))

    def _run_id(self, trial) -> str | None:
        """The trial's run: found (a resumed sweep reuses it, RUNNING again) or created; None while the store is away."""
        tid, t = trial.trial_id, self.tracker
        if tid in self.run_ids:
            return self.run_ids[tid]
        ok, run_id = t.store.attempt("find a trial's run", lambda: t.child_run(tid))
        if ok and run_id is not None:
            ok_hist, hist = t.store.attempt("read a trial's logged epochs", lambda: t.client.get_metric_history(run_id, EPOCH_METRICS["pgd_acc"]))
            self.logged_epoch[tid] = max((m.step for m in hist or []), default=0)
            t.do("reopen a resumed trial's run", "status", run_id, tid, status="RUNNING")
        else:  # not found (created now), or the store is away (replay finds or creates it)
            name = trial_run_name(tid, trial.config)
            teacher = trial.config.get("teacher")
            tags = {**source_tags(), PARENT_TAG: t.parent_id, TRIAL_TAG: tid, "rslad_tune.kind": "trial",
                    "teacher": str(teacher)}
            if teacher in self.teacher_models:
                tags["teacher_model_id"] = self.teacher_models[teacher]
            if ok:
                ok, run_id = t.store.attempt("create a trial's run", lambda: t.child_run(tid) or t.client.create_run(
                    t.experiment_id, run_name=name, tags=tags).info.run_id)
            params = [[p.key, p.value] for p in _params({**trial.config, **self._teacher(trial)})]
            if ok:
                t.do("log a trial's params", "log_batch", run_id, tid, params=params)
                self._log_inputs(trial, run_id)
            elif tid not in self.recorded and t.pending:
                append_record(t.pending, {"op": "create_run", "trial": tid, "name": name, "tags": tags, "params": params})
                self.recorded.add(tid)
        if run_id is not None:
            self.run_ids[tid] = run_id
        return run_id

    def _log_inputs(self, trial, run_id: str) -> None:
        """The trial's three splits as datasets and its teacher's logged model as a model input."""
        try:
            datasets = self.splits(trial.config)
        except Exception as e:  # the data cannot be read in the driver: the trial's run goes without its datasets
            self.tracker.store.warn(f"trial {trial.trial_id}: datasets not logged ({type(e).__name__}: {str(e)[:120]})")
            datasets = []
        model = self.teacher_models.get(trial.config.get("teacher"))
        self.tracker.do("log a trial's inputs", "inputs", run_id, trial.trial_id, datasets=datasets,
                        models=[model] if model else [])

    def _teacher(self, trial) -> dict:
        card = self.cards.get(trial.config.get("teacher")) or {}
        return {f"teacher_{k}": card[k] for k in ("params", "macs", "clean_acc", "pgd20_acc", "aa_acc", "source") if k in card}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        run_id = self._run_id(trial)
        if step <= self.logged_epoch.get(trial.trial_id, 0):
            return
        ts = int(time.time() * 1000)
        metrics = [[name, float(result[k]), ts, step] for k, name in EPOCH_METRICS.items() if k in result]
        self.tracker.do("log a trial's epoch", "log_batch", run_id, trial.trial_id, metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id, tid = self._run_id(trial), trial.trial_id
        epochs = int((trial.last_result or {}).get("epoch", 0))
        tags = [["epochs_run", str(epochs)], ["early_stopped", str(epochs < self.max_epochs).lower()]]
        if (trial.last_result or {}).get("node_id"):  # the Ray node that ran it (system metrics are the driver's)
            tags.append(["ray.node_id", str(trial.last_result["node_id"])])
        self.tracker.do("tag a finished trial", "log_batch", run_id, tid, tags=tags)
        ckpt = trial.checkpoint
        if ckpt is not None and Path(ckpt.path).is_dir():
            for name in ("model.safetensors", "best.safetensors", "trial.json"):
                if (Path(ckpt.path) / name).is_file():
                    self.tracker.do("log a trial's checkpoint", "artifact", run_id, tid, path=str(Path(ckpt.path) / name),
                                    folder="checkpoint")
        self.tracker.do("end a trial's run", "terminate", run_id, tid, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id, tid = self._run_id(trial), trial.trial_id
        tags = [["error", trial_error_text(trial)[:5000]], ["epochs_run", str(int((trial.last_result or {}).get("epoch", 0)))]]
        self.tracker.do("tag a failed trial", "log_batch", run_id, tid, tags=tags)
        self.tracker.do("end a trial's run", "terminate", run_id, tid, status="FAILED")
