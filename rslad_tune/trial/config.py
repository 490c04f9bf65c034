"""One trial's configuration and the checks of every value a person writes.

`TrialConfig` declares each field's type and bounds once, in its dataclass field metadata
(`num`, `choice`, `flag`, ...); `check_trial_value` and `parse_section` read that metadata, so no
key is listed twice. Names come from the registries of the modules that run them: methods
(methods.METHODS), architectures (models.REGISTRY), datasets and augmentations (data.DATASETS,
data.AUGMENTS), PGD starts (attacks.STARTS) and LR schedules (schedules.SCHEDULES), read when a value is checked
(a name registered after this import counts). The method knobs' defaults are methods.KNOB_DEFAULTS.

Bottom level: imports only the stdlib, yaml and those registries, which import no torch (trial/lazy.py: a
registry names where its implementation lives, torch comes with the first tensor); touches no disk.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Collection


from .attacks import STARTS
from .data import AUGMENTS, DATASETS
from .errors import SpecError
from .methods import KL_REDUCTIONS, KNOB_DEFAULTS, METHODS
from .models import REGISTRY as MODELS
from .schedules import SCHEDULES

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")




def expand_user(key: str, path: str) -> Path:
    """Path(path).expanduser(), or one line when `~name` is no user here (pathlib raises RuntimeError)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise SpecError(key, path, "~name must be a user of this machine (and ~ needs a home directory); "
                        "give the path without ~ or with an existing user") from None


# --------------------------------------------------------------------------- checks


