"""The sweep YAML -> validated dataclasses: search space, teachers, tune and report sections.

Every error is a `SpecError` (trial/errors.py) whose one-line message names the key, the value and what is
allowed. A trial's values are checked by trial/config.py; each teacher entry by its source's adapter, through
the registry (teachers/sources.py). Parsing reads the YAML file and nothing else: whether the files, zoo
names and RobustBench models it names exist is preflight.py's, before anything is written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..teachers.proxies import PROXIES, check_proxy
from ..teachers.source import TeacherSpec
from ..teachers.sources import check_entries, parse_teacher
from ..trial.config import (DATA_KEYS, SEARCHABLE_KEYS, TRIAL_KEYS, TrialConfig, as_mapping, check_keys, check_trial_config,
                            check_trial_value, choice, custom, did_you_mean, flag, make_trial_config, num,
                            parse_section)
from ..trial.errors import SpecError
from ..trial.methods import METHODS
from ..trial.yaml_loader import load_yaml, parse_set_overrides, read_space  # noqa: F401 (parse_set_overrides: callers import it from here)
from .stores import check_tracking_uri
from .two_axes import OBJECTIVES


# --------------------------------------------------------------------------- search space

DOMAIN_KINDS = ("uniform", "loguniform", "randint", "choice", "grid")


@dataclass
class Domain:
    """One searched key: uniform/loguniform [lo, hi], randint [lo, hi] inclusive, choice/grid [values]."""

    key: str
    kind: str
    args: list[Any]

    def center(self) -> Any:
        """The domain's middle (geometric for loguniform); the first value of a choice or grid."""
        if self.kind == "uniform":
            return (self.args[0] + self.args[1]) / 2
        if self.kind == "loguniform":
            return (self.args[0] * self.args[1]) ** 0.5
        if self.kind == "randint":
            return (self.args[0] + self.args[1]) // 2
        return self.args[0]


def _parse_domain(key: str, raw: Any, teachers: tuple[str, ...]) -> Domain:
    label = f"search.{key}"
    if key not in TRIAL_KEYS:
        raise SpecError(label, raw, did_you_mean(key, SEARCHABLE_KEYS))
    if key == "epochs":
        raise SpecError(label, raw, "epochs is ASHA's time budget (max_t); fix it in trial:")
    if key not in SEARCHABLE_KEYS:
        raise SpecError(label, raw, f"{key!r} is fixed per sweep and cannot be searched; searchable: {', '.join(SEARCHABLE_KEYS)}")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise SpecError(label, raw, f"must be a mapping with one of {', '.join(DOMAIN_KINDS)}, e.g. {{uniform: [0.5, 1.0]}}")
    (kind, args), = raw.items()
    if kind not in DOMAIN_KINDS:
        raise SpecError(f"{label}.{kind}", args, did_you_mean(kind, DOMAIN_KINDS))
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
    if lo > hi or (lo == hi and kind != "randint"):  # randint's bounds are inclusive: [3, 3] is the constant 3
        raise SpecError(f"{label}.{kind}", args, "needs low <= high" if kind == "randint" else "needs low < high")
    if kind == "loguniform" and lo <= 0:
        raise SpecError(f"{label}.{kind}", args, "loguniform needs low > 0")
    return Domain(key, kind, [lo, hi])


# --------------------------------------------------------------------------- tune and report sections

METRICS = ("pgd_acc",)


def _metric(name: str, v: Any, **ctx) -> str:
    """Only validation PGD accuracy: each trial keeps its best epoch by it, and the summary and export rank by it."""
    if v not in METRICS:
        raise SpecError(name, v, "must be pgd_acc: a trial keeps its best epoch by validation PGD accuracy, and ASHA, "
                        "the summary and the export rank trials by it")
    return v


