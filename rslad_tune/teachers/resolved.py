"""A teacher resolved once, and the one trial path that reads it.

`prepare_teachers` (sources.py) turns each `teachers:` entry into a `ResolvedTeacher`: its folder, its config.json
read one time and the adapter of the source that wrote it (its key stamped into config.json as `teacher_source`;
`sources.read_teacher` makes the record of a folder given by its path). Everything
downstream -- a trial, the soft-label caches, the prescreen, the report, MLflow -- takes these records; nothing
reads a teacher's config.json again or guesses its source. `train_student` is the one path of a trial:
`rslad-tune train` and Ray Tune's trainable both call it, so a trial trained either way reads the same cache and
gives the same weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..trial.config import TrialConfig
from ..trial.data import Splits, load_data, resolve_device
from ..trial.errors import SpecError
from ..trial.files import write_json
from ..trial.methods import METHODS
from ..trial.trainer import train_model
from . import soft_labels as cache
from .source import Log, Source

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

SOURCE_KEY = "teacher_source"  # config.json's record of the source that wrote the folder


@dataclass(frozen=True)
class ResolvedTeacher:
    """One resolved `teachers:` entry: name, folder, the adapter of its source (a bare Source: a plain weights
    folder) and its config.json."""

    name: str
    folder: Path
    adapter: Source = field(compare=False)
    saved: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def source(self) -> str | None:
        """The source's registry key (None: a plain weights folder)."""
        return getattr(self.adapter, "key", None)

    def stamped(self) -> ResolvedTeacher:
        """This record with its source written into config.json (once; atomic), so any later reader finds it."""
        if self.source is not None and self.saved.get(SOURCE_KEY) != self.source:
            saved = {**self.saved, SOURCE_KEY: self.source}
            write_json(saved, self.folder / "config.json")
            return dataclasses.replace(self, saved=saved)
        return self

    @property
    def distils(self) -> bool:
        """False: a no-teacher baseline (its students train without distillation)."""
        return self.adapter.distils

    @property
    def control(self) -> bool:
        """True: a reference (the no-teacher baseline, the label teacher), not a teacher to rank."""
        return self.adapter.control

    def method(self, trial: TrialConfig) -> str:
        """The method its students train with (a baseline's own, else the trial's)."""
        return self.adapter.method(self.saved, trial)

    def load(self, device: torch.device | str = "cpu") -> nn.Module | None:
        """Its module in eval mode without gradients (None: a teacher without one)."""
        model = self.adapter.load(self.folder, self.saved, device)
        return None if model is None else model.eval().requires_grad_(False)

    def train_splits(self, splits: Splits, teachers: dict[str, ResolvedTeacher], device) -> Splits:
        """The training split its students see (Source.train_splits; `teachers`: the sweep's, for a labeller)."""
        return self.adapter.train_splits(self.folder, self.saved, splits, lambda name: teachers[name].load(device))

    def for_trial(self, cfg: TrialConfig, splits: Splits, device: torch.device,
                  log: Log | None = None) -> tuple[nn.Module | None, Tensor | None]:
        """What a distilling trial reads: the module in eval mode (None without one) and, when the trial uses
        it, its soft-label cache for these training images (built and written here if missing)."""
        table = self.adapter.soft_labels(self.folder, self.saved, cfg, splits)
        if table is not None:
            return None, table.to(device)
        teacher = self.load(device)
        return teacher, cache.load_or_build(self.folder, teacher, cfg, splits, log) if cfg.soft_label_cache else None


Teachers = dict[str, ResolvedTeacher]


def train_student(cfg: TrialConfig, teachers: Teachers, *, splits: Splits | None = None, log: Log | None = None,
                  **train_kwargs) -> dict:
    """One trial: its teacher's record (None without one) decides the method, the training split and what the
    student reads, then train_model. `train_kwargs` go to train_model (report, checkpoint_dir, resume_dir, on_batch)."""
    teacher = teachers.get(cfg.teacher) if cfg.teacher else None
    method = teacher.method(cfg) if teacher is not None else cfg.method
    if method != cfg.method:  # a baseline trains with its own method
        cfg = dataclasses.replace(cfg, method=method)
    device = resolve_device(cfg.device)
    splits = splits or load_data(cfg, device)
    if teacher is not None:  # few labels: a label teacher keeps the labelled images, a pseudo baseline labels the rest
        splits = teacher.train_splits(splits, teachers, device)
    module, soft = None, None
    if METHODS[cfg.method].needs_teacher:  # the soft-label cache was built by the driver before the trials
        module, soft = teacher.for_trial(cfg, splits, device, log)
    return train_model(cfg, module, splits=splits, soft_labels=soft, log=log, **train_kwargs)


def build_soft_label_caches(trial: TrialConfig, teachers: Teachers, log: Log) -> None:
    """Once per sweep, in the driver: every distilling teacher's logits on every clean training view."""
    device = resolve_device(trial.device)
    splits = load_data(trial, device)
    for name, teacher in teachers.items():
        if not teacher.distils:  # a no-teacher baseline: nothing to cache
            continue
        try:
            cache.read_cache(cache.cache_path(teacher.folder, trial, splits), splits)  # present, right shape and digest
            log(f"teacher {name}: soft-label cache found")
            continue
        except SpecError:
            pass  # missing or bad: for_trial says which and (re)builds it
        teacher.for_trial(trial, splits, device, log=lambda s, name=name: log(f"teacher {name}: {s}"))
