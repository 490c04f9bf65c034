"""The JSON files of a sweep folder (trial.json, result.json, config.json, metrics.json), validated through the
same field rules as the YAML before anything is built from them: a tampered or foreign file (an unknown arch, a
width that would allocate terabytes, strings for numbers, an object that is a list, an empty history) is one
SpecError line naming the file, the key, a short prefix of the value and what is allowed."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .config import TrialConfig, check_trial_value, make_trial_config
from .errors import SpecError
from .models import REGISTRY as MODELS

# a saved model's shape beyond the trial's own keys (arch and width are checked as trial keys)
MODEL_LIMITS = {"in_channels": (1, 64), "num_classes": (1, 100_000), "image_size": (1, 4096)}
INT_KEYS = ("epoch", "best_epoch", "epochs_run", "training_iteration", "test_n")  # whole numbers of epochs or images
MAX_COUNT = 10**9


def export_folder(path: str | Path) -> Path:
    """Where an exported student's files are: PATH, or PATH/best when PATH is the sweep folder above the export."""
    p = Path(path)
    return p / "best" if not (p / "config.json").is_file() and (p / "best" / "config.json").is_file() else p


def mapping(raw: Any, path: Path, what: str) -> dict:
    if not isinstance(raw, dict):
        raise SpecError(Path(path).name, raw, f"must be a JSON object ({what}); this file was not written by rslad-tune "
                        "or was changed since", str(path))
    return raw


def trial_config(raw: Any, path: Path) -> TrialConfig:
    """A saved trial's configuration: every key checked as the YAML's trial keys are (bounds before allocation)."""
    try:
        return make_trial_config(mapping(raw, path, "the trial's keys"), section="trial.")
    except SpecError as e:
        raise e.located(str(path)) from None


def model_config(raw: Any, path: Path) -> dict:
    """A saved model's config.json: a known arch, a width within the trial's bound (and only where the arch has
    one), channels, classes and image size within MODEL_LIMITS. Returned as it is."""
    raw, where = mapping(raw, path, "the model's arch, width, in_channels, num_classes and image_size"), str(path)
    try:
        arch = check_trial_value("arch", raw.get("arch"), label="arch")
        width = check_trial_value("width", raw.get("width"), label="width")
    except SpecError as e:
        raise e.located(where) from None
    if width is not None and "width" not in MODELS[arch][1]:
        raise SpecError("width", width, f"{arch} has no width", where)
    for key, (lo, hi) in MODEL_LIMITS.items():
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise SpecError(key, v, f"must be an integer in [{lo}, {hi}]", where)
    return raw


def numbers(raw: Any, path: Path, what: str) -> dict:
    """A JSON object whose values that name numbers (accuracies, epochs) are numbers: finite, epochs whole."""
    raw = mapping(raw, path, what)
    for key, v in raw.items():
        if not (key in INT_KEYS or key.endswith(("_acc", "_loss")) or key in ("lr", "epoch_time_s")):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SpecError(key, v, "must be a finite number", str(path))
        if key in INT_KEYS and (v != int(v) or not 0 <= v <= MAX_COUNT):
            raise SpecError(key, v, f"must be a whole number in [0, {MAX_COUNT}]", str(path))
    return raw


def history(raw: Any, path: Path) -> list[dict]:
    """A trial's per-epoch history: a list of objects of numbers, each with its epoch."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SpecError("history", raw, "must be a list of the epochs' metrics", str(path))
    out = [numbers(h, path, "one epoch's metrics") for h in raw]
    if any("epoch" not in h for h in out):
        raise SpecError("history", raw, "must give each epoch's number ('epoch')", str(path))
    return out


def history_epoch(hist: list[dict], epoch: Any, path: Path) -> dict:
    """The history's entry of `epoch` (the best one, for an export), or one line naming the file."""
    for h in hist:
        if h["epoch"] == epoch:
            return h
    raise SpecError("history", f"{len(hist)} epoch(s)", f"must hold epoch {epoch} (the trial's best); the file was "
                    "cut or changed", str(path))
