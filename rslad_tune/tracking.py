"""MLflow adapter: one parent run per sweep, one child run per trial, written from the Ray driver only.

Only the driver talks to the tracking store (SQLite has one writer then); the Tune callback
turns trial events into MLflow calls: params at start, one `log_batch` per epoch (step = epoch),
the final checkpoint as artifacts, FINISHED/FAILED status and an `early_stopped` tag at the end.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

EPOCH_METRICS = ("train_loss", "clean_acc", "pgd_acc", "lr", "epoch_time_s", "train_images_per_s", "best_pgd_acc")
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray.trial_id"
KIND_TAG = "mlflow.experimentKind"


def resolve_tracking_uri(uri: str | None, runs_dir: Path) -> str:
    """Default sqlite:///<runs_dir>/mlflow.db; relative SQLite paths become absolute (Ray trials run elsewhere)."""
    if uri is None:
        return f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


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


def source_tags() -> dict[str, str]:
    """Where a run came from, in MLflow's own tags: the command line, the git commit of this checkout, the version."""
    import subprocess
    import sys
    from importlib.metadata import PackageNotFoundError, version

    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "rslad-tune",
            "rslad_tune.command": " ".join(["rslad-tune", *sys.argv[1:]])[:5000]}
    try:
        tags["rslad_tune.version"] = version("rslad-tune")
    except PackageNotFoundError:
        pass
    try:
        repo = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0 and commit.stdout.strip():
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            tags["rslad_tune.git_dirty"] = str(bool(dirty)).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def trial_run_name(trial_id: str, config: dict) -> str:
    """A readable child-run name: <short id>-<teacher or method>[-a<alpha>]-e<epsilon>[-s<seed>]."""
    from .methods import METHODS

    method = config.get("method")
    distils = method in METHODS and METHODS[method].needs_teacher
    parts = [trial_id[-5:], str(config.get("teacher") if distils else method)]
    if distils and config.get("alpha") is not None:
        parts.append(f"a{config['alpha']:.2f}")
    if METHODS.get(method) and METHODS[method].adversarial and config.get("epsilon") is not None:
        parts.append(f"e{config['epsilon']:.3f}")
    if config.get("seed"):
        parts.append(f"s{config['seed']}")
    return "-".join(parts)


def _params(d: dict[str, Any]) -> list[Param]:
    return [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in sorted(d.items())]


class SweepTracker:
    """The parent run of a sweep and the lookup of its child runs."""

    def __init__(self, tracking_uri: str, experiment: str, runs_dir: Path, parent_id: str | None = None):
        self.uri, self.experiment, self.runs_dir = tracking_uri, experiment, runs_dir
        self.client = MlflowClient(tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if tracking_uri.startswith("sqlite:"):  # keep artifacts beside the database, not in the cwd
                artifact_location = (runs_dir / "mlartifacts" / experiment).resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            self.experiment_id = exp.experiment_id
        if exp is None or KIND_TAG not in exp.tags:  # the UI opens on the training runs table, not the GenAI overview
            self.client.set_experiment_tag(self.experiment_id, KIND_TAG, "custom_model_development")
        self.parent_id = parent_id

    def start_parent(self, run_name: str, params: dict[str, Any], spec_text: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={"rslad_tune.kind": "sweep", **source_tags(), **tags})
        self.parent_id = run.info.run_id
        self.client.log_batch(self.parent_id, params=_params(params))
        self.client.log_text(self.parent_id, spec_text, "space.yaml")
        return self.parent_id

    def child_run(self, trial_id: str) -> str | None:
        return find_child_run(self.client, self.experiment_id, self.parent_id, trial_id)

    def finish_parent(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status)


class TrainRun:
    """The MLflow run of `rslad-tune train` (one trial outside a sweep), logged like a sweep's trial run:
    params at the start, metrics per epoch (step = epoch), test numbers and the checkpoint at the end."""

    def __init__(self, uri: str, experiment: str, runs_dir: Path, name: str, params: dict[str, Any]):
        self.tracker = SweepTracker(uri, experiment, runs_dir)
        self.client = self.tracker.client
        tags = {"rslad_tune.kind": "train", **source_tags()}
        self.run_id = self.client.create_run(self.tracker.experiment_id, run_name=name, tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=_params(params))

    def epoch(self, metrics: dict) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(metrics[k]), ts, int(metrics["epoch"]))
                                                    for k in EPOCH_METRICS if k in metrics])

    def finish(self, status: str, metrics: dict[str, float] | None = None, folder: Path | None = None) -> None:
        files = [(folder / f, "checkpoint") for f in ("model.safetensors", "best.safetensors", "trial.json")
                 if folder is not None and (folder / f).is_file()]
        log_to_run(self.tracker.uri, self.run_id, metrics=metrics, artifacts=files)
        self.client.set_terminated(self.run_id, status)


