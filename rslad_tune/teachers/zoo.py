"""The teacher zoo: small teachers that ship with the package, each rebuilt by the tool's own `train:` recipe
(zoo_build.build_zoo_teacher). This module finds them and is the `zoo:` teacher source.

    rslad_tune/teacher_zoo/<dataset>/<name>/
        recipe.yaml        the data section and the teacher entry that trained it (`train:` + card settings)
        model.safetensors  the weights
        config.json        how to rebuild the module (arch, width, input shape)
        card.json          parameters, MACs, clean / PGD-20 on the full test split, AutoAttack, build time

A YAML names one as `teachers: {sat_w32: {zoo: fashion_mnist/sat_w32}}`: its weights, config and card are copied
into `runs/teachers/zoo-<dataset>-<name>-<digest of the weights>/` (where its soft-label caches go); nothing is
trained or re-scored, and the weights are loaded into their architecture before anything runs.

    rslad-tune zoo list [--markdown | --json]
    rslad-tune zoo build fashion_mnist/sat_w32      # retrain from recipe.yaml, replace the files, print the time
    rslad-tune zoo proxies                          # the teachers' proxies on teacher.yaml's data, into card.json
"""
from __future__ import annotations

import difflib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..trial.config import TrialConfig
from ..trial.yaml_loader import YamlLoader
from ..trial.data import Splits
from ..trial.errors import SpecError
from ..trial.files import file_digest, load_weights, read_json
from ..trial.models import build_from_config
from .folders import publish, refuse_damaged
from .source import Log, Source, TeacherSpec

ZOO_ROOT = Path(__file__).resolve().parents[1] / "teacher_zoo"
FILES = ("model.safetensors", "config.json", "card.json")
# the data `zoo list` shows the proxies on: teacher.yaml's, its students' 9,000 training images (`zoo proxies` stores them)
LIST_DATA = {"train_subset": 10000, "val_size": 1000}


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


def unnamed_zoo_teachers(teachers: dict[str, TeacherSpec], dataset: str) -> dict[str, TeacherSpec]:
    """The built zoo teachers of `dataset` that `teachers` (a YAML's) do not name, as entries of their own (named
    by their short name, or <dataset>/<name> where the YAML uses that name): `teachers rank` shows every shipped
    candidate beside the YAML's."""
    named = {t.args.get("zoo") for t in teachers.values() if t.source == SOURCE.key}
    out = {}
    for zoo in zoo_names():
        ds, short = zoo.split("/")
        if ds == dataset and zoo not in named and all((ZOO_ROOT / zoo / f).is_file() for f in FILES):
            name = short if short not in teachers else zoo
            out[name] = TeacherSpec(name=name, source=SOURCE.key, args={"zoo": zoo})
    return out


def read_recipe(name: str) -> dict:
    # YamlLoader: yaml.safe_load's loader, but `lr: 1e-3` is a float
    return yaml.load((zoo_folder(name, built=False) / "recipe.yaml").read_text(), Loader=YamlLoader)


SPLIT_KEYS = ("train_subset", "val_size", "labelled")  # which training images a few-label teacher had labels for
CARD_FIELDS = ("params", "macs", "clean_acc", "pgd20_acc", "eval_n", "aa_acc", "aa_n", "build_time_s")


def zoo_records() -> list[dict[str, Any]]:
    """Every zoo teacher as data (`rslad-tune zoo list --json`): its name, the card's numbers (accuracies as
    fractions; None where a teacher is not built or a number was not measured) and its recipe's `train:` mapping."""
    rows = []
    for name in zoo_names():
        card = ZOO_ROOT / name / "card.json"
        c = json.loads(card.read_text()) if card.is_file() else {}
        rows.append({"name": name, **{k: c.get(k) for k in CARD_FIELDS}, "recipe": read_recipe(name)["teacher"]["train"]})
    return rows


