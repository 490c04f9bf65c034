"""The teacher-source registry: a `teachers:` entry's source key -> its adapter (source.Source), and the
functions that go through it -- parse an entry, check it before anything is written, resolve it to a teacher
folder (a resolved.ResolvedTeacher record). Nothing else in the package names a source.

A new source is one adapter module with a `SOURCE` and one registry line (trial/registry.py's Registry, the shape
of every extension point): `SOURCES.register(key, adapter)` or `register(adapter)`.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..trial.config import TrialConfig, check_field, check_keys
from ..trial.data import Splits
from ..trial.errors import SpecError
from ..trial.files import read_json
from ..trial.registry import Registry
from . import baseline, checkpoint, labels, robustbench, train, zoo
from .resolved import SOURCE_KEY, ResolvedTeacher, Teachers
from .source import Log, Source, TeacherSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


SOURCES = Registry("teacher source")  # key -> adapter, in the order "give exactly one of" lists them
for _adapter in (checkpoint.SOURCE, train.SOURCE, robustbench.SOURCE, zoo.SOURCE, baseline.SOURCE, labels.SOURCE):
    SOURCES.register(_adapter.key, _adapter)
CARD_KEYS = ("card_examples", "card_aa_examples")
REFERENCE_KEY = "reference"  # every source's entries take it: a reference arm, never stopped early by the scheduler
_FIELDS = {f.name: f for f in fields(TeacherSpec) if f.name in CARD_KEYS + (REFERENCE_KEY,)}


def register(source: Source) -> Source:
    """Add (or replace) a source under its key; returns it, so an adapter module can end with
    `SOURCE = register(MySource())`."""
    return SOURCES.register(source.key, source)


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
                     needed: set[str] | None = None, log: Log = print) -> Teachers:
    """Resolve every teacher a sweep can use (`needed` and what they depend on), once: name -> its record (folder
    absolute, config.json read, the source stamped into it)."""
    if needed is not None:
        needed = set(needed) | {d for n in needed if n in teachers for d in SOURCES[teachers[n].source].depends_on(teachers[n])}
    folders = {name: SOURCES[spec.source].resolve(spec, trial, runs_dir, log).resolve()
               for name, spec in teachers.items() if needed is None or name in needed}
    return {name: read_teacher(name, folder, teachers[name].source).stamped() for name, folder in folders.items()}


def read_teacher(name: str, folder: str | Path, key: str | None = None) -> ResolvedTeacher:
    """The record of a resolved folder (its config.json read here, once). Its source: `key` when the caller resolved
    it, else the one config.json names; a folder written before that stamp is matched by its keys (Source.owns)."""
    folder = Path(folder)
    saved = read_json(folder / "config.json", f"teacher {folder.name}")
    key = key or saved.get(SOURCE_KEY) or next((k for k, s in SOURCES.items() if s.owns(saved)), None)
    return ResolvedTeacher(name, folder, SOURCES[key] if key in SOURCES else Source(), saved)


def read_teachers(dirs: dict[str, str]) -> Teachers:
    """The records of a finished sweep's teachers (name -> folder, as its sweep.json keeps them)."""
    return {name: read_teacher(name, folder) for name, folder in dirs.items()}


def load_teacher(folder: str | Path, device: torch.device | str = "cpu") -> nn.Module | None:
    """The module of a resolved folder given by its path alone (None: a teacher without one)."""
    return read_teacher(Path(folder).name, folder).load(device)