class MLflowTrialCallback(Callback):
    """Tune callback: mirrors every trial into an MLflow child run of the sweep's parent run."""

    def __init__(self, tracker: SweepTracker, max_epochs: int, teacher_cards: dict[str, dict] | None = None):
        self.tracker, self.max_epochs = tracker, max_epochs
        self.cards = teacher_cards or {}
        self.run_ids: dict[str, str] = {}
        self.logged_epoch: dict[str, int] = {}  # a resumed trial re-reports nothing MLflow already has

    # Tune pickles its run config (and this callback) into the experiment folder for Tuner.restore:
    # keep the plain values and reconnect to the store when unpickled.
    def __getstate__(self):
        t = self.tracker
        return {"where": (t.uri, t.experiment, t.runs_dir, t.parent_id), "max_epochs": self.max_epochs, "cards": self.cards}

    def __setstate__(self, state):
        self.__init__(SweepTracker(*state["where"]), state["max_epochs"], state["cards"])

    @property
    def client(self) -> MlflowClient:
        return self.tracker.client

    def _run_id(self, trial) -> str:
        if trial.trial_id in self.run_ids:
            return self.run_ids[trial.trial_id]
        run_id = self.tracker.child_run(trial.trial_id)  # a resumed sweep reuses the trial's run
        if run_id is not None:
            hist = self.client.get_metric_history(run_id, "pgd_acc")
            self.logged_epoch[trial.trial_id] = max((m.step for m in hist), default=0)
        else:
            tags = {PARENT_TAG: self.tracker.parent_id, TRIAL_TAG: trial.trial_id, "rslad_tune.kind": "trial",
                    "teacher": str(trial.config.get("teacher"))}
            run_id = self.client.create_run(self.tracker.experiment_id, run_name=trial_run_name(trial.trial_id, trial.config),
                                            tags=tags).info.run_id
            card = self.cards.get(trial.config.get("teacher")) or {}
            teacher = {f"teacher_{k}": card[k] for k in ("params", "macs", "clean_acc", "pgd20_acc", "aa_acc", "source") if k in card}
            self.client.log_batch(run_id, params=_params({**trial.config, **teacher}))
        self.run_ids[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        run_id = self._run_id(trial)
        if step <= self.logged_epoch.get(trial.trial_id, 0):
            return
        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(result[k]), ts, step) for k in EPOCH_METRICS if k in result]
        self.client.log_batch(run_id, metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        epochs = int((trial.last_result or {}).get("epoch", 0))
        stopped = epochs < self.max_epochs
        tags = [RunTag("epochs_run", str(epochs)), RunTag("early_stopped", str(stopped).lower())]
        self.client.log_batch(run_id, tags=tags)
        ckpt = trial.checkpoint
        if ckpt is not None and Path(ckpt.path).is_dir():
            for name in ("model.safetensors", "best.safetensors", "trial.json"):
                f = Path(ckpt.path) / name
                if f.is_file():
                    self.client.log_artifact(run_id, str(f), "checkpoint")
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        reason = trial_error_text(trial)
        self.client.log_batch(run_id, tags=[RunTag("error", reason[:5000]),
                                            RunTag("epochs_run", str(int((trial.last_result or {}).get("epoch", 0))))])
        self.client.set_terminated(run_id, "FAILED")


def trial_error_text(trial) -> str:
    """The last line of the trial's error (Ray keeps the traceback in error.txt / error.pkl)."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text(errors="replace").strip().splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()
    return "trial failed (no error file)"
