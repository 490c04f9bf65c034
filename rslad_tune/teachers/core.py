"""Teachers: resolve each YAML teacher once (a weights file, a zoo teacher, or train it and cache it), load it safely.

A resolved teacher is a folder holding `model.safetensors`, `config.json` (how to rebuild it)
and `card.json` (parameters, MACs, clean/PGD-20/AutoAttack accuracy on the test split, source);
a RobustBench teacher's folder holds no weights, its config names the file RobustBench loads; a zoo
teacher's folder holds a copy of the shipped weights and its shipped card (zoo.py). Trained
teachers live in `<runs_dir>/teachers/<key>/`, the key a digest of the whole recipe and the
data it trains on; the folder is built under a temporary name and renamed, so a concurrent
or interrupted build never leaves a half teacher behind. Weights carry their sha256 digest in the
safetensors metadata (files.save_tensors) and are checked when read, finite included: a damaged trained
teacher is rebuilt (one log line), a damaged folder of a given teacher (checkpoint, zoo, RobustBench)
is refused in one line, and a teacher file with NaN/inf is refused before anything runs.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from . import robustbench_loader as rbz
from . import soft_labels
from . import zoo
from ..trial.data import load_data, resolve_device
from ..trial.files import check_finite, load_torch_weights, load_weights, read_json, save_weights, write_json
from ..trial.models import build_from_config, count_macs, count_params, model_config
from ..trial.progress import bar
from ..trial.robustness import autoattack_accuracy
from ..sweep.spec import SpecError, TeacherSpec, TrialConfig, check_trial_value, parse_teacher
from ..trial.trainer import score_test_split, student_config, train_model


def _load_robustbench(rb: dict, key: str) -> nn.Module:
    path = rbz.checkpoint_path(rb["model_dir"], rb["dataset"], rb["threat_model"], rb["robustbench"])
    if path.is_file():  # RobustBench's loader unpickles it: make sure it holds plain, finite weights first
        check_finite(rbz_state(path, key), key, path)
    return rbz.load(rb["robustbench"], rb["model_dir"], rb["dataset"], rb["threat_model"], key)


def load_teacher(folder: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    folder = Path(folder)
    saved = read_json(folder / "config.json", f"teacher {folder.name}")
    if "robustbench" in saved:
        model = _load_robustbench(saved, f"teacher {folder.name}")
    else:
        model = load_weights(build_from_config(saved), folder / "model.safetensors", f"teacher {folder.name}", finite=True)
    return model.to(device).eval().requires_grad_(False)


def rbz_state(path: Path, key: str) -> dict:
    """A RobustBench file's tensors, loaded as plain weights (weights_only)."""
    from ..trial.models import robustbench_state_dict

    try:
        return robustbench_state_dict(load_torch_weights(path, key))
    except TypeError as e:
        raise SpecError(key, str(path), f"does not hold a state dict ({e})") from None


def check_folder(folder: Path) -> None:
    """A resolved teacher folder is usable: config.json and card.json readable, its weights (unless RobustBench's
    loader owns them) load into the architecture, their digest matching and every value finite. SpecError if not."""
    read_card(folder)
    if "robustbench" not in read_json(folder / "config.json", f"teacher {folder.name}"):
        load_teacher(folder)


def _why(e: SpecError) -> str:
    """`<file name> <what is wrong>` of a SpecError about one file of a teacher folder."""
    return f"{Path(str(e.value)).name} {e.allowed}"


def _discard(folder: Path) -> None:
    """Remove a damaged folder: renamed away first, so no reader ever sees it half deleted."""
    gone = folder.with_name(f".{folder.name}.{os.getpid()}.bad")
    try:
        os.rename(folder, gone)
    except FileNotFoundError:  # another command discarded it first
        return
    shutil.rmtree(gone, ignore_errors=True)


def _refuse_damaged(spec: TeacherSpec, folder: Path, source: str) -> None:
    """A given teacher's resolved folder must be sound: it is refused in one line otherwise (never rebuilt behind
    the user's back from a source that may have changed)."""
    try:
        check_folder(folder)
    except SpecError as e:
        raise SpecError(f"teachers.{spec.name}", str(folder), f"this resolved teacher folder is damaged ({_why(e)}); "
                        f"delete it and run again to rebuild it from {source}") from None


def _card(model: nn.Module, cfg: TrialConfig, splits, source: str, spec: TeacherSpec, extra: dict,
          log: Callable[[str], None]) -> dict:
    """Size and robustness of a teacher: clean and PGD accuracy on the first `card_examples` test
    images (default: all), AutoAttack standard on the first `card_aa_examples`."""
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    card = {"params": count_params(model), "macs": count_macs(model, shape), "source": source, **extra}
    return _score_card(card, model, cfg, splits, spec, log)


