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
import json
from pathlib import Path

import yaml

from ..trial.config import SpecError, YamlLoader

ZOO_ROOT = Path(__file__).resolve().parents[1] / "teacher_zoo"
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


def zoo_table(markdown: bool = False) -> str:
    """Every zoo teacher with its card: parameters, MACs, clean / PGD-20 on the test split, AutoAttack, build."""
    head = ["teacher", "params", "MACs", "clean", "PGD-20", "AutoAttack", "build", "recipe"]
    rows = []
    for name in zoo_names():
        folder = ZOO_ROOT / name
        if not (folder / "card.json").is_file():
            rows.append([name, "not built", "", "", "", "", "", f"rslad-tune zoo build {name}"])
            continue
        c = json.loads((folder / "card.json").read_text())
        r = read_recipe(name)["teacher"]["train"]
        recipe = f"{r['method']} w{r.get('width')}, {r['epochs']} epochs, lr {r.get('lr')}" + (
            f", PGD-{r.get('attack_steps')} eps {r.get('epsilon')}" if r["method"] != "natural" else "")
        aa = f"{100 * c['aa_acc']:.2f} ({c['aa_n']})" if "aa_acc" in c else "–"
        build = f"{c['build_time_s'] / 60:.0f} min ({c.get('build_threads')} thread)" if "build_time_s" in c else "–"
        rows.append([name, f"{c['params']:,}", f"{c['macs'] / 1e6:.2f}M", f"{100 * c['clean_acc']:.2f}",
                     f"{100 * c['pgd20_acc']:.2f} ({c['eval_n']})", aa, build, recipe])
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [head, *rows])
