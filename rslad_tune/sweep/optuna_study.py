"""Optuna's side of a sweep: the study in runs/<experiment>/optuna.db, read as Optuna users read it.

Ray's OptunaSearch tells Optuna every trial the scheduler ends as COMPLETE with its last value, so ASHA's early
stops would read as finished results in optuna-dashboard and in `optuna.importance`. `PruningOptunaSearch` tells
them PRUNED instead, with the last reported value as the trial's last intermediate value (Optuna keeps that as a
pruned trial's value):

    optuna-dashboard sqlite:///runs/<experiment>/optuna.db
"""
from __future__ import annotations

from pathlib import Path

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch


class PruningOptunaSearch(OptunaSearch):
    """OptunaSearch for a sweep whose trials run `max_t` iterations (epochs): a trial that ends earlier without an
    error was stopped by the scheduler and is told PRUNED; a trial that ran every epoch is told COMPLETE."""

    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_t = max_t  # these two are kept by OptunaSearch.save (its __dict__) for Tuner.restore
        self.last_step: dict[str, int] = {}  # trial id -> the last step reported to Optuna

    def restore(self, checkpoint_path: str):
        """Tuner.restore: the searcher state saved before a crash. A trial the killed driver had already asked
        Optuna for, after that save, stays RUNNING in optuna.db for ever: it is told FAIL (it never ran)."""
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        for t in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.number not in known:
                self._ot_study.tell(t.number, state=optuna.trial.TrialState.FAIL)

    def on_trial_result(self, trial_id: str, result: dict):
        super().on_trial_result(trial_id, result)
        self.last_step[trial_id] = result.get(TRAINING_ITERATION)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        step = (result or {}).get(TRAINING_ITERATION)
        value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
        if error or step is None or value is None or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        # Tune hands a trial's last result (ASHA's stop, or the last epoch) to on_trial_complete only: the study's
        # intermediate values then hold every epoch
        if self.last_step.get(trial_id) != step:
            ot_trial.report(float(value), int(step))
        if step >= self.max_t:
            return super().on_trial_complete(trial_id, result, error)
        self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def storage(db: Path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{Path(db).resolve()}")


def load_study(db: Path, name: str) -> optuna.Study | None:
    """The sweep's study (None when the sweep used no Optuna search or the file is gone)."""
    if not Path(db).is_file():
        return None
    try:
        return optuna.load_study(study_name=name, storage=storage(db))
    except KeyError:  # no study of that name in the file
        return None
