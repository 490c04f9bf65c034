"""The `baseline:` teacher source: no teacher. `teachers: {none: {baseline: sat}}` trains the same student with
SAT (or TRADES, MART) alone, at the same budget, searched like any other teacher: the reference every
distillation claim is measured against (the selection report puts it first)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..trial.config import TrialConfig
from ..trial.errors import SpecError
from ..trial.methods import METHODS
from .folders import config_folder
from .source import Log, Source, TeacherSpec

# adversarial methods that need no teacher: what "the student trained alone" means for a robust student
BASELINE_METHODS = tuple(m for m, cls in METHODS.items() if cls.adversarial and not cls.needs_teacher)


class BaselineSource(Source):
    key = "baseline"
    example = "`baseline:` (no teacher: the student trained alone with sat, trades or mart)"
    takes_card = False
    distils = False
    control = True
    refusals = {"card_examples": "a baseline has no teacher to card", "card_aa_examples": "a baseline has no teacher to card"}

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        if raw["baseline"] not in BASELINE_METHODS:
            raise SpecError(f"{label}.baseline", raw["baseline"], f"must be one of {', '.join(BASELINE_METHODS)}: the "
                            "method that trains the student alone")
        return {"method": raw["baseline"]}

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Log) -> Path:
        method = spec.args["method"]
        final = config_folder(runs_dir / "teachers" / f"baseline-{method}", {"baseline": method},
                              {"source": f"baseline:{method}", "baseline": method, "params": 0, "macs": 0})
        log(f"teacher {spec.name}: no teacher, the student trains with {method} alone (the baseline)")
        return final

    def owns(self, saved: dict) -> bool:
        return "baseline" in saved

    def load(self, folder: Path, saved: dict, device) -> None:
        return None

    def method(self, saved: dict, trial: TrialConfig) -> str:
        return saved["baseline"]


SOURCE = BaselineSource()
