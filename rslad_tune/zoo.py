"""The teacher zoo: small teachers that ship with the package, each rebuilt by the tool's own `train:` recipe
(teachers.build_zoo_teacher). This module only finds them.

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
from pathlib import Path

import yaml

from .config import SpecError, YamlLoader

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
    # YamlLoader: yaml.safe_load's loader, but `lr: 1e-3` is a float
    return yaml.load((zoo_folder(name, built=False) / "recipe.yaml").read_text(), Loader=YamlLoader)