def zoo_table(markdown: bool = False) -> str:
    """Every zoo teacher with its card: parameters, MACs, clean / PGD-20 on the test split, AutoAttack, build, and
    true_prob / clean accuracy on LIST_DATA's training images where `zoo proxies` stored them."""
    head = ["teacher", "params", "MACs", "clean", "PGD-20", "AutoAttack", "true_prob", "train clean", "build", "recipe"]
    rows = []
    for name in zoo_names():
        folder = ZOO_ROOT / name
        if not (folder / "card.json").is_file():
            rows.append([name, "not built", "", "", "", "", "", "", "", f"rslad-tune zoo build {name}"])
            continue
        c = json.loads((folder / "card.json").read_text())
        r = read_recipe(name)["teacher"]["train"]
        recipe = f"{r['method']} w{r.get('width')}, {r['epochs']} epochs, lr {r.get('lr')}" + (
            f", PGD-{r.get('attack_steps')} eps {r.get('epsilon')}" if r["method"] != "natural" else "")
        aa = f"{100 * c['aa_acc']:.2f} ({c['aa_n']})" if "aa_acc" in c else "–"
        build = f"{c['build_time_s'] / 60:.0f} min ({c.get('build_threads')} thread)" if "build_time_s" in c else "–"
        data = {"dataset": (read_recipe(name).get("data") or {}).get("dataset", TrialConfig.dataset), **LIST_DATA}
        p = next((e["training"] for e in c.get("proxies", {}).values() if e.get("data") == data), None)
        rows.append([name, f"{c['params']:,}", f"{c['macs'] / 1e6:.2f}M", f"{100 * c['clean_acc']:.2f}",
                     f"{100 * c['pgd20_acc']:.2f} ({c['eval_n']})", aa, f"{p['true_prob']:.4f}" if p else "–",
                     f"{100 * p['clean_acc']:.2f}" if p else "–", build, recipe])
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [head, *rows])


class ZooSource(Source):
    key = "zoo"
    example = "`zoo:` (a shipped teacher, e.g. fashion_mnist/sat_w32)"
    takes_card = False
    refusals = {"arch": "a zoo teacher's architecture comes from its config.json",
                "width": "a zoo teacher's architecture comes from its config.json",
                "card_examples": "a zoo teacher's card ships with it (card.json) and is read, not recomputed",
                "card_aa_examples": "a zoo teacher's card ships with it (card.json) and is read, not recomputed"}

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        name = raw["zoo"]
        if not isinstance(name, str) or name.count("/") != 1:
            raise SpecError(f"{label}.zoo", name, "must be <dataset>/<name> of a shipped teacher, e.g. fashion_mnist/sat_w32 "
                            "(`rslad-tune zoo list`)")
        return {"zoo": name}

    def check(self, spec: TeacherSpec, data_values: dict[str, Any]) -> None:
        """The name is in the zoo, built, and trained on the sweep's dataset."""
        key, name = f"{spec.label}.zoo", spec.args["zoo"]
        folder = zoo_folder(name, key)
        ours = data_values.get("dataset", TrialConfig.dataset)
        try:
            theirs = (read_recipe(name).get("data") or {}).get("dataset", TrialConfig.dataset)
            json.loads((folder / "config.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError, AttributeError, TypeError, KeyError) as e:
            raise SpecError(key, name, f"its recipe.yaml or config.json in {folder} cannot be read ({type(e).__name__}); "
                            f"rebuild it with `rslad-tune zoo build {name}`") from None
        if theirs != ours:
            raise SpecError(key, name, f"was trained on {theirs!r}, which does not match data.dataset {ours!r}; "
                            "`rslad-tune zoo list` shows each zoo teacher's dataset")
        if data_values.get("labelled") is not None:  # few labels: a teacher that saw more labels would leak them
            split = {k: data_values.get(k, getattr(TrialConfig, k)) for k in SPLIT_KEYS}
            trained = {k: (read_recipe(name).get("data") or {}).get(k, getattr(TrialConfig, k)) for k in SPLIT_KEYS}
            if trained != split:
                raise SpecError(key, name, f"was trained on the labels of data {trained}; with data.labelled a teacher "
                                f"must have seen only the sweep's labelled images (data {split}): use a zoo teacher "
                                "whose recipe has that data section (`rslad-tune zoo list`)")

    def check_weights(self, spec: TeacherSpec, splits: Splits) -> None:
        src, key = zoo_folder(spec.args["zoo"], f"{spec.label}.zoo"), f"{spec.label}.zoo"
        load_weights(build_from_config(read_json(src / "config.json", key)), src / "model.safetensors", key, finite=True)

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Log) -> Path:
        """The shipped weights, config and card copied into a folder named by the weights' digest."""
        src = zoo_folder(spec.args["zoo"], f"{spec.label}.zoo")
        digest = file_digest(src / "model.safetensors")[:12]
        final = runs_dir / "teachers" / f"zoo-{src.parent.name}-{src.name}-{digest}"
        if final.exists():
            copy = final / "model.safetensors"
            if not copy.is_file() or file_digest(copy)[:12] != digest:
                raise SpecError(spec.label, str(final), f"this resolved teacher folder is damaged (its "
                                f"model.safetensors is not the zoo's, sha256 {digest}...); delete it and run again")
            refuse_damaged(spec, final, f"the zoo's {src}")
            return final
        self.check_weights(spec, None)
        tmp = runs_dir / "teachers" / f".{final.name}.{os.getpid()}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            for f in FILES:
                shutil.copyfile(src / f, tmp / f)
            publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"teacher {spec.name}: zoo teacher {src.parent.name}/{src.name} ({digest})")
        return final


SOURCE = ZooSource()