def did_you_mean(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; allowed: {', '.join(sorted(allowed))}"


def check_keys(section: str, data: dict, allowed: Collection[str]) -> None:
    for key in data:
        if key not in allowed:
            raise SpecError(f"{section}{key}", data[key], did_you_mean(key, allowed))


def as_mapping(raw: Any, key: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(key, raw, "must be a mapping")
    return raw


def _number(key: str, v: Any, *, integer: bool = False, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False, why: str = "") -> float | int:
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or (not integer and not math.isfinite(v)):
        kind = "an integer" if integer else "a finite number"
        hint = " (YAML reads yes/no/on/off/true/false as booleans)" if isinstance(v, bool) else ""
        raise SpecError(key, v, f"must be {kind}{_range_text(lo, hi, lo_open, hi_open)}{hint}")
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and (v >= hi if hi_open else v > hi)):
        raise SpecError(key, v, f"must be{_range_text(lo, hi, lo_open, hi_open) or ' in range'}{why and ': ' + why}")
    return int(v) if integer else float(v)


def _range_text(lo, hi, lo_open, hi_open) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" {'<' if hi_open else '<='} {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _choice(key: str, v: Any, allowed: Collection[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(v, str) or v not in allowed:
        close = difflib.get_close_matches(str(v), list(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(key, v, f"must be one of {', '.join(allowed)}{hint}")
    return v


def _flag(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise SpecError(key, v, "must be true or false")
    return v


# --------------------------------------------------------------------------- field metadata
# Each helper returns a field's metadata: "check" (name, value, **context) -> the checked value,
# "optional" (None is allowed), what it takes in words ("allowed", or "choices": the names), and any extra entries
# (`yaml`: where parse_section finds the field). The key reference (sweep/keyref.py) prints them.


def num(*, integer: bool = False, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
        hi_open: bool = False, optional: bool = False, why: str = "", **meta) -> dict:
    """A number field; `why` says, after the range, why values outside it are refused."""
    def check(name, v, **ctx):
        return _number(name, v, integer=integer, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, why=why)
    allowed = f"{'an integer' if integer else 'a number'}{_range_text(lo, hi, lo_open, hi_open)}"
    return {"check": check, "optional": optional, "allowed": allowed, **meta}


def choice(allowed: Collection[str], **meta) -> dict:
    """One of `allowed`'s names (a registry dict is read when checking, so later entries count)."""
    return {"check": lambda name, v, **ctx: _choice(name, v, allowed), "optional": False, "choices": allowed, **meta}


def flag(**meta) -> dict:
    return {"check": lambda name, v, **ctx: _flag(name, v), "optional": False, "allowed": "true or false", **meta}


def custom(check: Callable[..., Any], *, allowed: str, optional: bool = False, **meta) -> dict:
    """A field checked by `check`; `allowed` says in words what it takes (the key reference's column)."""
    return {"check": check, "optional": optional, "allowed": allowed, **meta}


def check_field(f: dataclasses.Field, name: str, v: Any, **ctx) -> Any:
    """Check value `v` of field `f` by its metadata; `name` is how the key is named in errors."""
    if v is None and f.metadata["optional"]:
        return None
    return f.metadata["check"](name, v, **ctx)


def _teacher_name(name: str, v: Any, teachers: tuple[str, ...] | None = None, **ctx) -> str:
    if teachers is not None:
        return _choice(name, v, teachers if teachers else ("<none: the teachers section is empty>",))
    if not isinstance(v, str):
        raise SpecError(name, v, "must be a teacher name (a string)")
    return v


def _directory(name: str, v: Any, **ctx) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(name, v, "must be a directory path (a string)")
    expand_user(name, v)  # `~nouser/data` is refused now, not when the data is loaded
    return v


def _milestones(name: str, v: Any, **ctx) -> list[float]:
    if not isinstance(v, list) or not v or any(isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < 1 for m in v):
        raise SpecError(name, v, "must be a non-empty list of fractions of the epochs in (0, 1)")
    return sorted(float(m) for m in v)


def _positive_int(optional: bool = False, hi: int | None = None) -> dict:
    return num(integer=True, lo=1, hi=hi, optional=optional)


SEED_MAX = 2**32 - 1  # NumPy's and Optuna's seeds are 32-bit


def _check_arch_settings(cfg: "TrialConfig", section: str, searched: tuple[str, ...] = ()) -> None:
    """An architecture's setting (`width`: models.Arch.settings) only for an architecture that takes it (the others
    would ignore it, silently)."""
    if "arch" in searched:
        return
    for key in (k for k in TRIAL_KEYS if any(k in a.settings for a in MODELS.values())):
        if (getattr(cfg, key) is not None or key in searched) and key not in MODELS[cfg.arch].settings:
            takes = ", ".join(a for a, entry in MODELS.items() if key in entry.settings)
            raise SpecError(f"search.{key}" if key in searched else f"{section}{key}", getattr(cfg, key),
                            f"{cfg.arch} has no {key} (only {takes} takes one); remove it")


# --------------------------------------------------------------------------- one trial


@dataclass
class TrialConfig:
    """Everything one trial needs, as plain values (nanoGPT style). Searched keys override these.

    Field order and defaults are part of the teacher cache key (TeacherSpec.cache_key hashes to_dict())."""

    # -- data
    dataset: str = field(default="fashion_mnist", metadata=choice(DATASETS))
    # dataset folder (None: the loader's default)
    data_dir: str | None = field(default=None, metadata=custom(_directory, optional=True, allowed="a directory path"))
    train_subset: int | None = field(default=None, metadata=_positive_int(optional=True))  # first N training images (before the validation split)
    test_subset: int | None = field(default=None, metadata=_positive_int(optional=True))  # first N test images
    # held out from the training images with a fixed seed; used for selection
    val_size: int = field(default=1000, metadata=num(integer=True, lo=1, why="with no validation images every validation "
                                                     "accuracy is 0 and no epoch or trial can be chosen"))
    augment: str = field(default="default", metadata=choice(AUGMENTS))  # default: crop+flip for CIFAR, none for Fashion-MNIST
    # few labels: only the first N training images (after the validation split) carry labels; a method that needs
    # labels trains on those N (as many steps per epoch as the whole split), a teacher-only method (RSLAD) on all
    labelled: int | None = field(default=None, metadata=num(integer=True, lo=10, optional=True, why="fewer than 10 "
                                                             "labels cannot cover the classes"))
    # -- method and models
    method: str = field(default="rslad", metadata=choice(METHODS))
    arch: str = field(default="small_cnn", metadata=choice(MODELS))  # the student's architecture
    width: int | None = field(default=None, metadata=_positive_int(optional=True, hi=4096))  # small_cnn width
    # a name from the `teachers:` section
    teacher: str | None = field(default=None, metadata=custom(_teacher_name, optional=True, allowed="a name from teachers:"))
    # RSLAD: weight of the adversarial KL term; ARD: weight of the KL term
    alpha: float = field(default=KNOB_DEFAULTS["alpha"], metadata=num(lo=0, hi=1))
    # softmax temperature (ARD, IAD, RSLAD's teacher)
    temperature: float = field(default=KNOB_DEFAULTS["temperature"], metadata=num(lo=0, lo_open=True))
    lam: float = field(default=KNOB_DEFAULTS["lam"], metadata=num(lo=0, lo_open=True))  # TRADES / MART: weight lambda of the KL term
    iad_beta: float = field(default=KNOB_DEFAULTS["iad_beta"], metadata=num(lo=0))  # IAD: exponent beta of the teacher's trust T_y(x')^beta
    # RSLAD/ARD KL: batchmean, or paper (mean over batch x classes)
    kl_reduction: str = field(default=KNOB_DEFAULTS["kl_reduction"], metadata=choice(KL_REDUCTIONS))
    soft_label_cache: bool = field(default=True, metadata=flag())  # read the teacher's clean-view logits from a table built once (soft_labels.py)
    # -- training attack
    epsilon: float = field(default=0.1, metadata=num(lo=0, hi=1, lo_open=True))  # L-inf radius of the training attack
    # None: epsilon / 4 (2/255 at 8/255, the paper's ratio)
    step_size: float | None = field(default=None, metadata=num(lo=0, lo_open=True, optional=True))
    attack_steps: int = field(default=10, metadata=_positive_int(hi=10_000))  # PGD steps of the training attack
    attack_start: str = field(default="normal", metadata=choice(STARTS))  # normal: x + 0.001 N(0,1) (paper); uniform: U(-eps, eps)
    # -- evaluation attack (validation each epoch, test at the end): PGD-20, CE, uniform start
    eval_epsilon: float = field(default=0.1, metadata=num(lo=0, hi=1, lo_open=True))  # L-inf radius of the evaluation attack
    eval_steps: int = field(default=20, metadata=_positive_int(hi=10_000))  # PGD steps of the evaluation attack
    eval_step_size: float | None = field(default=None, metadata=num(lo=0, lo_open=True, optional=True))  # None: eval_epsilon / 4
    # -- optimisation
    lr: float = field(default=0.1, metadata=num(lo=0, lo_open=True))  # SGD learning rate
    momentum: float = field(default=0.9, metadata=num(lo=0, hi=1, hi_open=True))  # SGD momentum
    weight_decay: float = field(default=2e-4, metadata=num(lo=0))  # SGD weight decay
    batch_size: int = field(default=128, metadata=_positive_int(hi=1_000_000))  # training images per step
    epochs: int = field(default=10, metadata=_positive_int(hi=10_000))  # training epochs (ASHA's max_t: fixed per sweep, not searchable)
    schedule: str = field(default="cosine", metadata=choice(SCHEDULES))  # learning-rate schedule
    milestones: list[float] = field(default_factory=lambda: [215 / 300, 260 / 300, 285 / 300],
                                    metadata=custom(_milestones, allowed="fractions of the epochs in (0, 1)"))  # piecewise, fraction of epochs
    # -- runtime
    seed: int = field(default=0, metadata=num(integer=True, lo=0, hi=SEED_MAX))  # the trial's random seed
    device: str = field(default="auto", metadata=choice(DEVICES))
    # torch intra-op threads; None: leave torch's default
    num_threads: int | None = field(default=None, metadata=_positive_int(optional=True, hi=4096))
    # auto: bf16 autocast on CUDA and on a CPU with native bf16 (AVX512-BF16, AMX), else fp32; fp32; bf16 (perturbations stay fp32)
    precision: str = field(default="auto", metadata=choice(PRECISIONS))
    # torch.compile the student's training forward (measured slower on this CPU: bench/RESULTS.md)
    compile: bool = field(default=False, metadata=flag())

    @property
    def resolved_step_size(self) -> float:
        return self.step_size if self.step_size is not None else self.epsilon / 4

    @property
    def resolved_eval_step_size(self) -> float:
        return self.eval_step_size if self.eval_step_size is not None else self.eval_epsilon / 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TRIAL_FIELDS = {f.name: f for f in fields(TrialConfig)}
TRIAL_KEYS = tuple(_TRIAL_FIELDS)
DATA_KEYS = ("dataset", "data_dir", "train_subset", "test_subset", "val_size", "augment", "labelled")
# keys added after digests of configs were stored (teacher caches, soft-label tables, zoo cards' proxies): left out
# of a digest while at their default, so that every digest made before them stays valid
LATER_KEYS = ("labelled",)


def digest_dict(d: dict[str, Any]) -> dict[str, Any]:
    """`d` (a TrialConfig's keys) without the LATER_KEYS that are at their default (None)."""
    return {k: v for k, v in d.items() if not (k in LATER_KEYS and v is None)}
RUNTIME_KEYS = ("device", "num_threads", "precision", "compile")
SEARCHABLE_KEYS = tuple(k for k in TRIAL_KEYS if k not in DATA_KEYS + RUNTIME_KEYS + ("milestones",))


def check_trial_value(key: str, v: Any, teachers: tuple[str, ...] | None = None, label: str | None = None) -> Any:
    """Validate one TrialConfig value by its field's metadata; `label` is how the key is named in errors.
    `teachers`: the names a `teacher` value must be one of (None: any string)."""
    name = label or key
    if key not in _TRIAL_FIELDS:
        raise SpecError(name, v, did_you_mean(key, TRIAL_KEYS))
    return check_field(_TRIAL_FIELDS[key], name, v, teachers=teachers)


def check_trial_config(cfg: TrialConfig, where: str = "", searched: tuple[str, ...] = ()) -> TrialConfig:
    """Cross-key rules a single key cannot see (keys that are searched are checked per domain)."""
    if cfg.step_size is not None and cfg.step_size > cfg.epsilon and not {"step_size", "epsilon"} & set(searched):
        raise SpecError("trial.step_size", cfg.step_size, f"must be <= epsilon ({cfg.epsilon})", where)
    if cfg.eval_step_size is not None and cfg.eval_step_size > cfg.eval_epsilon:
        raise SpecError("trial.eval_step_size", cfg.eval_step_size, f"must be <= eval_epsilon ({cfg.eval_epsilon})", where)
    _check_arch_settings(cfg, "trial.", searched)
    return cfg


def make_trial_config(values: dict[str, Any], teachers: tuple[str, ...] | None = None, section: str = "trial.") -> TrialConfig:
    check_keys(section, values, TRIAL_KEYS)
    checked = {k: check_trial_value(k, v, teachers, f"{section}{k}") for k, v in values.items()}
    cfg = TrialConfig(**checked)
    _check_arch_settings(cfg, section)
    return cfg


# --------------------------------------------------------------------------- other sections


def parse_section(cls: type, raw: Any, section: str) -> Any:
    """Build dataclass `cls` from the YAML mapping `raw` found at `section`, by its fields' metadata.

    A field is read from its metadata's `yaml` keys (dotted paths inside the section; default: the
    field's name); when several are given, a later one wins. Unknown keys get a did-you-mean."""
    tree: dict[str, Any] = {}
    for f in fields(cls):
        for rank, path in enumerate(f.metadata.get("yaml", (f.name,))):
            *parents, leaf = path.split(".")
            node = tree
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = (f, rank)
    found: dict[str, tuple[int, Any]] = {}

    def walk(node: dict, data: Any, where: str) -> None:
        data = as_mapping(data, where)
        check_keys(f"{where}.", data, tuple(node))
        for k, v in data.items():
            if isinstance(node[k], dict):
                walk(node[k], v, f"{where}.{k}")
                continue
            f, rank = node[k]
            checked = check_field(f, f"{where}.{k}", v)
            if rank >= found.get(f.name, (-1, None))[0]:
                found[f.name] = (rank, checked)

    walk(tree, raw, section)
    return cls(**{name: v for name, (_, v) in found.items()})
