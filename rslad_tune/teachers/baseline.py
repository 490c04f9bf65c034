"""The `baseline:` teacher source: no teacher. `teachers: {none: {baseline: sat}}` trains the same student with
SAT (or TRADES, MART) alone, at the same budget, searched like any other teacher: the reference every
distillation claim is measured against (the selection report puts it first). A reference arm by default
(`Source.reference`): the scheduler never stops its students early (sweep/scheduling.py).

With few labels (`data.labelled`), `{baseline: {pseudo: sat, teacher: NAME}}` is the strong label-free reference,
robust self-training (Carmon et al. 2019): SAT on every training image, the true labels where there are some and
teacher NAME's argmax (on the clean image) on the others. NAME may be left out when the sweep has one teacher."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..trial.config import TrialConfig
from ..trial.data import Splits
from ..trial.errors import SpecError
from ..trial.lazy import LazyModule
from ..trial.methods import METHODS
from .folders import config_folder
from .source import Log, Source, TeacherSpec

torch = LazyModule("torch")

# adversarial methods that need no teacher: what "the student trained alone" means for a robust student
BASELINE_METHODS = tuple(m for m, cls in METHODS.items() if cls.adversarial and not cls.needs_teacher)
PSEUDO_FORM = "{pseudo: sat, teacher: NAME} (NAME: the teacher whose argmax labels the unlabelled images)"


class BaselineSource(Source):
    key = "baseline"
    example = "`baseline:` (no teacher: the student trained alone with sat, trades or mart)"
    takes_card = False
    distils = False
    control = True
    reference = True  # every baseline entry, whatever its form: "should I distil?" needs its students to the end
    refusals = {"card_examples": "a baseline has no teacher to card", "card_aa_examples": "a baseline has no teacher to card"}

    def parse(self, label: str, raw: dict, data_values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        entry = raw["baseline"]
        if isinstance(entry, dict):  # robust self-training: {pseudo: method, teacher: name}
            if set(entry) - {"pseudo", "teacher"} or "pseudo" not in entry:
                raise SpecError(f"{label}.baseline", entry, f"must be a method name or {PSEUDO_FORM}")
            if data_values.get("labelled") is None:
                raise SpecError(f"{label}.baseline.pseudo", entry["pseudo"], "labels the unlabelled images: it needs "
                                "data.labelled (without it every training image has its true label)")
            teacher = entry.get("teacher")
            if teacher is not None and not isinstance(teacher, str):
                raise SpecError(f"{label}.baseline.teacher", teacher, "must be the name of another entry of teachers:")
            return {"method": self._method(f"{label}.baseline.pseudo", entry["pseudo"]), "pseudo": teacher}
        return {"method": self._method(f"{label}.baseline", entry)}

    @staticmethod
    def _method(key: str, method: Any) -> str:
        if method not in BASELINE_METHODS:
            raise SpecError(key, method, f"must be one of {', '.join(BASELINE_METHODS)}: the method that trains the "
                            "student alone")
        return method

    def check_entry(self, spec: TeacherSpec, teachers: dict[str, TeacherSpec], labellers: tuple[str, ...]) -> None:
        """A pseudo-label baseline names a teacher with a module (one of `labellers`); alone, that one by default."""
        if "pseudo" not in spec.args:
            return
        name = spec.args["pseudo"]
        if name is None and len(labellers) == 1:
            spec.args["pseudo"] = labellers[0]
        elif name not in labellers:
            raise SpecError(f"{spec.label}.baseline.teacher", name, "must name the teacher that labels the unlabelled "
                            f"images, one of: {', '.join(labellers) or '<none: add a teacher to teachers:>'}")

    def depends_on(self, spec: TeacherSpec) -> tuple[str, ...]:
        return (spec.args["pseudo"],) if spec.args.get("pseudo") else ()

    def resolve(self, spec: TeacherSpec, trial: TrialConfig, runs_dir: Path, log: Log) -> Path:
        method, pseudo = spec.args["method"], spec.args.get("pseudo")
        if pseudo:  # the labeller is named as the sweep names it: trials find its folder among the sweep's teachers
            final = config_folder(runs_dir / "teachers" / f"baseline-{method}-pseudo-{pseudo}",
                                  {"baseline": method, "pseudo": pseudo},
                                  {"source": f"baseline:{method}:pseudo:{pseudo}", "baseline": method, "pseudo": pseudo,
                                   "params": 0, "macs": 0})
            log(f"teacher {spec.name}: no teacher, {method} on every training image, the unlabelled ones labelled "
                f"by teacher {pseudo}'s argmax (robust self-training)")
            return final
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

    def train_splits(self, folder: Path, saved: dict, splits: Splits, teacher) -> Splits:
        """Pseudo-labels: the labeller's argmax on each unlabelled image (clean, unaugmented), in batches."""
        if not saved.get("pseudo") or splits.labelled is None:
            return splits
        labeller = teacher(saved["pseudo"])
        with torch.no_grad():
            y = torch.cat([labeller(x).argmax(1) for x in splits.train_x[splits.labelled:].split(1024)])
        return splits.with_labels(y)


SOURCE = BaselineSource()
