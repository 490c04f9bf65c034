"""YAML search space -> validated dataclasses. The only place that parses or checks user input.

Every error is a `SpecError` whose one-line message names the key, the value and what
is allowed. Nothing here touches the disk except reading the YAML file itself.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .methods import METHODS
from .models import REGISTRY as MODELS

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "synthetic", "synthetic_cifar")
SCHEDULES = ("cosine", "onecycle", "piecewise", "constant")
ATTACK_STARTS = ("normal", "uniform", "none")
AUGMENTS = ("default", "none", "crop_flip", "crop")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


class SpecError(ValueError):
    """Bad user input. `str(err)` is one line: where, key, value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, where: str = ""):
        self.key, self.value, self.allowed, self.where = key, value, allowed, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{key}: {value!r} is not allowed; {allowed}")

    def located(self, where: str) -> "SpecError":
        return SpecError(self.key, self.value, self.allowed, where)


@dataclass
class TrialConfig:
    """Everything one trial needs, as plain values (nanoGPT style). Searched keys override these."""

    # data
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_subset: int | None = None  # first N training images (before the validation split)
    test_subset: int | None = None  # first N test images
    val_size: int = 1000  # held out from the training images with a fixed seed; used for selection
    augment: str = "default"  # default: crop+flip for CIFAR, none for Fashion-MNIST
    # method and models
    method: str = "rslad"
    arch: str = "small_cnn"
    width: int | None = None  # small_cnn width
    teacher: str | None = None  # a name from the `teachers:` section
    alpha: float = 5 / 6  # RSLAD: weight of the adversarial KL term; ARD: weight of the KL term
    temperature: float = 1.0
    lam: float = 6.0  # TRADES / MART: weight lambda of the KL term
    iad_beta: float = 0.1  # IAD: exponent beta of the teacher's trust T_y(x')^beta
    soft_label_cache: bool = True  # read the teacher's clean-view logits from a table built once (soft_labels.py)
    # training attack
    epsilon: float = 0.1
    step_size: float | None = None  # None: epsilon / 4 (2/255 at 8/255, the paper's ratio)
    attack_steps: int = 10
    attack_start: str = "normal"  # normal: x + 0.001 N(0,1) (paper); uniform: U(-eps, eps)
    # evaluation attack (validation each epoch, test at the end): PGD-20, CE, uniform start
    eval_epsilon: float = 0.1
    eval_steps: int = 20
    eval_step_size: float | None = None  # None: eval_epsilon / 4
    # optimisation
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    batch_size: int = 128
    epochs: int = 10
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=lambda: [215 / 300, 260 / 300, 285 / 300])  # piecewise, fraction of epochs
    # runtime
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None  # torch intra-op threads; None: leave torch's default
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; fp32; bf16 (perturbations stay fp32)
    compile: bool = False  # torch.compile the student's training forward (measured slower on this CPU: bench/RESULTS.md)

    @property
    def resolved_step_size(self) -> float:
        return self.step_size if self.step_size is not None else self.epsilon / 4

    @property
    def resolved_eval_step_size(self) -> float:
        return self.eval_step_size if self.eval_step_size is not None else self.eval_epsilon / 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TRIAL_KEYS = tuple(f.name for f in fields(TrialConfig))
DATA_KEYS = ("dataset", "data_dir", "train_subset", "test_subset", "val_size", "augment")
RUNTIME_KEYS = ("device", "num_threads", "precision", "compile")
SEARCHABLE_KEYS = tuple(k for k in TRIAL_KEYS if k not in DATA_KEYS + RUNTIME_KEYS + ("milestones",))


