"""One path runs one trial: resolve what the student learns from (its teacher module, the teacher's soft-label
cache, or no teacher), then `trainer.train_model`. `rslad-tune train` and Ray Tune's trainable both call
`train_student`, so a trial trained either way reads the same cache and gives the same weights."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ..trial.config import TrialConfig
from ..trial.data import Splits, load_data, resolve_device
from ..trial.files import read_json
from ..trial.methods import METHODS
from ..trial.trainer import train_model
from . import soft_labels
from .source import Log
from .sources import load_teacher, source_of, train_splits

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


def effective_config(cfg: TrialConfig, folder: str | Path | None) -> TrialConfig:
    """The trial as it trains: a source may replace its method (the no-teacher baseline trains with its own)."""
    if folder is None:
        return cfg
    saved = read_json(Path(folder) / "config.json", f"teacher {Path(folder).name}")
    source = source_of(saved)
    method = source.method(saved, cfg) if source else cfg.method
    return cfg if method == cfg.method else dataclasses.replace(cfg, method=method)


def teacher_for_trial(cfg: TrialConfig, folder: str | Path, splits: Splits, device: torch.device,
                      log: Log | None = None) -> tuple[nn.Module | None, Tensor | None]:
    """What a distilling trial reads: the teacher in eval mode (None for a teacher without a module) and, when
    the trial uses it, its soft-label cache for these training images (built and written here if missing)."""
    folder = Path(folder)
    saved = read_json(folder / "config.json", f"teacher {folder.name}")
    source = source_of(saved)
    table = source.soft_labels(folder, saved, cfg, splits) if source else None
    if table is not None:
        return None, table.to(device)
    teacher = load_teacher(folder, device)
    soft = soft_labels.load_or_build(folder, teacher, cfg, splits, log) if cfg.soft_label_cache else None
    return teacher, soft


def train_student(cfg: TrialConfig, teacher_dirs: dict[str, str], *, splits: Splits | None = None,
                  log: Log | None = None, **train_kwargs) -> dict:
    """One trial: its teacher resolved from `teacher_dirs` (name -> resolved folder), then train_model.
    `train_kwargs` go to train_model (report, checkpoint_dir, resume_dir, on_batch)."""
    folder = teacher_dirs.get(cfg.teacher) if cfg.teacher else None
    cfg = effective_config(cfg, folder)
    device = resolve_device(cfg.device)
    splits = splits or load_data(cfg, device)
    if folder is not None:  # few labels: a label teacher keeps the labelled images, a pseudo baseline labels the rest
        splits = train_splits(folder, splits, teacher_dirs, device)
    teacher, soft = None, None
    if METHODS[cfg.method].needs_teacher:  # the soft-label cache was built by the driver before the trials
        teacher, soft = teacher_for_trial(cfg, folder, splits, device, log)
    return train_model(cfg, teacher, splits=splits, soft_labels=soft, log=log, **train_kwargs)


def build_soft_label_caches(trial: TrialConfig, teacher_dirs: dict[str, str], log: Log) -> None:
    """Once per sweep, in the driver: every teacher's logits on every clean training view."""
    from ..trial.errors import SpecError
    from .sources import distils

    device = resolve_device(trial.device)
    splits = load_data(trial, device)
    for name, folder in teacher_dirs.items():
        if not distils(folder):  # a no-teacher baseline: nothing to cache
            continue
        path = soft_labels.cache_path(folder, trial, splits)
        try:
            soft_labels.read_cache(path, splits)  # present, of the right shape, its digest matching
            log(f"teacher {name}: soft-label cache found")
            continue
        except SpecError:
            pass  # missing or bad: teacher_for_trial says which and (re)builds it
        teacher_for_trial(trial, folder, splits, device, log=lambda s, name=name: log(f"teacher {name}: {s}"))
