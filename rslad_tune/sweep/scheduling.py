"""The sweep's trial scheduler: Ray Tune's own ASHA (AsyncHyperBandScheduler) for every trial but a reference arm's.

A reference arm is a teacher entry marked `reference: true` (a `baseline:` entry is one by default: its source's
`reference`). Its students are never stopped early, so every report with a baseline can compare the teachers'
students with one trained every epoch ("should I distil?"). Their results stay out of ASHA's rungs, so a slow starter
does not lower the bar for the others, unless `tune.reference_in_rungs: true` puts them in (they are still never
stopped). `ReferenceASHA` passes reference trials through and hands every other call to the AsyncHyperBandScheduler
it holds: the rungs, cutoffs and bookkeeping are Ray's.
"""
from __future__ import annotations

import math

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from .spec import SweepSpec


class ReferenceASHA(TrialScheduler):
    """`asha` decides every trial whose config's `teacher` is not in `references`; a reference trial CONTINUEs
    (its results recorded in asha's rungs only when `in_rungs`)."""

    def __init__(self, asha: AsyncHyperBandScheduler, references: set[str], in_rungs: bool = False):
        super().__init__()
        self.asha, self.references, self.in_rungs = asha, set(references), in_rungs

    def is_reference(self, trial) -> bool:
        return (trial.config or {}).get("teacher") in self.references

    def _asha_sees(self, trial) -> bool:
        return self.in_rungs or not self.is_reference(trial)

    @property
    def metric(self):
        return self.asha.metric

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.asha.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial) -> None:
        if self._asha_sees(trial):
            self.asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if not self.is_reference(trial):
            return self.asha.on_trial_result(tune_controller, trial, result)
        if self.in_rungs:  # its value recorded at the rung; ASHA's decision on it is not followed
            self.asha.on_trial_result(tune_controller, trial, result)
        return TrialScheduler.CONTINUE

    def on_trial_error(self, tune_controller, trial) -> None:
        self.asha.on_trial_error(tune_controller, trial)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if self._asha_sees(trial):
            self.asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if self._asha_sees(trial):
            self.asha.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        return self.asha.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return (self.asha.debug_string() + f"\nReference arms (never stopped; "
                f"{'in' if self.in_rungs else 'not in'} the rungs): {', '.join(sorted(self.references)) or 'none'}")


def asha_scheduler(max_t: int, grace_period: int, reduction_factor: float, references: set[str] = frozenset(),
                   in_rungs: bool = False) -> TrialScheduler:
    """Ray's ASHA on the epochs (`training_iteration`), wrapped so that reference arms run to the end (plain ASHA
    when there is none). bench/ replays recorded sweeps through it."""
    asha = AsyncHyperBandScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace_period,
                                   reduction_factor=reduction_factor)
    return ReferenceASHA(asha, references, in_rungs) if references else asha


def make_scheduler(spec: SweepSpec) -> TrialScheduler:
    """FIFO (`scheduler: {type: fifo}`), or ASHA with the YAML's grace period and reduction factor and max_t the
    trial's epochs, its reference arms passed through."""
    t = spec.tune
    if t.scheduler != "asha":
        return FIFOScheduler()
    return asha_scheduler(spec.trial.epochs, t.grace_period, t.reduction_factor, spec.references, t.reference_in_rungs)


def milestones(scheduler: TrialScheduler, max_t: int) -> list[int]:
    """The epochs at which an ASHA scheduler can stop a trial: its rungs below max_t, read from Ray's own bracket
    (a trial reaches milestone m at the first epoch >= m); [] for FIFO."""
    asha = getattr(scheduler, "asha", scheduler)
    if not isinstance(asha, AsyncHyperBandScheduler):
        return []
    return sorted(math.ceil(m) for m, _ in asha._brackets[0]._rungs if m < max_t)


def rungs(spec: SweepSpec) -> list[int]:
    """The sweep's ASHA rungs (milestones); [] for FIFO."""
    return milestones(make_scheduler(spec), spec.trial.epochs)
