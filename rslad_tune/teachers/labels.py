"""The `labels:` teacher source, a control: a "teacher" whose soft labels are the true labels, optionally smoothed
(`teachers: {labels: {labels: {smoothing: 0.1}}}`). RSLAD with it trains on (1-α) KL(S(x), y) + α KL(S(x'), y):
whatever a real teacher adds beyond its labels shows as its students' gain over these."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..trial.config import TrialConfig
from ..trial.data import Splits, num_views
from ..trial.errors import SpecError
from ..trial.lazy import LazyModule
from .folders import config_folder
from .source import Log, Source, TeacherSpec

torch = LazyModule("torch")


FLOOR = -30.0  # the logit of a zero probability (exp(-30) ~ 1e-13): finite, so every KL term stays finite


class LabelSource(Source):
    key = "labels"
    example = "`labels:` (the true labels, e.g. {smoothing: 0.1})"
    takes_card = False
    control = True
    refusals = {"card_examples": "a label teacher is exact on every image: nothing to card",
                "card_aa_examples": "a label teacher is exact on every image: nothing to card"}

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        entry = raw["labels"] if raw["labels"] is not None else {}
        if not isinstance(entry, dict) or set(entry) - {"smoothing"}:
            raise SpecError(f"{label}.labels", entry, "must be a mapping {smoothing: s} with 0 <= s < 1 (or {} for none)")
        s = entry.get("smoothing", 0.0)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise SpecError(f"{label}.labels.smoothing", s, "must be a number with 0 <= smoothing < 1")
        return {"smoothing": float(s)}

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Log) -> Path:
        s = spec.args["smoothing"]
        final = config_folder(runs_dir / "teachers" / f"labels-s{s:g}", {"labels": {"smoothing": s}},
                              {"source": "labels", "smoothing": s, "params": 0, "macs": 0, "clean_acc": 1.0})
        log(f"teacher {spec.name}: the true labels (smoothing {s:g})")
        return final

    def owns(self, saved: dict) -> bool:
        return "labels" in saved

    def load(self, folder: Path, saved: dict, device) -> None:
        return None

    def train_splits(self, folder: Path, saved: dict, splits: Splits, teacher) -> Splits:
        return splits.only_labelled()  # its "soft labels" are the labels: with few labels, it has only those

    def soft_labels(self, folder: Path, saved: dict, trial: TrialConfig, splits: Splits) -> torch.Tensor:
        """log of the smoothed one-hot labels, the same for every view: (num_train, num_views, classes) fp16."""
        s, c = saved["labels"]["smoothing"], splits.num_classes
        on, off = math.log(1 - s + s / c), (math.log(s / c) if s > 0 else FLOOR)
        table = torch.full((len(splits.train_y), c), off, dtype=torch.float16, device=splits.train_y.device)
        table.scatter_(1, splits.train_y.long()[:, None], on)
        return table[:, None, :].expand(-1, num_views(splits.augment, splits.pad), -1)


SOURCE = LabelSource()