@dataclass
class TuneSpec:
    """The `tune:` section. A field's `yaml` metadata says where the section holds it (default: its name)."""

    num_samples: int = field(default=8, metadata=num(integer=True, lo=1, hi=100_000))  # trials in the sweep
    max_concurrent: int = field(default=2, metadata=num(integer=True, lo=1, hi=100_000))  # trials running at a time
    metric: str = field(default="pgd_acc", metadata=custom(_metric, allowed="pgd_acc"))  # validation PGD accuracy ranks epochs and trials
    mode: str = field(default="max", metadata=choice(("max",)))
    scheduler: str = field(default="asha", metadata=choice(("asha", "fifo"), yaml=("scheduler.type",)))  # asha: early stopping; fifo: none
    grace_period: int = field(default=1, metadata=num(integer=True, lo=1, yaml=("scheduler.grace_period",)))  # ASHA's first rung, in epochs
    # ASHA keeps 1 / reduction_factor of the trials at each rung
    reduction_factor: float = field(default=2.0, metadata=num(lo=1, lo_open=True, yaml=("scheduler.reduction_factor",)))
    # a reference arm's results enter ASHA's rungs (count against the other trials); it is never stopped either way
    reference_in_rungs: bool = field(default=False, metadata=flag())
    searcher: str = field(default="optuna", metadata=choice(("optuna", "random"), yaml=("searcher.type",)))  # optuna (TPE)
    seed: int = field(default=0, metadata=num(integer=True, lo=0, hi=2**32 - 1, yaml=("seed", "searcher.seed")))  # searcher.seed wins
    cpus_per_trial: float = field(default=1.0, metadata=num(lo=0, lo_open=True, yaml=("resources.cpu",)))  # CPUs per trial
    gpus_per_trial: float = field(default=0.0, metadata=num(lo=0, yaml=("resources.gpu",)))  # GPUs per trial (fractions share a GPU)
    max_failures: int = field(default=0, metadata=num(integer=True, lo=0, hi=1000))  # retries of a trial whose process dies, from its last checkpoint
    # prescreen: {by: proxy, keep: K}: before any trial, only the K searched teachers best by a proxy (prescreen.py)
    prescreen_by: str | None = field(default=None, metadata=custom(lambda name, v, **ctx: check_proxy(v, name), optional=True,
                                                                   allowed=", ".join(PROXIES), yaml=("prescreen.by",)))
    prescreen_keep: int | None = field(default=None, metadata=num(integer=True, lo=1, optional=True, yaml=("prescreen.keep",),
                                                                  why="keep 0 would drop every teacher"))  # K


@dataclass
class ReportSpec:
    """The teacher selection report written at the end of a sweep that searches `teacher` (report.py)."""

    enabled: bool = field(default=True, metadata=flag())  # write the report (when teacher is searched)
    n_examples: int | None = field(default=None, metadata=num(integer=True, lo=1, optional=True))  # test images (None: all)
    n_aa: int = field(default=200, metadata=num(integer=True, lo=0))  # AutoAttack on the first n_aa of them (0: skip)
    # points of test PGD-20: one teacher's students' std over seeds, measured by a ground-truth sweep (None: from this sweep)
    noise_std: float | None = field(default=None, metadata=num(lo=0, lo_open=True, optional=True))
    # the degrees of freedom of noise_std (the ground truth's seeds minus its teachers): its t quantile
    noise_dof: int | None = field(default=None, metadata=num(integer=True, lo=1, hi=100_000, optional=True))
    # the same two for clean test accuracy (points): the clean axis of the verdict when this sweep has one seed per arm
    clean_noise_std: float | None = field(default=None, metadata=num(lo=0, lo_open=True, optional=True))
    clean_noise_dof: int | None = field(default=None, metadata=num(integer=True, lo=1, hi=100_000, optional=True))
    # what ranks the teachers and picks the exported trial: pgd (test/validation PGD-20), clean, or balanced
    # (clean_weight x clean + the rest x PGD-20); the helps/trade/hurts classes are on both axes whatever it is
    objective: str = field(default="pgd", metadata=choice(OBJECTIVES))
    clean_weight: float | None = field(default=None, metadata=num(lo=0, hi=1, optional=True))  # balanced only (None: 0.5)


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
    registered_model: str | None = None  # the MLflow registered model of the export (None: <experiment>-student)

    @property
    def references(self) -> set[str]:
        """The teachers whose students are reference arms: the scheduler never stops them early (scheduling.py)."""
        return {name for name, t in self.teachers.items() if t.reference}


TOP_KEYS = ("experiment", "data", "teachers", "trial", "search", "tune", "report", "runs_dir", "tracking_uri",
            "registered_model")


# entries of runs/ that are not sweeps: an experiment of that name would overwrite or be mistaken for them
RESERVED_NAMES = ("teachers", "mlartifacts", "mlruns", "mlflow.db", "optuna.db")
RESERVED_SUFFIXES = ("-train", ".db", ".lock", ".tmp")
_ARCHIVED = re.compile(r".*\.\d{8}-\d{6}(-\d+)?")