def _card_settings(cfg: TrialConfig, spec: TeacherSpec, n_test: int) -> tuple[dict, int]:
    """What a card's numbers must have been measured with: PGD settings and image count, AutoAttack count."""
    n = min(spec.card_examples or n_test, n_test)
    return {"eval_n": n, "eval_epsilon": cfg.eval_epsilon, "eval_steps": cfg.eval_steps}, min(spec.card_aa_examples, n_test)


def _score_card(card: dict, model: nn.Module, cfg: TrialConfig, splits, spec: TeacherSpec,
                log: Callable[[str], None]) -> dict:
    """(Re)compute the card's numbers whose settings differ from the ones asked for now."""
    pgd, n_aa = _card_settings(cfg, spec, len(splits.test_x))
    card = card | {"requested": _card_request(cfg, spec)}
    stale = any(card.get(k) != v for k, v in pgd.items())
    if stale:
        m = score_test_split(model, cfg, splits, pgd["eval_n"])
        card = card | pgd | {"clean_acc": m["test_clean_acc"], "pgd20_acc": m["test_pgd_acc"], "eval_split": "test"}
    if n_aa == 0 or (card.get("aa_n") == n_aa and not stale):
        return card
    log(f"teacher {spec.name}: AutoAttack standard on {n_aa} test images for its card")
    t0 = time.perf_counter()
    acc = autoattack_accuracy(model, splits.test_x[:n_aa], splits.test_y[:n_aa], cfg.eval_epsilon, seed=cfg.seed,
                              progress=lambda s: log(f"teacher {spec.name}: {s}"))
    return card | {"aa_acc": acc, "aa_n": n_aa, "aa_time_s": time.perf_counter() - t0}


def _card_request(cfg: TrialConfig, spec: TeacherSpec) -> dict:
    """The card settings as asked for (before the test split's size resolves them): equal -> nothing to redo."""
    return {"card_examples": spec.card_examples, "card_aa_examples": spec.card_aa_examples,
            "test_subset": cfg.test_subset, "eval_epsilon": cfg.eval_epsilon, "eval_steps": cfg.eval_steps}


def _complete_card(folder: Path, spec: TeacherSpec, cfg: TrialConfig, log: Callable[[str], None]) -> None:
    """A cached teacher whose card was measured with other settings than asked for now (test images, PGD,
    AutoAttack count) gets those numbers recomputed (card rewritten atomically). A card that records the
    same request is complete without loading the data."""
    card = read_card(folder)
    if card.get("requested") == _card_request(cfg, spec):
        return
    device = resolve_device(cfg.device)
    splits = load_data(cfg, device)
    pgd, n_aa = _card_settings(cfg, spec, len(splits.test_x))
    if all(card.get(k) == v for k, v in pgd.items()) and (n_aa == 0 or card.get("aa_n") == n_aa):
        write_json(card | {"requested": _card_request(cfg, spec)}, folder / "card.json")  # checked once
        return
    log(f"teacher {spec.name}: card settings changed, rescoring")
    write_json(_score_card(card, load_teacher(folder, device), cfg, splits, spec, log), folder / "card.json")