def _did_you_mean(key: str, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; allowed: {', '.join(sorted(allowed))}"


def _check_keys(section: str, data: dict, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise SpecError(f"{section}{key}", data[key], _did_you_mean(key, allowed))


def _number(key: str, v: Any, *, integer: bool = False, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False) -> float | int:
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or (not integer and not math.isfinite(v)):
        kind = "an integer" if integer else "a finite number"
        raise SpecError(key, v, f"must be {kind}{_range_text(lo, hi, lo_open, hi_open)}")
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and (v >= hi if hi_open else v > hi)):
        raise SpecError(key, v, f"must be{_range_text(lo, hi, lo_open, hi_open) or ' in range'}")
    return int(v) if integer else float(v)


def _range_text(lo, hi, lo_open, hi_open) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" {'<' if hi_open else '<='} {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _choice(key: str, v: Any, allowed: tuple[str, ...] | list[str]) -> str:
    if not isinstance(v, str) or v not in allowed:
        close = difflib.get_close_matches(str(v), list(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(key, v, f"must be one of {', '.join(allowed)}{hint}")
    return v


def check_trial_value(key: str, v: Any, teachers: tuple[str, ...] | None = None, label: str | None = None) -> Any:
    """Validate one TrialConfig value; `label` is how the key is named in errors."""
    name = label or key
    optional = {"data_dir", "train_subset", "test_subset", "width", "teacher", "step_size", "eval_step_size", "num_threads"}
    if v is None and key in optional:
        return None
    if key in ("alpha",):
        return _number(name, v, lo=0, hi=1)
    if key in ("epsilon", "eval_epsilon"):
        return _number(name, v, lo=0, hi=1, lo_open=True)
    if key in ("step_size", "eval_step_size", "lr", "temperature", "lam"):
        return _number(name, v, lo=0, lo_open=True)
    if key == "momentum":
        return _number(name, v, lo=0, hi=1, hi_open=True)
    if key in ("weight_decay", "iad_beta"):
        return _number(name, v, lo=0)
    if key in ("attack_steps", "eval_steps", "batch_size", "epochs", "width", "train_subset", "test_subset", "num_threads"):
        return _number(name, v, integer=True, lo=1)
    if key == "val_size":
        return _number(name, v, integer=True, lo=0)
    if key == "seed":
        return _number(name, v, integer=True, lo=0)
    if key == "precision":
        return _choice(name, v, PRECISIONS)
    if key in ("soft_label_cache", "compile"):
        if not isinstance(v, bool):
            raise SpecError(name, v, "must be true or false")
        return v
    if key == "dataset":
        return _choice(name, v, DATASETS)
    if key == "augment":
        return _choice(name, v, AUGMENTS)
    if key == "method":
        return _choice(name, v, tuple(METHODS))
    if key == "arch":
        return _choice(name, v, tuple(MODELS))
    if key == "schedule":
        return _choice(name, v, SCHEDULES)
    if key == "attack_start":
        return _choice(name, v, ATTACK_STARTS)
    if key == "device":
        return _choice(name, v, DEVICES)
    if key == "teacher":
        if teachers is not None:
            return _choice(name, v, teachers if teachers else ("<none: the teachers section is empty>",))
        if not isinstance(v, str):
            raise SpecError(name, v, "must be a teacher name (a string)")
        return v
    if key == "data_dir":
        if not isinstance(v, str) or not v:
            raise SpecError(name, v, "must be a directory path (a string)")
        return v
    if key == "milestones":
        if not isinstance(v, list) or not v or any(isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < 1 for m in v):
            raise SpecError(name, v, "must be a non-empty list of fractions of the epochs in (0, 1)")
        return sorted(float(m) for m in v)
    raise SpecError(name, v, _did_you_mean(key, TRIAL_KEYS))


def check_trial_config(cfg: TrialConfig, where: str = "", searched: tuple[str, ...] = ()) -> TrialConfig:
    """Cross-key rules a single key cannot see (keys that are searched are checked per domain)."""
    if cfg.step_size is not None and cfg.step_size > cfg.epsilon and not {"step_size", "epsilon"} & set(searched):
        raise SpecError("trial.step_size", cfg.step_size, f"must be <= epsilon ({cfg.epsilon})", where)
    if cfg.eval_step_size is not None and cfg.eval_step_size > cfg.eval_epsilon:
        raise SpecError("trial.eval_step_size", cfg.eval_step_size, f"must be <= eval_epsilon ({cfg.eval_epsilon})", where)
    return cfg


def make_trial_config(values: dict[str, Any], teachers: tuple[str, ...] | None = None, section: str = "trial.") -> TrialConfig:
    _check_keys(section, values, TRIAL_KEYS)
    checked = {k: check_trial_value(k, v, teachers, f"{section}{k}") for k, v in values.items()}
    return TrialConfig(**checked)


# --------------------------------------------------------------------------- search space

DOMAIN_KINDS = ("uniform", "loguniform", "randint", "choice", "grid")


@dataclass
class Domain:
    """One searched key: uniform/loguniform [lo, hi], randint [lo, hi] inclusive, choice/grid [values]."""

    key: str
    kind: str
    args: list[Any]


def _parse_domain(key: str, raw: Any, teachers: tuple[str, ...]) -> Domain:
    label = f"search.{key}"
    if key not in TRIAL_KEYS:
        raise SpecError(label, raw, _did_you_mean(key, SEARCHABLE_KEYS))
    if key == "epochs":
        raise SpecError(label, raw, "epochs is ASHA's time budget (max_t); fix it in trial:")
    if key not in SEARCHABLE_KEYS:
        raise SpecError(label, raw, f"{key!r} is fixed per sweep and cannot be searched; searchable: {', '.join(SEARCHABLE_KEYS)}")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise SpecError(label, raw, f"must be a mapping with one of {', '.join(DOMAIN_KINDS)}, e.g. {{uniform: [0.5, 1.0]}}")
    (kind, args), = raw.items()
    if kind not in DOMAIN_KINDS:
        raise SpecError(f"{label}.{kind}", args, _did_you_mean(kind, DOMAIN_KINDS))
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise SpecError(f"{label}.{kind}", args, "must be a non-empty list of values")
        return Domain(key, kind, [check_trial_value(key, v, teachers, f"{label}.{kind}") for v in args])
    if not isinstance(args, list) or len(args) != 2:
        raise SpecError(f"{label}.{kind}", args, "must be a list [low, high]")
    lo, hi = (check_trial_value(key, v, teachers, f"{label}.{kind}") for v in args)
    if not isinstance(lo, (int, float)) or isinstance(lo, bool):
        raise SpecError(f"{label}.{kind}", args, f"{kind} needs numbers; use choice for {key!r}")
    if kind == "randint" and not (isinstance(lo, int) and isinstance(hi, int)):
        raise SpecError(f"{label}.{kind}", args, "randint bounds must be integers")
    if kind != "randint" and isinstance(lo, int):  # float keys arrive as floats from check_trial_value
        raise SpecError(f"{label}.{kind}", args, f"{key!r} is an integer: use randint or choice")
    if lo >= hi:
        raise SpecError(f"{label}.{kind}", args, "needs low < high")
    if kind == "loguniform" and lo <= 0:
        raise SpecError(f"{label}.{kind}", args, "loguniform needs low > 0")
    return Domain(key, kind, [lo, hi])


# --------------------------------------------------------------------------- teachers


@dataclass
class TeacherSpec:
    """A teacher: a weights file with its architecture, a RobustBench model, or a recipe to train it once."""

    name: str
    checkpoint: str | None = None
    arch: str | None = None
    width: int | None = None
    train: TrialConfig | None = None
    robustbench: str | None = None     # a RobustBench model name, loaded by RobustBench's loader
    rb_dataset: str | None = None      # its RobustBench dataset key (cifar10, cifar100)
    threat_model: str = "Linf"
    model_dir: str | None = None       # RobustBench's model dir: {model_dir}/{dataset}/{threat_model}/{name}.pt
    card_examples: int | None = None   # test images for the card's clean/PGD numbers (None: the whole test split)
    card_aa_examples: int = 100        # test images for the card's AutoAttack number (0: skip AutoAttack)

    def cache_key(self) -> str:
        """Digest of everything that decides the trained weights (not device or thread count)."""
        assert self.train is not None
        d = {k: v for k, v in self.train.to_dict().items() if k not in RUNTIME_KEYS + ("data_dir",)}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


TEACHER_KEYS = ("checkpoint", "arch", "width", "train", "robustbench", "dataset", "threat_model", "model_dir",
                "card_examples", "card_aa_examples")
TEACHER_SOURCES = ("checkpoint", "train", "robustbench")
TEACHER_METHODS = tuple(m for m, cls in METHODS.items() if not cls.needs_teacher)


def parse_teacher(name: str, raw: Any, data_values: dict[str, Any], base_dir: Path) -> TeacherSpec:
    label = f"teachers.{name}"
    if not isinstance(raw, dict):
        raise SpecError(label, raw, "must be a mapping with one of `checkpoint:` (+ `arch:`), `robustbench:` or `train:`")
    _check_keys(f"{label}.", raw, TEACHER_KEYS)
    card = {"card_examples": _number(f"{label}.card_examples", raw["card_examples"], integer=True, lo=1)
            if "card_examples" in raw else None,
            "card_aa_examples": _number(f"{label}.card_aa_examples", raw["card_aa_examples"], integer=True, lo=0)
            if "card_aa_examples" in raw else TeacherSpec.card_aa_examples}
    sources = [k for k in TEACHER_SOURCES if k in raw]
    if len(sources) != 1:
        raise SpecError(label, sorted(raw), "give exactly one of `checkpoint:` (a weights file), `robustbench:` "
                        "(a RobustBench model name) or `train:` (a recipe)")
    for k in ("dataset", "threat_model", "model_dir"):
        if k in raw and sources[0] != "robustbench":
            raise SpecError(f"{label}.{k}", raw[k], "only a `robustbench:` teacher takes dataset/threat_model/model_dir")
    if sources[0] == "robustbench":
        return _parse_robustbench_teacher(name, raw, data_values, base_dir, card)
    if "checkpoint" in raw:
        path = raw["checkpoint"]
        if not isinstance(path, str) or not path:
            raise SpecError(f"{label}.checkpoint", path, "must be a file path")
        p = Path(path).expanduser()
        p = p if p.is_absolute() else (base_dir / p)
        if not p.is_file():
            raise SpecError(f"{label}.checkpoint", path, f"file not found (looked at {p})")
        if "arch" not in raw:
            raise SpecError(f"{label}.arch", None, f"a checkpoint teacher needs its architecture: one of {', '.join(MODELS)}")
        arch = check_trial_value("arch", raw["arch"], label=f"{label}.arch")
        width = check_trial_value("width", raw.get("width"), label=f"{label}.width")
        return TeacherSpec(name, checkpoint=str(p.resolve()), arch=arch, width=width, **card)
    train = raw["train"]
    if not isinstance(train, dict):
        raise SpecError(f"{label}.train", train, "must be a mapping of trial keys, e.g. {method: sat, arch: small_cnn, width: 32}")
    for bad in ("teacher",) + DATA_KEYS:
        if bad in train:
            raise SpecError(f"{label}.train.{bad}", train[bad], "teachers train on the sweep's data section and have no teacher")
    for k in ("arch", "width"):
        if k in raw:
            raise SpecError(f"{label}.{k}", raw[k], "for a trained teacher, put arch/width inside `train:`")
    cfg = make_trial_config({**data_values, "method": "sat", **train}, section=f"{label}.train.")
    if cfg.method not in TEACHER_METHODS:
        raise SpecError(f"{label}.train.method", cfg.method, f"a teacher is trained with one of {', '.join(TEACHER_METHODS)}")
    return TeacherSpec(name, arch=cfg.arch, width=cfg.width, train=cfg, **card)


def _parse_robustbench_teacher(name: str, raw: dict, data_values: dict[str, Any], base_dir: Path, card: dict) -> TeacherSpec:
    from . import robustbench_zoo as rbz

    label = f"teachers.{name}"
    model = raw["robustbench"]
    if not isinstance(model, str) or not model:
        raise SpecError(f"{label}.robustbench", model, "must be a RobustBench model name, e.g. Zhang2019Theoretically")
    for k in ("arch", "width"):
        if k in raw:
            raise SpecError(f"{label}.{k}", raw[k], "a RobustBench teacher's architecture comes from RobustBench's model zoo")
    ours = data_values.get("dataset", TrialConfig.dataset)
    dataset = raw.get("dataset", rbz.default_dataset(ours))
    if dataset not in rbz.DATASETS:
        raise SpecError(f"{label}.dataset", dataset if "dataset" in raw else ours,
                        f"RobustBench teachers here take CIFAR images: dataset is one of {', '.join(rbz.DATASETS)}")
    if ours not in rbz.DATASETS[dataset]:
        raise SpecError(f"{label}.dataset", dataset, f"does not match data.dataset {ours!r} (allowed: {', '.join(rbz.DATASETS[dataset])})")
    threat = raw.get("threat_model", "Linf")
    if threat not in rbz.THREAT_MODELS:
        raise SpecError(f"{label}.threat_model", threat, f"must be one of {', '.join(rbz.THREAT_MODELS)}")
    model_dir = raw.get("model_dir", os.environ.get("RSLAD_TUNE_MODEL_DIR", rbz.DEFAULT_MODEL_DIR))
    if not isinstance(model_dir, str) or not model_dir:
        raise SpecError(f"{label}.model_dir", model_dir, "must be a directory path")
    d = Path(model_dir).expanduser()
    d = d if d.is_absolute() else ((base_dir if "model_dir" in raw else Path.cwd()) / d)
    rbz.check_entry(f"{label}.robustbench", model, dataset, threat)
    path = rbz.checkpoint_path(d, dataset, threat, model)
    if not path.is_file() and not rbz.can_download():
        raise SpecError(f"{label}.robustbench", model, f"offline and {path} is missing: place RobustBench's checkpoint "
                        f"file there (RobustBench reads {{model_dir}}/{{dataset}}/{{threat_model}}/{{name}}.pt)")
    return TeacherSpec(name, robustbench=model, rb_dataset=dataset, threat_model=threat, model_dir=str(d.resolve()), **card)


# --------------------------------------------------------------------------- tune section


@dataclass
class TuneSpec:
    num_samples: int = 8
    max_concurrent: int = 2
    metric: str = "pgd_acc"
    mode: str = "max"
    scheduler: str = "asha"  # asha | fifo
    grace_period: int = 1
    reduction_factor: float = 2.0
    searcher: str = "optuna"  # optuna (TPE) | random
    seed: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 0


TUNE_KEYS = ("num_samples", "max_concurrent", "metric", "mode", "scheduler", "searcher", "seed", "resources", "max_failures")
SCHEDULER_KEYS = ("type", "grace_period", "reduction_factor")
SEARCHER_KEYS = ("type", "seed")
RESOURCE_KEYS = ("cpu", "gpu")
METRICS = ("pgd_acc", "clean_acc")


@dataclass
class ReportSpec:
    """The teacher selection report written at the end of a sweep that searches `teacher` (report.py)."""

    enabled: bool = True
    n_examples: int | None = None  # test images for the best students' clean / PGD-20 (None: all)
    n_aa: int = 200                # AutoAttack on the first n_aa of them (0: skip)


REPORT_KEYS = ("enabled", "n_examples", "n_aa")


def _parse_report(raw: Any) -> ReportSpec:
    r = _section(raw, "report")
    _check_keys("report.", r, REPORT_KEYS)
    out = ReportSpec()
    if "enabled" in r:
        if not isinstance(r["enabled"], bool):
            raise SpecError("report.enabled", r["enabled"], "must be true or false")
        out.enabled = r["enabled"]
    if r.get("n_examples") is not None:
        out.n_examples = _number("report.n_examples", r["n_examples"], integer=True, lo=1)
    if "n_aa" in r:
        out.n_aa = _number("report.n_aa", r["n_aa"], integer=True, lo=0)
    return out


def _section(raw: Any, key: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(key, raw, "must be a mapping")
    return raw


def _parse_tune(raw: Any) -> TuneSpec:
    raw = _section(raw, "tune")
    _check_keys("tune.", raw, TUNE_KEYS)
    t = TuneSpec()
    if "num_samples" in raw:
        t.num_samples = _number("tune.num_samples", raw["num_samples"], integer=True, lo=1)
    if "max_concurrent" in raw:
        t.max_concurrent = _number("tune.max_concurrent", raw["max_concurrent"], integer=True, lo=1)
    if "metric" in raw:
        t.metric = _choice("tune.metric", raw["metric"], METRICS)
    if "mode" in raw:
        t.mode = _choice("tune.mode", raw["mode"], ("max",))
    if "max_failures" in raw:
        t.max_failures = _number("tune.max_failures", raw["max_failures"], integer=True, lo=0)
    if "seed" in raw:
        t.seed = _number("tune.seed", raw["seed"], integer=True, lo=0)
    sched = _section(raw.get("scheduler"), "tune.scheduler")
    _check_keys("tune.scheduler.", sched, SCHEDULER_KEYS)
    if "type" in sched:
        t.scheduler = _choice("tune.scheduler.type", sched["type"], ("asha", "fifo"))
    if "grace_period" in sched:
        t.grace_period = _number("tune.scheduler.grace_period", sched["grace_period"], integer=True, lo=1)
    if "reduction_factor" in sched:
        t.reduction_factor = _number("tune.scheduler.reduction_factor", sched["reduction_factor"], lo=1, lo_open=True)
    search = _section(raw.get("searcher"), "tune.searcher")
    _check_keys("tune.searcher.", search, SEARCHER_KEYS)
    if "type" in search:
        t.searcher = _choice("tune.searcher.type", search["type"], ("optuna", "random"))
    if "seed" in search:
        t.seed = _number("tune.searcher.seed", search["seed"], integer=True, lo=0)
    res = _section(raw.get("resources"), "tune.resources")
    _check_keys("tune.resources.", res, RESOURCE_KEYS)
    if "cpu" in res:
        t.cpus_per_trial = _number("tune.resources.cpu", res["cpu"], lo=0, lo_open=True)
    if "gpu" in res:
        t.gpus_per_trial = _number("tune.resources.gpu", res["gpu"], lo=0)
    return t


# --------------------------------------------------------------------------- the sweep


@dataclass
class SweepSpec:
    experiment: str
    trial: TrialConfig  # fixed values (data section merged in)
    search: dict[str, Domain]
    teachers: dict[str, TeacherSpec]
    tune: TuneSpec
    runs_dir: str = "runs"
    tracking_uri: str | None = None
    source: str = ""  # the YAML text, logged as an artifact
    path: str = ""
    report: ReportSpec = field(default_factory=ReportSpec)


TOP_KEYS = ("experiment", "data", "teachers", "trial", "search", "tune", "report", "runs_dir", "tracking_uri")


def _experiment_name(v: Any) -> str:
    import re

    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v):
        raise SpecError("experiment", v, "must be a name of letters, digits, '_', '-' or '.' (it becomes a folder name)")
    return v


def parse_sweep(raw: Any, *, path: str = "", source: str = "", overrides: dict[str, Any] | None = None,
                data_dir: str | None = None, sweep: bool = True) -> SweepSpec:
    """Validate a loaded YAML mapping. `overrides` are `--set key=value` pairs applied to `trial:`;
    `sweep=False` (one trial, `rslad-tune train`) allows an empty search section."""
    where = path
    try:
        if not isinstance(raw, dict):
            raise SpecError("(top level)", type(raw).__name__, "the file must hold a mapping with keys " + ", ".join(TOP_KEYS))
        _check_keys("", raw, TOP_KEYS)
        if "experiment" not in raw:
            raise SpecError("experiment", None, "required: a name for the sweep (becomes runs/<experiment>)")
        experiment = _experiment_name(raw["experiment"])
        base_dir = Path(path).resolve().parent if path else Path.cwd()

        data = dict(_section(raw.get("data"), "data"))
        _check_keys("data.", data, DATA_KEYS)
        if data_dir is not None:
            data["data_dir"] = data_dir
        data_values = {k: check_trial_value(k, v, label=f"data.{k}") for k, v in data.items()}

        teachers_raw = _section(raw.get("teachers"), "teachers")
        teachers = {}
        for name, t in teachers_raw.items():
            if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
                raise SpecError("teachers", name, "teacher names are letters, digits, '_' or '-'")
            teachers[name] = parse_teacher(name, t, data_values, base_dir)
        names = tuple(teachers)

        trial_raw = dict(_section(raw.get("trial"), "trial"))
        for k in trial_raw:
            if k in DATA_KEYS:
                raise SpecError(f"trial.{k}", trial_raw[k], "data keys belong in the data section")
        trial_raw.update(overrides or {})
        search_raw = _section(raw.get("search"), "search")
        # `--set key=value` of a searched key fixes that dimension for this run
        search = {k: _parse_domain(k, v, names) for k, v in search_raw.items() if k not in (overrides or {})}
        for k in search:
            if k in (raw.get("trial") or {}):
                raise SpecError(f"search.{k}", search_raw[k], f"{k!r} is also fixed in trial:; a key is either fixed or searched")
        trial = make_trial_config({**data_values, **trial_raw}, names)
        tune = _parse_tune(raw.get("tune"))
        if tune.searcher == "optuna" and any(d.kind == "grid" for d in search.values()):
            k = next(d.key for d in search.values() if d.kind == "grid")
            raise SpecError(f"search.{k}.grid", search[k].args, "grid needs tune.searcher.type: random (Optuna proposes points itself); use choice")
        if tune.scheduler == "asha" and tune.grace_period > trial.epochs:
            raise SpecError("tune.scheduler.grace_period", tune.grace_period, f"must be <= trial.epochs ({trial.epochs})")
        if sweep and not search:
            raise SpecError("search", search_raw, "the sweep searches nothing: add a key such as alpha: {uniform: [0.5, 1.0]}, "
                            "or run one trial with `rslad-tune train`")
        # every combination a trial can get must be valid: check the fixed values and each choice
        check_trial_config(trial, searched=tuple(search))
        methods = search["method"].args if "method" in search else [trial.method]
        distillers = [m for m in methods if METHODS[m].needs_teacher]
        if distillers and not teachers:
            raise SpecError("teachers", {}, f"method {distillers[0]!r} distils from a teacher: define at least one")
        if distillers and trial.teacher is None and "teacher" not in search:
            raise SpecError("trial.teacher", None, f"method {distillers[0]!r} needs one of {', '.join(names)} (or search teacher)")
        runs_dir = raw.get("runs_dir", "runs")
        if not isinstance(runs_dir, str) or not runs_dir:
            raise SpecError("runs_dir", runs_dir, "must be a directory path")
        tracking_uri = raw.get("tracking_uri")
        if tracking_uri is not None:
            tracking_uri = check_tracking_uri(tracking_uri, "tracking_uri")
        return SweepSpec(experiment, trial, search, teachers, tune, runs_dir, tracking_uri, source, path,
                         _parse_report(raw.get("report")))
    except SpecError as e:
        raise e.located(where) if where and not e.where else e


def check_tracking_uri(uri: Any, key: str = "--tracking-uri") -> str:
    if not isinstance(uri, str) or not uri:
        raise SpecError(key, uri, "must be an MLflow tracking URI: sqlite:///path.db, http(s)://host:port, or file:///dir")
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme not in ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks"):
        raise SpecError(key, uri, "must be an MLflow tracking URI: sqlite:///path.db, http(s)://host:port, or file:///dir")
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise SpecError(key, uri, "a SQLite URI is sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if scheme in ("http", "https") and len(uri.split("://", 1)) != 2:
        raise SpecError(key, uri, "an HTTP tracking URI is http://host:port")
    return uri


def parse_set_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (0.1, 5, true, null, cosine)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SpecError("--set", pair, "must be key=value, e.g. --set epochs=3")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise SpecError(f"--set {k}", v, "the value must be a YAML scalar") from None
    return out


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None, data_dir: str | None = None,
               sweep: bool = True) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise SpecError("--space", str(path), "file not found; give a YAML search space such as search_spaces/quickstart.yaml")
    try:
        text = p.read_text()
        raw = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError("--space", str(path), f"cannot be read ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SpecError("--space", str(path), f"is not valid YAML{at}") from None
    return parse_sweep(raw, path=str(p), source=text, overrides=overrides, data_dir=data_dir, sweep=sweep)
