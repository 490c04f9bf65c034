"""The sweep's parent MLflow run as people read it: its inputs when the sweep starts (the three data splits as
datasets, every teacher as a logged model), its answer when the trials are done (the best trial's validation
numbers, parameters and teacher) and the plots of the sweep (written to runs/<experiment>/ and logged beside
pgd_per_epoch.png), and the descriptions a person reads first in the UI (mlflow_notes.py: the experiment's line, the
parent run's answer). export.py adds the exported student's test numbers and model version."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..trial.errors import SpecError
from .layout import ExperimentDir
from .mlflow_data import split_records
from .mlflow_models import log_teachers
from .mlflow_notes import NOTE, describe_sweep, experiment_line
from .plots import plot_pareto, plot_study
from .provenance import trial_run_name
from .spec import SweepSpec
from .tracking import EPOCH_METRICS


def record_inputs(tracker, spec: SweepSpec, teachers: dict, cards: dict[str, dict],
                  log: Callable[[str], None]) -> dict[str, str]:
    """The experiment's one-line description, every teacher as a logged model, then the parent's inputs (datasets,
    teacher models); `teachers`: name -> teachers.resolved.ResolvedTeacher. Returns teacher name -> logged model id,
    for the trials' runs."""
    from ..trial.data import load_data

    tracker.store.attempt("describe the experiment", lambda: tracker.client.set_experiment_tag(
        tracker.experiment_id, NOTE, experiment_line(spec)))
    models = log_teachers(tracker.client, tracker.experiment_id, tracker.parent_id, teachers, cards, spec.teachers, log)
    try:
        datasets = split_records(spec.trial, load_data(spec.trial, "cpu"))
    except Exception as e:  # the data cannot be read in the driver: the sweep runs, its run lacks the datasets
        log(f"datasets not logged to MLflow: {type(e).__name__}: {str(e)[:150]}")
        datasets = []
    tracker.do("log the sweep's inputs", "inputs", tracker.parent_id, datasets=datasets, models=list(models.values()))
    return models


def record_answer(tracker, spec: SweepSpec, exp_dir: Path, log: Callable[[str], None]) -> list[Path]:
    """The best trial (layout.ExperimentDir.best_trial, the one export exports) on the parent run: metrics
    best_val_pgd_acc / best_val_clean_acc (at its best epoch), params best.<searched key>, tags best_trial_id,
    best_teacher; then pareto.png and the study's plots, written and logged; then the parent run's description
    (export and report rewrite it with their numbers). Returns the plots written."""
    exp = ExperimentDir.open(exp_dir)
    try:
        trials, best = exp.finished_trials(), exp.best_trial()
    except SpecError:  # no finished trial: nothing to answer with
        return []
    val = next((h for h in best.history if h["epoch"] == best.result["best_epoch"]), {})
    now = int(time.time() * 1000)
    metrics = [["best_val_pgd_acc", float(best.result["best_pgd_acc"]), now, 0]]
    if "clean_acc" in val:
        metrics.append(["best_val_clean_acc", float(val["clean_acc"]), now, 0])
    params = [[f"best.{k}", str(best.config.get(k))] for k in sorted(spec.search)]
    tags = [["best_trial_id", best.trial_id], ["best_trial_run", trial_run_name(best.trial_id, best.config)],
            ["best_teacher", str(best.config.get("teacher"))]]
    tracker.do("log the sweep's answer", "log_batch", tracker.parent_id, metrics=metrics, params=params, tags=tags)
    points = []
    for t in trials:
        at_best = next((h for h in t.history if h["epoch"] == t.result.get("best_epoch")), None)
        if at_best is not None:
            points.append({"label": trial_run_name(t.trial_id, t.config), "clean": at_best["clean_acc"],
                           "pgd": t.result["best_pgd_acc"], "full": t.result.get("epoch") == t.config.get("epochs"),
                           "exported": t.trial_id == best.trial_id})
    plots = [plot_pareto(points, exp.path / "pareto.png", f"{spec.experiment}: validation clean vs PGD-20 at each "
                         "trial's best epoch")] if points else []
    study = None
    if spec.search and spec.tune.searcher == "optuna":
        from .optuna_study import load_study

        study = load_study(exp.optuna_db, spec.experiment)
    if study is not None:
        metric = EPOCH_METRICS.get(spec.tune.metric, spec.tune.metric)  # the MLflow name: val_pgd_acc
        written, skipped = plot_study(study, sorted(spec.search), exp.path, metric)
        plots += written
        for line in skipped:
            log(line)
    for png in plots:
        tracker.do("log a plot of the sweep", "artifact", tracker.parent_id, path=str(png))
    if plots:
        log(f"plots of the sweep: {', '.join(p.name for p in plots)} in {exp.path}")
    describe_sweep(tracker.uri, exp, log)
    return plots
