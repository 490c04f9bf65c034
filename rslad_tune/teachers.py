"""Teachers: resolve each YAML teacher once (a weights file, or train it and cache it), load it safely.

A resolved teacher is a folder holding `model.safetensors`, `config.json` (how to rebuild it)
and `card.json` (parameters, MACs, clean/PGD-20/AutoAttack accuracy on the test split, source);
a RobustBench teacher's folder holds no weights, its config names the file RobustBench loads. Trained
teachers live in `<runs_dir>/teachers/<key>/`, the key a digest of the whole recipe and the
data it trains on; the folder is built under a temporary name and renamed, so a concurrent
or interrupted build never leaves a half teacher behind.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from . import robustbench_zoo as rbz
from .evaluate import autoattack_accuracy
from .models import build_model, count_macs, count_params, robustbench_state_dict
from .progress import bar
from .spec import SpecError, TeacherSpec, TrialConfig
from .trainer import (
    load_data,
    resolve_device,
    save_weights,
    test_metrics,
    train_student,
    write_json,
)


def model_config(arch: str, width: int | None, in_channels: int, num_classes: int, image_size: int) -> dict:
    return {"arch": arch, "width": width, "in_channels": in_channels, "num_classes": num_classes,
            "image_size": image_size, "input_range": [0.0, 1.0]}


def build_from_config(cfg: dict) -> nn.Module:
    return build_model(cfg["arch"], cfg["in_channels"], cfg["num_classes"], cfg.get("width"))


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


def load_torch_weights(path: Path, key: str):
    """A PyTorch file loaded with weights_only=True: a file that would need arbitrary unpickling
    (Python objects, code) is refused and nothing in it runs."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).split("\n")[0][:120]
        raise SpecError(key, str(path), "holds more than plain weights and is refused: only tensors are loaded "
                        f"(weights_only=True); re-save its state_dict or convert it to safetensors ({why})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise SpecError(key, str(path), f"is not a readable PyTorch weights file ({type(e).__name__})") from None


def read_state_dict(path: Path, key: str) -> dict:
    """Weights from safetensors, or from a PyTorch file (load_torch_weights)."""
    path = Path(path)
    if path.suffix in TORCH_SUFFIXES:
        obj = load_torch_weights(path, key)
        try:
            return robustbench_state_dict(obj)
        except TypeError as e:
            raise SpecError(key, str(path), f"does not hold a state dict ({e})") from None
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecError(key, str(path), f"is not a readable safetensors file ({str(e)[:100]})") from None


def load_weights(model: nn.Module, path: Path, key: str) -> nn.Module:
    """Load weights (read_state_dict) into `model`; any mismatch or corruption is a one-line SpecError."""
    state = read_state_dict(path, key)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)[:150]
        raise SpecError(key, str(path), f"does not match the architecture ({first})") from None
    return model


def _load_robustbench(cfg: dict, key: str) -> nn.Module:
    path = rbz.checkpoint_path(cfg["model_dir"], cfg["dataset"], cfg["threat_model"], cfg["robustbench"])
    if path.is_file():  # RobustBench's loader unpickles it: make sure it holds plain weights first
        load_torch_weights(path, key)
    return rbz.load(cfg["robustbench"], cfg["model_dir"], cfg["dataset"], cfg["threat_model"], key)