def check_experiment_name(name: str) -> str:
    """An experiment name that is a plain folder name and collides with nothing else this tool keeps in runs/."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise SpecError("experiment", name, "must be a name of letters, digits, '_', '-' or '.', starting with a letter "
                        "or digit (it becomes a folder name: runs/<experiment>)")
    low = name.lower()
    if low in RESERVED_NAMES or low.endswith(RESERVED_SUFFIXES) or _ARCHIVED.fullmatch(name):
        raise SpecError("experiment", name, f"is reserved: runs/ also holds {', '.join(RESERVED_NAMES)}, "
                        f"names ending in {', '.join(RESERVED_SUFFIXES)} and moved-aside sweeps "
                        "(<experiment>.YYYYMMDD-HHMMSS); choose another name")
    return name


def _experiment_name(v: Any) -> str:
    if not isinstance(v, str):  # YAML makes `2024-01-01` a date, `yes` a bool, `1e3` a float
        raise SpecError("experiment", v, f"must be a name (a string), not a YAML {type(v).__name__}; quote it, "
                        "e.g. experiment: \"2024-01-01\"")
    return check_experiment_name(v)


def _registered_model(v: Any) -> str | None:
    if v is not None and (not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v)):
        raise SpecError("registered_model", v, "must be an MLflow model name of letters, digits, '_', '-' or '.' "
                        "(default: <experiment>-student)")
    return v


SCALAR_KEYS = ("experiment", "runs_dir", "tracking_uri", "registered_model")  # the top-level keys that are no section


def set_path(key: str) -> list[str]:
    """Where `--set key=value` goes in the YAML: a dotted key is a path from the top (`tune.scheduler.grace_period`,
    `trial.alpha`, `data.train_subset`, `report.n_aa`); a plain key is a trial key (`alpha` is `trial.alpha`), or,
    when it is a data key or a top-level one, that key (`train_subset` is `data.train_subset`, `runs_dir` itself)."""
    if "." in key:
        return key.split(".")
    if key in SCALAR_KEYS:
        return [key]
    return ["data" if key in DATA_KEYS else "trial", key]


def apply_overrides(raw: Any, overrides: dict[str, Any] | None) -> Any:
    """The loaded YAML mapping with each `--set` value written at its path (set_path), so that it is validated like the
    file. Only the mappings on a path are copied (a YAML alias elsewhere keeps its value). A trial key that is searched
    is fixed: its search entry is dropped."""
    if not overrides or not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for key, value in overrides.items():
        path = set_path(key)
        if not all(isinstance(p, str) and p.strip() == p and p for p in path):
            raise SpecError(f"--set {key}", value, "a key is section.key, e.g. tune.num_samples=2 or trial.alpha=0.9 "
                            "(a plain key is a trial key: alpha=0.9)")
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is not None and not isinstance(child, dict):
                raise SpecError(f"--set {key}", value, f"{'.'.join(path[:i + 1])} is {child!r} in the YAML, not a "
                                "mapping, so it has no keys to set")
            node[part] = dict(child or {})
            node = node[part]
        node[path[-1]] = value
        if path[0] == "trial" and len(path) == 2 and isinstance(out.get("search"), dict) and path[1] in out["search"]:
            out["search"] = {k: v for k, v in out["search"].items() if k != path[1]}  # `--set alpha=0.9` fixes alpha
    return out


def _from_set(e: SpecError, overrides: dict[str, Any] | None) -> SpecError | None:
    """The error named after `--set` when the key it is about came from one (None: the YAML file's own)."""
    for key in overrides or {}:
        p = ".".join(set_path(key))
        if p.startswith(f"{e.key}."):  # a section on the way is the trouble: say which
            return SpecError(f"--set {p}", overrides[key], f"{e.key}: {e.allowed}")
        if e.key == p or e.key.startswith(f"{p}."):
            return SpecError(f"--set {e.key}", e.value, e.allowed)
    return None


def parse_sweep(raw: Any, *, path: str = "", source: str = "", overrides: dict[str, Any] | None = None,
                data_dir: str | None = None, sweep: bool = True) -> SweepSpec:
    """Validate a loaded YAML mapping. `overrides` are `--set key=value` pairs, written into the mapping first
    (apply_overrides: dotted keys for any section, a plain key for trial:) and then checked like the file;
    `sweep=False` (one trial, `rslad-tune train`) allows an empty search section."""
    where = path
    raw = apply_overrides(raw, overrides)
    try:
        if not isinstance(raw, dict):
            raise SpecError("(top level)", type(raw).__name__, "the file must hold a mapping with keys " + ", ".join(TOP_KEYS))
        check_keys("", raw, TOP_KEYS)
        if "experiment" not in raw:
            raise SpecError("experiment", None, "required: a name for the sweep (becomes runs/<experiment>)")
        experiment = _experiment_name(raw["experiment"])
        registered = _registered_model(raw.get("registered_model"))
        runs_dir = raw.get("runs_dir", "runs")
        if not isinstance(runs_dir, str) or not runs_dir:
            raise SpecError("runs_dir", runs_dir, "must be a directory path")
        tracking_uri = raw.get("tracking_uri")
        if tracking_uri is not None:
            tracking_uri = check_tracking_uri(tracking_uri, "tracking_uri")
        base_dir = Path(path).parent  # as given: sweep/places.py makes the paths absolute after parsing

        data = dict(as_mapping(raw.get("data"), "data"))
        check_keys("data.", data, DATA_KEYS)
        if data_dir is not None:
            data["data_dir"] = data_dir
        data_values = {k: check_trial_value(k, v, label=f"data.{k}") for k, v in data.items()}

        teachers_raw = as_mapping(raw.get("teachers"), "teachers")
        teachers = {}
        for name, t in teachers_raw.items():
            if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or not name.isascii():
                raise SpecError("teachers", name, "teacher names are ASCII letters, digits, '_' or '-'")
            teachers[name] = parse_teacher(name, t, data_values, base_dir)
        check_entries(teachers)
        names = tuple(teachers)

        trial_raw = dict(as_mapping(raw.get("trial"), "trial"))
        for k in trial_raw:
            if k in DATA_KEYS:
                raise SpecError(f"trial.{k}", trial_raw[k], "data keys belong in the data section")
        search_raw = as_mapping(raw.get("search"), "search")
        search = {k: _parse_domain(k, v, names) for k, v in search_raw.items()}
        for k in search:
            if k in (raw.get("trial") or {}):
                raise SpecError(f"search.{k}", search_raw[k], f"{k!r} is also fixed in trial:; a key is either fixed or searched")
        trial = make_trial_config({**data_values, **trial_raw}, names)
        tune = parse_section(TuneSpec, raw.get("tune"), "tune")
        report = parse_section(ReportSpec, raw.get("report"), "report")
        if report.clean_weight is not None and report.objective != "balanced":
            raise SpecError("report.clean_weight", report.clean_weight, f"only objective balanced weighs clean accuracy "
                            f"(report.objective is {report.objective}); remove it or set objective: balanced")
        if tune.searcher == "optuna" and any(d.kind == "grid" for d in search.values()):
            k = next(d.key for d in search.values() if d.kind == "grid")
            raise SpecError(f"search.{k}.grid", search[k].args, "grid needs tune.searcher.type: random (Optuna proposes points itself); use choice")
        _check_prescreen(raw.get("tune"), tune, search, overrides or {})
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
        _check_labelled(trial, methods, distillers)
        return SweepSpec(experiment, trial, search, teachers, tune, runs_dir, tracking_uri, source, path, report, registered)
    except SpecError as e:
        raise _from_set(e, overrides) or (e.located(where) if where and not e.where else e) from None


def _check_labelled(trial: TrialConfig, methods: list[str], distillers: list[str]) -> None:
    """Few labels: N fits the split, and some trial can use the unlabelled images (a teacher labels them)."""
    n = trial.labelled
    if n is None:
        return
    if trial.train_subset is not None and n > trial.train_subset - trial.val_size:
        raise SpecError("data.labelled", n, f"must be at most the {trial.train_subset - trial.val_size} training images "
                        f"left after val_size {trial.val_size} is held out of train_subset {trial.train_subset}")
    if not distillers:
        raise SpecError("data.labelled", n, f"method {methods[0]!r} needs a label on every image it trains on and no "
                        "teacher labels the others: distil (method rslad and a teacher), or drop labelled and give "
                        f"train_subset {n + trial.val_size} instead")


def _check_prescreen(raw_tune: Any, tune: TuneSpec, search: dict[str, Domain], overrides: dict[str, Any]) -> None:
    """A `prescreen:` section needs `keep` and a searched teacher (unless --set fixes it); `by` defaults to
    true_prob, the proxy predicted best (docs/teacher-proxies/predictions.md)."""
    if not isinstance(raw_tune, dict) or "prescreen" not in raw_tune:
        return
    if tune.prescreen_keep is None:
        raise SpecError("tune.prescreen.keep", None, "required: how many of the searched teachers to keep, an integer "
                        ">= 1, e.g. prescreen: {by: true_prob, keep: 3}")
    tune.prescreen_by = tune.prescreen_by or "true_prob"
    d = search.get("teacher")
    fixed = any(".".join(set_path(k)) == "trial.teacher" for k in overrides)  # `--set teacher=x`: nothing to screen
    if not fixed and (d is None or d.kind not in ("choice", "grid")):
        raise SpecError("tune.prescreen", raw_tune["prescreen"], "prescreens the searched teachers: it needs "
                        "search.teacher: {choice: [...]}")


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None, data_dir: str | None = None,
               sweep: bool = True) -> SweepSpec:
    raw, text = read_space(path)
    return parse_sweep(raw, path=str(Path(path)), source=text, overrides=overrides, data_dir=data_dir, sweep=sweep)
