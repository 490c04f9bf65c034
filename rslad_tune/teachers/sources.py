"""The teacher-source registry: a `teachers:` entry's source key -> its adapter (source.Source), and the
functions that go through it -- parse an entry, check it before anything is written, resolve it to a teacher
folder, load a resolved folder. Nothing else in the package names a source.

A new source is one adapter module with a `SOURCE` and one line in SOURCES (or `register(adapter)`).
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..trial.config import TrialConfig, check_field, check_keys
from ..trial.data import Splits
from ..trial.errors import SpecError
from ..trial.files import read_json
from . import baseline, checkpoint, labels, robustbench, train, zoo
from .folders import load_weights_folder
from .source import Log, Source, TeacherSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


SOURCES: dict[str, Source] = {s.key: s for s in (checkpoint.SOURCE, train.SOURCE, robustbench.SOURCE, zoo.SOURCE,
                                                 baseline.SOURCE, labels.SOURCE)}
CARD_KEYS = ("card_examples", "card_aa_examples")
REFERENCE_KEY = "reference"  # every source's entries take it: a reference arm, never stopped early by the scheduler
_FIELDS = {f.name: f for f in fields(TeacherSpec) if f.name in CARD_KEYS + (REFERENCE_KEY,)}


def register(source: Source) -> Source:
    """Add (or replace) a source; returns it, so an adapter module can end with `SOURCE = register(MySource())`."""
    SOURCES[source.key] = source
    return source


def _one_of() -> str:
    return "give exactly one of " + ", ".join(s.example for s in SOURCES.values())


def parse_teacher(name: str, raw: Any, data_values: dict[str, Any], base_dir: Path) -> TeacherSpec:
    """One entry of `teachers:` (form only: files, lists and the network are `check_teachers`'s)."""
    label = f"teachers.{name}"
    if not isinstance(raw, dict):
        raise SpecError(label, raw, f"must be a mapping: {_one_of()}")
    entry_keys = {k for s in SOURCES.values() for k in s.entry_keys}
    check_keys(f"{label}.", raw, tuple(SOURCES) + tuple(sorted(entry_keys)) + CARD_KEYS + (REFERENCE_KEY,))
    chosen = [k for k in SOURCES if k in raw]
    if len(chosen) != 1:
        raise SpecError(label, sorted(raw), _one_of())
    source = SOURCES[chosen[0]]
    for k in raw:
        if k in (source.key, REFERENCE_KEY) or k in source.entry_keys or (k in CARD_KEYS and source.takes_card):
            continue
        owners = [f"`{s.key}:`" for s in SOURCES.values() if k in s.entry_keys]
        raise SpecError(f"{label}.{k}", raw[k], source.refusals.get(k) or f"only a {' or '.join(owners) or 'other'} teacher takes {k}")
    card = {k: check_field(_FIELDS[k], f"{label}.{k}", raw[k]) for k in CARD_KEYS if k in raw}
    reference = check_field(_FIELDS[REFERENCE_KEY], f"{label}.{REFERENCE_KEY}", raw.get(REFERENCE_KEY, source.reference))
    return TeacherSpec(name, source.key, source.parse(label, raw, data_values, base_dir), **card, reference=reference)


def check_entries(teachers: dict[str, TeacherSpec]) -> None:
    """Parsing, across entries: what one entry names among the others exists (a pseudo-label baseline's teacher)."""
    labellers = tuple(n for n, t in teachers.items() if not SOURCES[t.source].control)
    for spec in teachers.values():
        SOURCES[spec.source].check_entry(spec, teachers, labellers)


def check_teachers(teachers: dict[str, TeacherSpec], data_values: dict[str, Any]) -> None:
    """Preflight, before the data is loaded: every entry's files and names exist (a SpecError names the first)."""
    for spec in teachers.values():
        SOURCES[spec.source].check(spec, data_values)


def check_teacher_weights(teachers: dict[str, TeacherSpec], splits: Splits) -> None:
    """Preflight, with the data loaded: every weights file a sweep names loads, finite."""
    for spec in teachers.values():
        SOURCES[spec.source].check_weights(spec, splits)


def prepare_teachers(teachers: dict[str, TeacherSpec], trial: TrialConfig, runs_dir: Path,
                     needed: set[str] | None = None, log: Log = print) -> dict[str, str]:
    """Resolve every teacher a sweep can use (`needed` and what they depend on); returns name -> folder (absolute)."""
    if needed is not None:
        needed = set(needed) | {d for n in needed if n in teachers for d in SOURCES[teachers[n].source].depends_on(teachers[n])}
    return {name: str(SOURCES[spec.source].resolve(spec, trial, runs_dir, log).resolve())
            for name, spec in teachers.items() if needed is None or name in needed}


def source_of(saved: dict) -> Source | None:
    """The source that wrote a resolved folder's config.json (None: a plain weights folder)."""
    return next((s for s in SOURCES.values() if s.owns(saved)), None)


def load_teacher(folder: str | Path, device: torch.device | str = "cpu") -> nn.Module | None:
    """The teacher module of a resolved folder, in eval mode without gradients (None: a teacher without one)."""
    folder = Path(folder)
    saved = read_json(folder / "config.json", f"teacher {folder.name}")
    source = source_of(saved)
    model = source.load(folder, saved, device) if source else load_weights_folder(folder, saved, device)
    return None if model is None else model.eval().requires_grad_(False)


def train_splits(folder: str | Path, splits: Splits, teacher_dirs: dict[str, str], device) -> Splits:
    """The training split a student of this resolved teacher sees (Source.train_splits)."""
    folder = Path(folder)
    saved = read_json(folder / "config.json", f"teacher {folder.name}")
    source = source_of(saved)
    return source.train_splits(folder, saved, splits, lambda name: load_teacher(teacher_dirs[name], device)) if source else splits


def distils(folder: str | Path) -> bool:
    """Whether a resolved teacher's students distil from it (False: a no-teacher baseline)."""
    source = source_of(read_json(Path(folder) / "config.json", f"teacher {Path(folder).name}"))
    return source.distils if source else True


def is_control(folder: str | Path) -> bool:
    """Whether a resolved teacher is a reference (the no-teacher baseline, the label teacher), not a teacher to rank."""
    source = source_of(read_json(Path(folder) / "config.json", f"teacher {Path(folder).name}"))
    return bool(source and source.control)


def student_method(folder: str | Path, trial: TrialConfig) -> str:
    """The method a resolved teacher's students train with (a baseline's own method, else the trial's)."""
    saved = read_json(Path(folder) / "config.json", f"teacher {Path(folder).name}")
    source = source_of(saved)
    return source.method(saved, trial) if source else trial.method
