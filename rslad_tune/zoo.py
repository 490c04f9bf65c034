"""The teacher zoo: small teachers that ship with the package, each rebuilt by the tool's own `train:` recipe.

    rslad_tune/teacher_zoo/<dataset>/<name>/
        recipe.yaml        the data section and the teacher entry that trained it (`train:` + card settings)
        model.safetensors  the weights
        config.json        how to rebuild the module (arch, width, input shape)
        card.json          parameters, MACs, clean / PGD-20 on the full test split, AutoAttack, build time

A YAML names one as `teachers: {sat_w32: {zoo: fashion_mnist/sat_w32}}`; it is then loaded like a
checkpoint teacher (safetensors only, checked before anything runs) and its card is read, not recomputed.

    rslad-tune zoo list
    rslad-tune zoo build fashion_mnist/sat_w32      # retrain from recipe.yaml, replace the files, print the time
"""
from __future__ import annotations

import difflib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

from .spec import SpecError

ZOO_ROOT = Path(__file__).resolve().parent / "teacher_zoo"
FILES = ("model.safetensors", "config.json", "card.json")


def zoo_names() -> list[str]:
    """Every recipe in the zoo, as `<dataset>/<name>` (built or not)."""
    return sorted(str(p.parent.relative_to(ZOO_ROOT)) for p in ZOO_ROOT.glob("*/*/recipe.yaml"))


def zoo_folder(name: object, key: str = "zoo", built: bool = True) -> Path:
    """The folder of zoo teacher `name`; a one-line SpecError for an unknown or unbuilt one."""
    names = zoo_names()
    if not isinstance(name, str) or name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(key, name, f"is not in the teacher zoo{hint}; available: {', '.join(names)}")
    folder = ZOO_ROOT / name
    if built and not all((folder / f).is_file() for f in FILES):
        raise SpecError(key, name, f"has a recipe but no weights yet: build it with `rslad-tune zoo build {name}`")
    return folder


def read_recipe(name: str) -> dict:
    return yaml.safe_load((zoo_folder(name, built=False) / "recipe.yaml").read_text())


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ZOO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build(name: str, *, threads: int | None = None, work_dir: str | Path = "runs",
          log: Callable[[str], None] = print) -> Path:
    """Train zoo teacher `name` from its recipe (in a scratch folder under `work_dir`), card it, and
    replace its files in the zoo (each written under a temporary name and renamed)."""
    import torch

    from .spec import check_trial_value, parse_teacher
    from .teachers import train_teacher

    folder = zoo_folder(name, built=False)
    recipe = read_recipe(name)
    data = {k: check_trial_value(k, v, label=f"data.{k}") for k, v in (recipe.get("data") or {}).items()}
    spec = parse_teacher(name.replace("/", "-"), recipe.get("teacher"), data, folder)
    if threads:
        torch.set_num_threads(threads)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".zoo-build-", dir=work_dir))
    t0 = time.perf_counter()
    try:
        built = train_teacher(spec, scratch, log)
        card = json.loads((built / "card.json").read_text())
        card |= {"zoo": name, "build_time_s": round(time.perf_counter() - t0, 1), "build_threads": torch.get_num_threads(),
                 "build_command": f"rslad-tune zoo build {name}" + (f" --threads {threads}" if threads else ""),
                 "build_date": time.strftime("%Y-%m-%d"), "build_machine": f"{platform.machine()}, {os.cpu_count()} cores",
                 "build_commit": _git_commit(), "torch": torch.__version__}
        (built / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
        for f in FILES:
            tmp = folder / f".{f}.{os.getpid()}.tmp"
            shutil.copyfile(built / f, tmp)
            os.replace(tmp, folder / f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"zoo teacher {name}: built in {card['build_time_s']:.0f}s ({card['build_threads']} threads): "
        f"clean {card['clean_acc']:.4f}, PGD-20 {card['pgd20_acc']:.4f} on {card['eval_n']} test images"
        + (f", AutoAttack {card['aa_acc']:.4f} on {card['aa_n']}" if "aa_acc" in card else "") + f" -> {folder}")
    return folder
