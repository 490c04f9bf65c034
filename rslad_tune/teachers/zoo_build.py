"""`rslad-tune zoo build NAME`: retrain a shipped zoo teacher from its recipe.yaml (a `train:` entry), card it, and
replace its files in the zoo."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ..trial.config import TrialConfig, check_trial_value
from ..trial.files import write_json
from . import zoo
from .folders import read_card
from .sources import parse_teacher
from .train import train_teacher


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
    entry = recipe.get("teacher")
    if isinstance(entry, dict) and isinstance(entry.get("train"), dict):
        # the shipped weights were trained in float32: `precision: auto` would pick bf16 autocast on a CPU that has
        # it and rebuild other weights than the card describes; a recipe that wants bf16 says so
        entry = {**entry, "train": {"precision": "fp32", **entry["train"]}}
    spec = parse_teacher(name.replace("/", "-"), entry, data, folder)
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


def store_zoo_proxies(names: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    """`rslad-tune zoo proxies [NAME]`: each built zoo teacher's proxies (proxies.py) on the images of zoo.LIST_DATA
    (teacher.yaml's students' data), stored in its shipped card.json (atomically) for `zoo list` and for every sweep
    on that data, whose resolved copy of the card then holds them already. Seconds per teacher."""
    from .proxies import PROXIES, folder_proxies

    for name in names or [n for n in zoo.zoo_names() if all((zoo.ZOO_ROOT / n / f).is_file() for f in zoo.FILES)]:
        folder = zoo.zoo_folder(name, "zoo proxies")
        dataset = (zoo.read_recipe(name).get("data") or {}).get("dataset", TrialConfig.dataset)
        t0 = time.perf_counter()
        p = folder_proxies(folder, TrialConfig(dataset=dataset, **zoo.LIST_DATA))["training"]
        log(f"zoo teacher {name}: {', '.join(f'{k} {p[k]:.4f}' for k in PROXIES)} on {p['n']} training images "
            f"({time.perf_counter() - t0:.1f}s) -> {folder / 'card.json'}")
