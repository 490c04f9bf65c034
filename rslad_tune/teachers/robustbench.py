"""The `robustbench:` teacher source: a RobustBench model, loaded by RobustBench's own loader (robustbench_loader.py)
from `{model_dir}/{dataset}/{threat_model}/{name}.pt`, which it downloads only when missing. The teacher folder
holds the config that names that file and the card, not a copy of the weights."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..trial.config import TrialConfig, expand_user
from ..trial.data import Splits
from ..trial.errors import SpecError
from ..trial.files import check_finite, load_torch_weights
from . import robustbench_loader as rbz
from .folders import carded
from .source import Log, Source, TeacherSpec, at

if TYPE_CHECKING:
    import torch
    from torch import nn


def state(path: Path, key: str) -> dict:
    """A RobustBench file's tensors, loaded as plain weights (weights_only)."""
    from ..trial.models import robustbench_state_dict

    try:
        return robustbench_state_dict(load_torch_weights(path, key))
    except TypeError as e:
        raise SpecError(key, str(path), f"does not hold a state dict ({e})") from None


def _load(rb: dict, key: str) -> nn.Module:
    path = rbz.checkpoint_path(rb["model_dir"], rb["dataset"], rb["threat_model"], rb["robustbench"])
    if path.is_file():  # RobustBench's loader unpickles it: make sure it holds plain, finite weights first
        check_finite(state(path, key), key, path)
    return rbz.load(rb["robustbench"], rb["model_dir"], rb["dataset"], rb["threat_model"], key)


class RobustBenchSource(Source):
    key = "robustbench"
    example = "`robustbench:` (a RobustBench model name)"
    entry_keys = ("dataset", "threat_model", "model_dir")
    refusals = {"arch": "a RobustBench teacher's architecture comes from RobustBench's model zoo",
                "width": "a RobustBench teacher's architecture comes from RobustBench's model zoo"}

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        """The entry against the sweep's data.dataset, by form only (RobustBench's list and the file: `check`)."""
        model = raw["robustbench"]
        data_dataset = data_values.get("dataset", TrialConfig.dataset)
        if not isinstance(model, str) or not model:
            raise SpecError(f"{label}.robustbench", model, "must be a RobustBench model name, e.g. Zhang2019Theoretically")
        dataset = raw.get("dataset", rbz.default_dataset(data_dataset))
        if dataset not in rbz.DATASETS:
            raise SpecError(f"{label}.dataset", dataset if "dataset" in raw else data_dataset,
                            f"RobustBench teachers here take CIFAR images: dataset is one of {', '.join(rbz.DATASETS)}")
        if data_dataset not in rbz.DATASETS[dataset]:
            raise SpecError(f"{label}.dataset", dataset,
                            f"does not match data.dataset {data_dataset!r} (allowed: {', '.join(rbz.DATASETS[dataset])})")
        threat = raw.get("threat_model", "Linf")
        if threat not in rbz.THREAT_MODELS:
            raise SpecError(f"{label}.threat_model", threat, f"must be one of {', '.join(rbz.THREAT_MODELS)}")
        model_dir = raw.get("model_dir")  # None: $RSLAD_TUNE_MODEL_DIR or RobustBench's default (`place`)
        if model_dir is not None and (not isinstance(model_dir, str) or not model_dir):
            raise SpecError(f"{label}.model_dir", model_dir, "must be a directory path")
        return {"robustbench": model, "dataset": dataset, "threat_model": threat,
                "model_dir": None if model_dir is None else at(base_dir, model_dir)}

    def place(self, spec: TeacherSpec, env) -> None:
        """model_dir: the YAML's (against its folder), else $RSLAD_TUNE_MODEL_DIR, else RobustBench's (against the cwd)."""
        given = spec.args["model_dir"] or env.get("RSLAD_TUNE_MODEL_DIR") or rbz.DEFAULT_MODEL_DIR
        spec.args["model_dir"] = str(expand_user(f"{spec.label}.model_dir", given).absolute())

    def check(self, spec: TeacherSpec, data_values: dict[str, Any]) -> None:
        """RobustBench lists the model; its file is in the model dir, or it can be downloaded."""
        a, label = spec.args, f"{spec.label}.robustbench"
        rbz.check_entry(label, a["robustbench"], a["dataset"], a["threat_model"])
        path = self.path(spec)
        if not path.is_file() and not rbz.can_download():
            raise SpecError(label, a["robustbench"], f"offline and {path} is missing: place RobustBench's checkpoint "
                            f"file there (RobustBench reads {{model_dir}}/{{dataset}}/{{threat_model}}/{{name}}.pt)")

    def check_weights(self, spec: TeacherSpec, splits: Splits) -> None:
        path = self.path(spec)
        if path.is_file():
            key = f"{spec.label}.robustbench"
            check_finite(state(path, key), key, path)

    def path(self, spec: TeacherSpec) -> Path:
        a = spec.args
        return rbz.checkpoint_path(a["model_dir"], a["dataset"], a["threat_model"], a["robustbench"])

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Log) -> Path:
        rb = {**spec.args, "model_dir": str(Path(spec.args["model_dir"]).resolve()), "input_range": [0.0, 1.0]}
        path, label = self.path(spec), f"{spec.label}.robustbench"
        if not path.is_file():
            log(f"teacher {spec.name}: downloading RobustBench {rb['robustbench']} to {path}")
            _load(rb, label)
        stat = path.stat()

        def build(splits, device):
            return rb, _load(rb, label).to(device), f"robustbench:{rb['robustbench']}", {"checkpoint": str(path)}

        key = f"rb-{rb['dataset']}-{rb['threat_model']}-{rb['robustbench']}-{int(stat.st_mtime)}-{stat.st_size}"
        return carded(spec, trial, runs_dir, key, build, log, f"RobustBench's {path}",
                      lambda folder, device: self.load(folder, rb, device), weights=False)

    def owns(self, saved: dict) -> bool:
        return "robustbench" in saved

    def load(self, folder: Path, saved: dict, device: torch.device | str) -> nn.Module:
        return _load(saved, f"teacher {folder.name}").to(device)


SOURCE = RobustBenchSource()
