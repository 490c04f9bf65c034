"""The `train:` teacher source: a recipe of trial keys, trained once before the trials and cached in
`<runs_dir>/teachers/<key>/` under a digest of the whole recipe and the data it trains on, reused by later
sweeps. A damaged cached folder is rebuilt (one log line)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..trial.config import DATA_KEYS, RUNTIME_KEYS, TrialConfig, digest_dict, make_trial_config
from ..trial.data import Splits, load_data, resolve_device
from ..trial.errors import SpecError
from ..trial.files import save_weights, write_json
from ..trial.methods import KNOBS, METHODS
from ..trial.progress import bar
from ..trial.trainer import student_config, train_model
from .folders import card, check_folder, complete_card, discard, publish, why
from .source import Log, Source, TeacherSpec, load_weights_folder

TEACHER_METHODS = tuple(m for m, cls in METHODS.items() if not cls.needs_teacher)
# Knobs that no teacher method reads cannot change a teacher's weights and could be left out of its digest; the
# ones that were in the digest before knobs were declared per method stay in it, so cached teachers keep their key.
_KEPT_IN_KEY = ("alpha", "temperature", "iad_beta")
NOT_IN_KEY = tuple(k for k in KNOBS if not any(k in METHODS[m].knobs for m in TEACHER_METHODS) and k not in _KEPT_IN_KEY)


def cache_key(cfg: TrialConfig) -> str:
    """Digest of everything that decides the trained weights (not device or thread count, nor knobs no teacher
    method reads)."""
    d = {k: v for k, v in digest_dict(cfg.to_dict()).items() if k not in RUNTIME_KEYS + ("data_dir",) + NOT_IN_KEY}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


class TrainSource(Source):
    key = "train"
    example = "`train:` (a recipe)"
    refusals = {"arch": "for a trained teacher, put arch/width inside `train:`",
                "width": "for a trained teacher, put arch/width inside `train:`"}

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        train = raw["train"]
        if not isinstance(train, dict):
            raise SpecError(f"{label}.train", train, "must be a mapping of trial keys, e.g. {method: sat, arch: small_cnn, width: 32}")
        for bad in ("teacher",) + DATA_KEYS:
            if bad in train:
                raise SpecError(f"{label}.train.{bad}", train[bad], "teachers train on the sweep's data section and have no teacher")
        cfg = make_trial_config({**data_values, "method": "sat", **train}, section=f"{label}.train.")
        if cfg.method not in TEACHER_METHODS:
            raise SpecError(f"{label}.train.method", cfg.method, f"a teacher is trained with one of {', '.join(TEACHER_METHODS)}")
        return {"train": cfg, "arch": cfg.arch, "width": cfg.width}

    def check_weights(self, spec: TeacherSpec, splits: Splits) -> None:
        b = spec.args["train"].batch_size
        if b > len(splits.train_x):
            raise SpecError(f"{spec.label}.train.batch_size", b, f"must be at most the {len(splits.train_x)} training images "
                            f"(after val_size {spec.args['train'].val_size} is held out): a larger batch trains on nothing")

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Log) -> Path:
        return train_teacher(spec, runs_dir, log)


def _load(folder: Path, device) -> Any:
    from ..trial.files import read_json

    return load_weights_folder(folder, read_json(folder / "config.json", f"teacher {folder.name}"), device).eval()


def train_teacher(spec: TeacherSpec, runs_dir: Path, log: Log) -> Path:
    cfg = spec.args["train"]
    key = cache_key(cfg)
    final = runs_dir / "teachers" / key
    if final.exists():
        try:
            check_folder(final)
        except SpecError as e:
            log(f"teacher {spec.name}: cached folder {final} is damaged ({why(e)}): rebuilding it")
            discard(final)
        else:
            log(f"teacher {spec.name}: cached at {final}")
            complete_card(final, spec, cfg, log, _load)
            return final
    tmp = runs_dir / "teachers" / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _train_into(tmp, final, spec, key, log)
    finally:  # published (renamed) or not, no half-built folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _train_into(tmp: Path, final: Path, spec: TeacherSpec, key: str, log: Log) -> None:
    cfg = spec.args["train"]
    device = resolve_device(cfg.device)
    splits = load_data(cfg, device)
    log(f"teacher {spec.name}: training {cfg.method} {cfg.arch} width={cfg.width} for {cfg.epochs} epochs -> {final}")
    t0 = time.perf_counter()
    with bar(cfg.epochs * max(splits.images_per_epoch // cfg.batch_size, 1), f"teacher {spec.name}", "batch") as b:
        result = train_model(cfg, splits=splits, checkpoint_dir=tmp / "checkpoint",
                             log=lambda s: log(f"teacher {spec.name}: {s}"), on_batch=b.update)
    model = result["model"]
    model.load_state_dict(result["best_state"])  # best epoch by validation PGD accuracy (without attacks: the last)
    train_s = time.perf_counter() - t0
    save_weights(model, tmp / "model.safetensors")
    write_json(student_config(cfg, splits), tmp / "config.json")
    c = card(model, cfg, splits, "train", spec, {"recipe": cfg.to_dict(), "train_time_s": train_s,
                                                  "best_epoch": result["best_epoch"], "key": key}, log)
    write_json(c, tmp / "card.json")
    shutil.rmtree(tmp / "checkpoint")
    publish(tmp, final)
    log(f"teacher {spec.name}: clean {c['clean_acc']:.4f} PGD-{cfg.eval_steps} {c['pgd20_acc']:.4f} "
        f"on {c['eval_n']} test images ({train_s:.0f}s)")


SOURCE = TrainSource()
