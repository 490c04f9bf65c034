"""The `checkpoint:` teacher source: a weights file given by the user (safetensors, or a PyTorch state dict loaded
with weights_only=True) with its `arch` (and `width`): checked against the architecture before anything runs,
re-saved as safetensors and carded once, in a folder keyed by the file's content."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..trial.config import TrialConfig, check_trial_value, expand_user
from ..trial.data import Splits
from ..trial.errors import SpecError, not_a_file
from ..trial.files import file_digest, load_weights, read_json
from ..trial.models import REGISTRY as MODELS
from ..trial.models import build_from_config, model_config
from .folders import carded
from .source import Log, Source, TeacherSpec, at, load_weights_folder


class CheckpointSource(Source):
    key = "checkpoint"
    example = "`checkpoint:` (a weights file)"
    entry_keys = ("arch", "width")

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        path = raw["checkpoint"]
        if not isinstance(path, str) or not path:
            raise SpecError(f"{label}.checkpoint", path, "must be a file path")
        if "arch" not in raw:
            raise SpecError(f"{label}.arch", None, f"a checkpoint teacher needs its architecture: one of {', '.join(MODELS)}")
        arch = check_trial_value("arch", raw["arch"], label=f"{label}.arch")
        width = check_trial_value("width", raw.get("width"), label=f"{label}.width")
        if width is not None and "width" not in MODELS[arch][1]:  # it would be ignored, silently
            with_width = ", ".join(a for a, (_, kwargs) in MODELS.items() if "width" in kwargs)
            raise SpecError(f"{label}.width", width, f"{arch} has no width (only {with_width} takes one); remove it")
        return {"checkpoint": at(base_dir, path), "given": path, "arch": arch, "width": width}

    def place(self, spec: TeacherSpec, env) -> None:
        spec.args["checkpoint"] = str(expand_user(f"{spec.label}.checkpoint", spec.args["checkpoint"]).absolute())

    def check(self, spec: TeacherSpec, data_values: dict[str, Any]) -> None:
        p = Path(spec.args["checkpoint"])
        if not p.is_file():
            raise SpecError(f"{spec.label}.checkpoint", spec.args["given"], f"{not_a_file(p)} (looked at {p})")
        spec.args["checkpoint"] = str(p.resolve())

    def check_weights(self, spec: TeacherSpec, splits: Splits) -> None:
        self._model(spec, splits)

    def _model(self, spec: TeacherSpec, splits: Splits):
        a = spec.args
        saved = model_config(a["arch"], a["width"], splits.in_channels, splits.num_classes, splits.image_size)
        return saved, load_weights(build_from_config(saved), Path(a["checkpoint"]), f"{spec.label}.checkpoint", finite=True)

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Log) -> Path:
        src, a = Path(spec.args["checkpoint"]), spec.args
        digest = file_digest(src)

        def build(splits, device):
            saved, model = self._model(spec, splits)
            return saved, model.to(device), f"checkpoint:{src}", {"checkpoint_sha256": digest}

        # keyed by the file's content: the same weights under another name or mtime are the same teacher
        key = f"file-{a['arch']}-w{a['width']}-{digest[:16]}"
        return carded(spec, trial, runs_dir, key, build, log, f"{spec.label}.checkpoint ({src})",
                      lambda folder, device: load_weights_folder(folder, read_json(folder / "config.json"), device))


SOURCE = CheckpointSource()
