"""Resolved teacher folders, whatever their source: `config.json` (how to rebuild the module, or which loader
owns it), `card.json` (size and robustness on the test split), `model.safetensors` unless a loader owns the
weights, and the soft-label caches. Folders are built under a temporary name and renamed into place, so a
concurrent or interrupted build never leaves half a teacher behind; a damaged folder is refused in one line.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..trial.config import TrialConfig
from ..trial.data import load_data, resolve_device
from ..trial.errors import SpecError
from ..trial.files import read_json, save_weights, write_json
from ..trial.metrics import CARD, as_metrics
from ..trial.models import count_macs, count_params
from ..trial.scoring import pgd_column, score
from .source import Log, TeacherSpec, load_weights_folder

if TYPE_CHECKING:
    import torch
    from torch import nn


def read_card(folder: str | Path) -> dict:
    return read_json(Path(folder) / "card.json", f"teacher {Path(folder).name}")


def check_folder(folder: Path, weights: bool = True) -> None:
    """config.json and card.json readable and, where the folder holds weights, they load into the architecture,
    their digest matching and every value finite. SpecError if not."""
    read_card(folder)
    saved = read_json(folder / "config.json", f"teacher {folder.name}")
    if weights:
        load_weights_folder(folder, saved)


def why(e: SpecError) -> str:
    """`<file name> <what is wrong>` of a SpecError about one file of a teacher folder."""
    return f"{Path(str(e.value)).name} {e.allowed}"


def discard(folder: Path) -> None:
    """Remove a damaged folder: renamed away first, so no reader ever sees it half deleted."""
    gone = folder.with_name(f".{folder.name}.{os.getpid()}.bad")
    try:
        os.rename(folder, gone)
    except FileNotFoundError:  # another command discarded it first
        return
    shutil.rmtree(gone, ignore_errors=True)


def refuse_damaged(spec: TeacherSpec, folder: Path, source: str, weights: bool = True) -> None:
    """A given teacher's resolved folder must be sound: refused in one line otherwise (never rebuilt behind the
    user's back from a source that may have changed)."""
    try:
        check_folder(folder, weights)
    except SpecError as e:
        raise SpecError(spec.label, str(folder), f"this resolved teacher folder is damaged ({why(e)}); "
                        f"delete it and run again to rebuild it from {source}") from None


def publish(tmp: Path, final: Path) -> None:
    """Rename a fully written folder into place; if another sweep got there first, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def config_folder(final: Path, config: dict, card: dict) -> Path:
    """A resolved folder of a teacher without weights (a baseline, the label teacher): its config.json and
    card.json, written once under a temporary name and renamed into place."""
    if not final.is_dir():
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        write_json(config, tmp / "config.json")
        write_json(card, tmp / "card.json")
        publish(tmp, final)
    return final


# --------------------------------------------------------------------------- cards


def card(model: nn.Module, cfg: TrialConfig, splits, source: str, spec: TeacherSpec, extra: dict, log: Log) -> dict:
    """Size and robustness of a teacher: clean and PGD accuracy on the first `card_examples` test images
    (default: all), AutoAttack standard on the first `card_aa_examples`."""
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    return score_card({"params": count_params(model), "macs": count_macs(model, shape), "source": source, **extra},
                      model, cfg, splits, spec, log)


def _settings(cfg: TrialConfig, spec: TeacherSpec, n_test: int) -> tuple[dict, int]:
    """What a card's numbers must have been measured with: PGD settings and image count, AutoAttack count."""
    n = min(spec.card_examples or n_test, n_test)
    return {"eval_n": n, "eval_epsilon": cfg.eval_epsilon, "eval_steps": cfg.eval_steps}, min(spec.card_aa_examples, n_test)


def _request(cfg: TrialConfig, spec: TeacherSpec) -> dict:
    """The card settings as asked for (before the test split's size resolves them): equal -> nothing to redo."""
    return {"card_examples": spec.card_examples, "card_aa_examples": spec.card_aa_examples,
            "test_subset": cfg.test_subset, "eval_epsilon": cfg.eval_epsilon, "eval_steps": cfg.eval_steps}


def score_card(card: dict, model: nn.Module, cfg: TrialConfig, splits, spec: TeacherSpec, log: Log) -> dict:
    """(Re)compute the card's numbers whose settings differ from the ones asked for now (scoring.score)."""
    pgd, n_aa = _settings(cfg, spec, len(splits.test_x))
    card = card | {"requested": _request(cfg, spec)}
    stale = any(card.get(k) != v for k, v in pgd.items())
    if stale:
        col = pgd_column(cfg.eval_epsilon, cfg.eval_steps, cfg.resolved_eval_step_size)
        n = pgd["eval_n"]
        m = score(model, splits.test_x[:n], splits.test_y[:n], cfg.eval_epsilon, ["Clean", col], seed=cfg.seed)
        card = card | pgd | as_metrics(m, col, where=CARD) | {"eval_split": "test"}  # clean_acc, pgd20_acc
    if n_aa == 0 or (card.get("aa_n") == n_aa and not stale):
        return card
    log(f"teacher {spec.name}: AutoAttack standard on {n_aa} test images for its card")
    t0 = time.perf_counter()
    m = score(model, splits.test_x[:n_aa], splits.test_y[:n_aa], cfg.eval_epsilon, ["AA"], seed=cfg.seed, n_aa=n_aa,
              log=lambda s: log(f"teacher {spec.name}: {s}"))
    return card | as_metrics(m, where=CARD) | {"aa_n": n_aa, "aa_time_s": time.perf_counter() - t0}  # aa_acc


def complete_card(folder: Path, spec: TeacherSpec, cfg: TrialConfig, log: Log,
                  load: Callable[[Path, torch.device], nn.Module]) -> None:
    """A cached teacher whose card was measured with other settings than asked for now gets those numbers
    recomputed (card rewritten atomically). A card that records the same request is complete without the data."""
    c = read_card(folder)
    if c.get("requested") == _request(cfg, spec):
        return
    device = resolve_device(cfg.device)
    splits = load_data(cfg, device)
    pgd, n_aa = _settings(cfg, spec, len(splits.test_x))
    if all(c.get(k) == v for k, v in pgd.items()) and (n_aa == 0 or c.get("aa_n") == n_aa):
        write_json(c | {"requested": _request(cfg, spec)}, folder / "card.json")  # checked once
        return
    log(f"teacher {spec.name}: card settings changed, rescoring")
    write_json(score_card(c, load(folder, device), cfg, splits, spec, log), folder / "card.json")


def carded(spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, key: str, build, log: Log, source_file: str,
           load: Callable[[Path, torch.device], nn.Module], weights: bool = True) -> Path:
    """`<runs_dir>/teachers/<key>` for a teacher given as weights: config (+ a safetensors copy unless a loader
    owns the file) and card, built once under a temporary name. `build(splits, device)` -> (config, model,
    card source, card extras)."""
    final = runs_dir / "teachers" / key
    if final.exists():
        refuse_damaged(spec, final, source_file, weights)
        complete_card(final, spec, trial, log, load)
        return final
    device = resolve_device(trial.device)
    splits = load_data(trial, device)
    saved, model, source, extra = build(splits, device)
    tmp = runs_dir / "teachers" / f".{key}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if weights:
            save_weights(model, tmp / "model.safetensors")
        write_json(saved, tmp / "config.json")
        write_json(card(model.eval().requires_grad_(False), trial, splits, source, spec, extra, log), tmp / "card.json")
        publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
