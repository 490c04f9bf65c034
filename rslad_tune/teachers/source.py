"""What a teacher source is: one kind of `teachers:` entry (a zoo teacher, a recipe to train, a weights file,
a RobustBench model, ...), parsed, checked, resolved to a teacher folder and loaded by one small adapter module.

Adding a source = one module with a `Source` subclass and one line in sources.py (the registry). Nothing
outside the registry and the adapters names a source; downstream code takes resolved.ResolvedTeacher records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from ..trial.config import TrialConfig, flag, num
from ..trial.data import Splits
from ..trial.files import load_weights
from ..trial.models import build_from_config

if TYPE_CHECKING:
    import torch
    from torch import nn


Log = Callable[[str], None]


def load_weights_folder(folder: Path, saved: dict, device: torch.device | str = "cpu") -> nn.Module:
    """The module of a folder that holds its weights: config.json's architecture + model.safetensors, checked."""
    return load_weights(build_from_config(saved), folder / "model.safetensors", f"teacher {folder.name}", finite=True).to(device)


def at(base_dir: Path, path: str) -> str:
    """A path as written in the YAML, joined to the YAML's folder when relative; `~...` stays (Source.place expands it)."""
    return path if path.startswith("~") or Path(path).is_absolute() else str(base_dir / path)


@dataclass
class TeacherSpec:
    """One parsed `teachers:` entry: its name, the source that parsed it and that source's own fields."""

    name: str
    source: str                        # the registry key of its adapter (sources.SOURCES)
    args: dict[str, Any]               # the adapter's parsed fields (a zoo folder, a recipe, a file path, ...)
    # test images for the card's clean/PGD numbers (None: the whole test split)
    card_examples: int | None = field(default=None, metadata=num(integer=True, lo=1, optional=True))
    # test images for the card's AutoAttack number (0: skip AutoAttack)
    card_aa_examples: int = field(default=100, metadata=num(integer=True, lo=0))
    # a reference arm: ASHA never stops its students early (default: its source's `reference`, true for a baseline)
    reference: bool = field(default=False, metadata=flag())

    @property
    def label(self) -> str:
        return f"teachers.{self.name}"


class Source:
    """The adapter interface. `key` is the YAML key that selects the source (`zoo: fashion_mnist/sat_w32`)."""

    key: ClassVar[str]
    example: ClassVar[str]                       # for "give exactly one of ...": `zoo:` (a shipped teacher, ...)
    entry_keys: ClassVar[tuple[str, ...]] = ()   # other keys its entry takes (e.g. arch, width)
    refusals: ClassVar[dict[str, str]] = {}      # why it refuses a key another source takes
    takes_card: ClassVar[bool] = True            # card_examples / card_aa_examples
    distils: ClassVar[bool] = True               # False: its "teacher" trains the student without distillation
    control: ClassVar[bool] = False              # True: a reference (no teacher, the labels), never prescreened out
    reference: ClassVar[bool] = False            # True: its entries are reference arms unless they say `reference: false`

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        """The entry's fields (TeacherSpec.args), checked for form only: no file, package, network, environment or
        home access (`base_dir`: the YAML's folder as given; relative paths are joined to it, resolved by `place`)."""
        raise NotImplementedError

    def place(self, spec: TeacherSpec, env: Mapping[str, str]) -> None:
        """After parsing, once (sweep/places.py): the entry's paths made absolute, `~` expanded, what the environment
        gives filled in. Parsing reads no environment, working directory or home."""

    def check_entry(self, spec: TeacherSpec, teachers: dict[str, TeacherSpec], labellers: tuple[str, ...]) -> None:
        """Parsing, across entries: the names this entry refers to exist (`labellers`: the entries with a module)."""

    def depends_on(self, spec: TeacherSpec) -> tuple[str, ...]:
        """The other entries a trial of this one reads (resolved with it)."""
        return ()

    def check(self, spec: TeacherSpec, data_values: dict[str, Any]) -> None:
        """Preflight, before the data is loaded and before anything is written: files exist, names exist."""

    def check_weights(self, spec: TeacherSpec, splits: Splits) -> None:
        """Preflight, with the data loaded: every weights file the entry names loads, finite."""

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Log) -> Path:
        """The teacher folder (config.json + card.json, weights unless a loader owns them), built once."""
        raise NotImplementedError

    def owns(self, saved: dict) -> bool:
        """Whether a config.json written before folders named their source (`teacher_source`) is this source's."""
        return False

    def load(self, folder: Path, saved: dict, device: torch.device | str) -> nn.Module | None:
        """The teacher module of a folder this source resolved (None: a teacher without a module); by default
        config.json's architecture + model.safetensors."""
        return load_weights_folder(folder, saved, device)

    def method(self, saved: dict, trial: TrialConfig) -> str:
        """The method a student of this teacher trains with (a baseline replaces the trial's)."""
        return trial.method

    def train_splits(self, folder: Path, saved: dict, splits: Splits, teacher: Callable[[str], nn.Module | None]) -> Splits:
        """The training images and labels its students see (with `data.labelled`: a label teacher keeps the labelled
        ones, a pseudo-label baseline labels the others); the trial's method may narrow them further. `teacher(name)`:
        another entry of the sweep's teachers, loaded on the trial's device."""
        return splits

    def soft_labels(self, folder: Path, saved: dict, trial: TrialConfig, splits: Splits):
        """The soft-label table of a teacher without a module (None: computed from the module)."""
        return None