def train_teacher(spec: TeacherSpec, runs_dir: Path, log: Callable[[str], None]) -> Path:
    key = spec.cache_key()
    final = runs_dir / "teachers" / key
    cfg = spec.train
    if final.exists():
        try:
            check_folder(final)
        except SpecError as e:
            log(f"teacher {spec.name}: cached folder {final} is damaged ({_why(e)}): rebuilding it")
            _discard(final)
        else:
            log(f"teacher {spec.name}: cached at {final}")
            _complete_card(final, spec, cfg, log)
            return final
    tmp = runs_dir / "teachers" / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _train_into(tmp, final, spec, key, log)
    finally:  # published (renamed) or not, no half-built folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _train_into(tmp: Path, final: Path, spec: TeacherSpec, key: str, log: Callable[[str], None]) -> None:
    cfg = spec.train
    device = resolve_device(cfg.device)
    splits = load_data(cfg, device)
    log(f"teacher {spec.name}: training {cfg.method} {cfg.arch} width={cfg.width} for {cfg.epochs} epochs -> {final}")
    t0 = time.perf_counter()
    with bar(cfg.epochs * max(len(splits.train_x) // cfg.batch_size, 1), f"teacher {spec.name}", "batch") as b:
        result = train_model(cfg, splits=splits, checkpoint_dir=tmp / "checkpoint",
                               log=lambda s: log(f"teacher {spec.name}: {s}"), on_batch=b.update)
    model = result["model"]
    model.load_state_dict(result["best_state"])  # best epoch by validation PGD accuracy (without attacks: the last)
    train_s = time.perf_counter() - t0
    save_weights(model, tmp / "model.safetensors")
    write_json(student_config(cfg, splits), tmp / "config.json")
    card = _card(model, cfg, splits, "train", spec, {"recipe": cfg.to_dict(), "train_time_s": train_s,
                                                     "best_epoch": result["best_epoch"], "key": key}, log)
    write_json(card, tmp / "card.json")
    shutil.rmtree(tmp / "checkpoint")
    _publish(tmp, final)
    log(f"teacher {spec.name}: clean {card['clean_acc']:.4f} PGD-{cfg.eval_steps} {card['pgd20_acc']:.4f} "
        f"on {card['eval_n']} test images ({train_s:.0f}s)")


def _checkpoint_teacher(spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Callable[[str], None]) -> Path:
    """A weights file given by the user (safetensors, or a PyTorch state dict loaded with weights_only=True):
    checked against its architecture, re-saved as safetensors and carded once."""
    src = Path(spec.checkpoint)
    digest = _file_digest(src)

    def build(splits, device):
        saved = model_config(spec.arch, spec.width, splits.in_channels, splits.num_classes, splits.image_size)
        model = load_weights(build_from_config(saved), src, f"teachers.{spec.name}.checkpoint", finite=True).to(device)
        return saved, model, f"checkpoint:{src}", {"checkpoint_sha256": digest}

    # keyed by the file's content: the same weights under another name or mtime are the same teacher
    key = f"file-{spec.arch}-w{spec.width}-{digest[:16]}"
    return _carded_teacher(spec, trial, runs_dir, key, build, log, f"teachers.{spec.name}.checkpoint ({src})")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _zoo_teacher(spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Callable[[str], None]) -> Path:
    """A teacher shipped in the zoo: its weights (safetensors) and measured card are copied into
    `<runs_dir>/teachers/zoo-...-<digest of the weights>/`, where its soft-label caches go; nothing is
    trained or recomputed."""
    src = Path(spec.zoo)
    digest = _file_digest(src / "model.safetensors")[:12]
    final = runs_dir / "teachers" / f"zoo-{src.parent.name}-{src.name}-{digest}"
    if final.exists():
        copy = final / "model.safetensors"
        if not copy.is_file() or _file_digest(copy)[:12] != digest:
            raise SpecError(f"teachers.{spec.name}", str(final), f"this resolved teacher folder is damaged (its "
                            f"model.safetensors is not the zoo's, sha256 {digest}...); delete it and run again")
        _refuse_damaged(spec, final, f"the zoo's {src}")
        return final
    saved = read_json(src / "config.json", f"teachers.{spec.name}.zoo")
    load_weights(build_from_config(saved), src / "model.safetensors", f"teachers.{spec.name}.zoo", finite=True)
    tmp = runs_dir / "teachers" / f".{final.name}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for f in ("model.safetensors", "config.json", "card.json"):
            shutil.copyfile(src / f, tmp / f)
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"teacher {spec.name}: zoo teacher {src.parent.name}/{src.name} ({digest})")
    return final


def _robustbench_teacher(spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Callable[[str], None]) -> Path:
    """A RobustBench model: RobustBench's loader reads (or, online, first downloads) its checkpoint;
    the teacher folder holds the config that names that file and the card, not a copy of the weights."""
    rb = {"robustbench": spec.robustbench, "dataset": spec.rb_dataset, "threat_model": spec.threat_model,
           "model_dir": spec.model_dir, "input_range": [0.0, 1.0]}
    path = rbz.checkpoint_path(spec.model_dir, spec.rb_dataset, spec.threat_model, spec.robustbench)
    label = f"teachers.{spec.name}.robustbench"
    if not path.is_file():
        log(f"teacher {spec.name}: downloading RobustBench {spec.robustbench} to {path}")
        _load_robustbench(rb, label)
    stat = path.stat()

    def build(splits, device):
        model = _load_robustbench(rb, label).to(device)
        return rb, model, f"robustbench:{spec.robustbench}", {"checkpoint": str(path)}

    key = f"rb-{spec.rb_dataset}-{spec.threat_model}-{spec.robustbench}-{int(stat.st_mtime)}-{stat.st_size}"
    return _carded_teacher(spec, trial, runs_dir, key, build, log, f"RobustBench's {path}")


def _carded_teacher(spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, key: str, build,
                    log: Callable[[str], None], source_file: str) -> Path:
    """`<runs_dir>/teachers/<key>` for a teacher given as weights: config (+ a safetensors copy unless
    RobustBench's loader owns the file) and card, built once under a temporary name."""
    final = runs_dir / "teachers" / key
    if final.exists():
        _refuse_damaged(spec, final, source_file)
        _complete_card(final, spec, trial, log)
        return final
    device = resolve_device(trial.device)
    splits = load_data(trial, device)
    saved, model, source, extra = build(splits, device)
    tmp = runs_dir / "teachers" / f".{key}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if "robustbench" not in saved:
            save_weights(model, tmp / "model.safetensors")
        write_json(saved, tmp / "config.json")
        write_json(_card(model.eval().requires_grad_(False), trial, splits, source, spec, extra, log), tmp / "card.json")
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
        if spec.zoo:
            src = Path(spec.zoo)
            load_weights(build_from_config(read_json(src / "config.json", f"teachers.{spec.name}.zoo")),
                         src / "model.safetensors", f"teachers.{spec.name}.zoo", finite=True)
        elif spec.checkpoint:
            saved = model_config(spec.arch, spec.width, splits.in_channels, splits.num_classes, splits.image_size)
            load_weights(build_from_config(saved), Path(spec.checkpoint), f"teachers.{spec.name}.checkpoint", finite=True)
        elif spec.robustbench:
            path = rbz.checkpoint_path(spec.model_dir, spec.rb_dataset, spec.threat_model, spec.robustbench)
            if path.is_file():
                key = f"teachers.{spec.name}.robustbench"
                check_finite(rbz_state(path, key), key, path)


def prepare_teachers(teachers: dict[str, TeacherSpec], trial: TrialConfig, runs_dir: Path,
                     needed: set[str] | None = None, log: Callable[[str], None] = print) -> dict[str, str]:
    """Resolve every teacher a sweep can use; returns name -> folder (absolute)."""
    out = {}
    for name, spec in teachers.items():
        if needed is not None and name not in needed:
            continue
        if spec.train:
            folder = train_teacher(spec, runs_dir, log)
        elif spec.zoo:
            folder = _zoo_teacher(spec, trial, runs_dir, log)
        elif spec.robustbench:
            folder = _robustbench_teacher(spec, trial, runs_dir, log)
        else:
            folder = _checkpoint_teacher(spec, trial, runs_dir, log)
        out[name] = str(folder.resolve())
    return out


def read_card(folder: str | Path) -> dict:
    return read_json(Path(folder) / "card.json", f"teacher {Path(folder).name}")


def teacher_for_trial(cfg: TrialConfig, folder: str | Path, splits, device: torch.device,
                      log: Callable[[str], None] | None = None) -> tuple[nn.Module, Tensor | None]:
    """What a distilling trial reads: the teacher in eval mode and, when the trial uses it, its soft-label
    cache for these training images (built and written here if missing)."""
    teacher = load_teacher(folder, device)
    soft = soft_labels.load_or_build(folder, teacher, cfg, splits, log) if cfg.soft_label_cache else None
    return teacher, soft


# --------------------------------------------------------------------------- the zoo's build (`rslad-tune zoo build`)

def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=zoo.ZOO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_zoo_teacher(name: str, *, threads: int | None = None, work_dir: str | Path = "runs",
                      log: Callable[[str], None] = print) -> Path:
    """Train zoo teacher `name` from its recipe.yaml (in a scratch folder under `work_dir`), card it, and
    replace its files in the zoo (each written under a temporary name and renamed)."""
    folder = zoo.zoo_folder(name, built=False)
    recipe = zoo.read_recipe(name)
    data = {k: check_trial_value(k, v, label=f"data.{k}") for k, v in (recipe.get("data") or {}).items()}
    spec = parse_teacher(name.replace("/", "-"), recipe.get("teacher"), data, folder)
    if threads:
        torch.set_num_threads(threads)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".zoo-build-", dir=work_dir))
    t0 = time.perf_counter()
    try:
        built = train_teacher(spec, scratch, log)
        card = read_card(built) | {
            "zoo": name, "build_time_s": round(time.perf_counter() - t0, 1), "build_threads": torch.get_num_threads(),
            "build_command": f"rslad-tune zoo build {name}" + (f" --threads {threads}" if threads else ""),
            "build_date": time.strftime("%Y-%m-%d"), "build_machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "build_commit": _git_commit(), "torch": torch.__version__}
        write_json(card, built / "card.json")
        for f in zoo.FILES:
            tmp = folder / f".{f}.{os.getpid()}.tmp"
            shutil.copyfile(built / f, tmp)
            os.replace(tmp, folder / f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"zoo teacher {name}: built in {card['build_time_s']:.0f}s ({card['build_threads']} threads): "
        f"clean {card['clean_acc']:.4f}, PGD-20 {card['pgd20_acc']:.4f} on {card['eval_n']} test images"
        + (f", AutoAttack {card['aa_acc']:.4f} on {card['aa_n']}" if "aa_acc" in card else "") + f" -> {folder}")
    return folder