def load_teacher(folder: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    if "robustbench" in cfg:
        model = _load_robustbench(cfg, f"teacher {folder.name}")
    else:
        model = load_weights(build_from_config(cfg), folder / "model.safetensors", f"teacher {folder.name}")
    return model.to(device).eval().requires_grad_(False)


def _card(model: nn.Module, cfg: TrialConfig, splits, source: str, spec: TeacherSpec, extra: dict,
          log: Callable[[str], None]) -> dict:
    """Size and robustness of a teacher: clean and PGD accuracy on the first `card_examples` test
    images, AutoAttack standard on the first `card_aa_examples`."""
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    m = test_metrics(model, cfg, splits, spec.card_examples)
    card = {"params": count_params(model), "macs": count_macs(model, shape), "clean_acc": m["test_clean_acc"],
            "pgd20_acc": m["test_pgd_acc"], "eval_n": m["test_n"], "eval_split": "test",
            "eval_epsilon": cfg.eval_epsilon, "eval_steps": cfg.eval_steps, "source": source, **extra}
    return _add_autoattack(card, model, cfg, splits, spec, log)


def _add_autoattack(card: dict, model: nn.Module, cfg: TrialConfig, splits, spec: TeacherSpec,
                    log: Callable[[str], None]) -> dict:
    n = min(spec.card_aa_examples, len(splits.test_x))
    if n == 0 or card.get("aa_n") == n:
        return card
    log(f"teacher {spec.name}: AutoAttack standard on {n} test images for its card")
    t0 = time.perf_counter()
    acc = autoattack_accuracy(model, splits.test_x[:n], splits.test_y[:n], cfg.eval_epsilon, seed=cfg.seed,
                              progress=lambda s: log(f"teacher {spec.name}: {s}"))
    return card | {"aa_acc": acc, "aa_n": n, "aa_time_s": time.perf_counter() - t0}


def _complete_card(folder: Path, spec: TeacherSpec, cfg: TrialConfig, log: Callable[[str], None]) -> None:
    """A cached teacher whose card lacks the AutoAttack number asked for now gets it (card rewritten atomically)."""
    card = read_card(folder)
    n = spec.card_aa_examples
    if n == 0 or card.get("aa_n") == n:
        return
    device = resolve_device(cfg.device)
    splits = load_data(cfg, device)
    if card.get("aa_n") == min(n, len(splits.test_x)):
        return
    new = _add_autoattack(card, load_teacher(folder, device), cfg, splits, spec, log)
    write_json(new, folder / "card.json")


def train_teacher(spec: TeacherSpec, runs_dir: Path, log: Callable[[str], None]) -> Path:
    key = spec.cache_key()
    final = runs_dir / "teachers" / key
    cfg = spec.train
    if (final / "card.json").is_file():
        log(f"teacher {spec.name}: cached at {final}")
        _complete_card(final, spec, cfg, log)
        return final
    tmp = runs_dir / "teachers" / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    device = resolve_device(cfg.device)
    splits = load_data(cfg, device)
    log(f"teacher {spec.name}: training {cfg.method} {cfg.arch} width={cfg.width} for {cfg.epochs} epochs -> {final}")
    t0 = time.perf_counter()
    with bar(cfg.epochs * max(len(splits.train_x) // cfg.batch_size, 1), f"teacher {spec.name}", "batch") as b:
        result = train_student(cfg, splits=splits, checkpoint_dir=tmp / "checkpoint",
                               log=lambda s: log(f"teacher {spec.name}: {s}"), on_batch=b.update)
    model = result["model"]
    model.load_state_dict(result["best_state"])  # best epoch by validation PGD accuracy
    train_s = time.perf_counter() - t0
    save_weights(model, tmp / "model.safetensors")
    write_json(model_config(cfg.arch, cfg.width, splits.in_channels, splits.num_classes, splits.image_size), tmp / "config.json")
    card = _card(model, cfg, splits, "train", spec, {"recipe": cfg.to_dict(), "train_time_s": train_s,
                                                     "best_epoch": result["best_epoch"], "key": key}, log)
    write_json(card, tmp / "card.json")
    shutil.rmtree(tmp / "checkpoint")
    _publish(tmp, final)
    log(f"teacher {spec.name}: clean {card['clean_acc']:.4f} PGD-{cfg.eval_steps} {card['pgd20_acc']:.4f} "
        f"on {card['eval_n']} test images ({train_s:.0f}s)")
    return final


def _checkpoint_teacher(spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Callable[[str], None]) -> Path:
    """A weights file given by the user (safetensors, or a PyTorch state dict loaded with weights_only=True):
    checked against its architecture, re-saved as safetensors and carded once."""
    src = Path(spec.checkpoint)
    stat = src.stat()

    def build(splits, device):
        cfg = model_config(spec.arch, spec.width, splits.in_channels, splits.num_classes, splits.image_size)
        model = load_weights(build_from_config(cfg), src, f"teachers.{spec.name}.checkpoint").to(device)
        return cfg, model, f"checkpoint:{src}", {}

    return _carded_teacher(spec, trial, runs_dir, f"file-{spec.name}-{int(stat.st_mtime)}-{stat.st_size}", build, log)


def _robustbench_teacher(spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Callable[[str], None]) -> Path:
    """A RobustBench model: RobustBench's loader reads (or, online, first downloads) its checkpoint;
    the teacher folder holds the config that names that file and the card, not a copy of the weights."""
    cfg = {"robustbench": spec.robustbench, "dataset": spec.rb_dataset, "threat_model": spec.threat_model,
           "model_dir": spec.model_dir, "input_range": [0.0, 1.0]}
    path = rbz.checkpoint_path(spec.model_dir, spec.rb_dataset, spec.threat_model, spec.robustbench)
    label = f"teachers.{spec.name}.robustbench"
    if not path.is_file():
        log(f"teacher {spec.name}: downloading RobustBench {spec.robustbench} to {path}")
        _load_robustbench(cfg, label)
    stat = path.stat()

    def build(splits, device):
        model = _load_robustbench(cfg, label).to(device)
        return cfg, model, f"robustbench:{spec.robustbench}", {"checkpoint": str(path)}

    key = f"rb-{spec.rb_dataset}-{spec.threat_model}-{spec.robustbench}-{int(stat.st_mtime)}-{stat.st_size}"
    return _carded_teacher(spec, trial, runs_dir, key, build, log)


def _carded_teacher(spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, key: str, build,
                    log: Callable[[str], None]) -> Path:
    """`<runs_dir>/teachers/<key>` for a teacher given as weights: config (+ a safetensors copy unless
    RobustBench's loader owns the file) and card, built once under a temporary name."""
    final = runs_dir / "teachers" / key
    if (final / "card.json").is_file():
        _complete_card(final, spec, trial, log)
        return final
    device = resolve_device(trial.device)
    splits = load_data(trial, device)
    cfg, model, source, extra = build(splits, device)
    tmp = runs_dir / "teachers" / f".{key}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    if "robustbench" not in cfg:
        save_weights(model, tmp / "model.safetensors")
    write_json(cfg, tmp / "config.json")
    write_json(_card(model.eval().requires_grad_(False), trial, splits, source, spec, extra, log), tmp / "card.json")
    _publish(tmp, final)
    return final


def _publish(tmp: Path, final: Path) -> None:
    """Rename a fully written folder into place; if another sweep got there first, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def check_teacher_files(teachers: dict[str, TeacherSpec], splits) -> None:
    """Before anything is written: every weights file a sweep names must load (checkpoint teachers into
    their architecture; RobustBench files as plain weights). A SpecError names the first that does not."""
    for spec in teachers.values():
        if spec.checkpoint:
            cfg = model_config(spec.arch, spec.width, splits.in_channels, splits.num_classes, splits.image_size)
            load_weights(build_from_config(cfg), Path(spec.checkpoint), f"teachers.{spec.name}.checkpoint")
        elif spec.robustbench:
            path = rbz.checkpoint_path(spec.model_dir, spec.rb_dataset, spec.threat_model, spec.robustbench)
            if path.is_file():
                load_torch_weights(path, f"teachers.{spec.name}.robustbench")


def prepare_teachers(teachers: dict[str, TeacherSpec], trial: TrialConfig, runs_dir: Path,
                     needed: set[str] | None = None, log: Callable[[str], None] = print) -> dict[str, str]:
    """Resolve every teacher a sweep can use; returns name -> folder (absolute)."""
    out = {}
    for name, spec in teachers.items():
        if needed is not None and name not in needed:
            continue
        if spec.train:
            folder = train_teacher(spec, runs_dir, log)
        elif spec.robustbench:
            folder = _robustbench_teacher(spec, trial, runs_dir, log)
        else:
            folder = _checkpoint_teacher(spec, trial, runs_dir, log)
        out[name] = str(folder.resolve())
    return out


def read_card(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "card.json").read_text())
