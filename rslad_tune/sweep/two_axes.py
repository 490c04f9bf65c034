"""Helps, trade, hurts or cannot tell: a teacher's students against the student trained alone on both axes a user
weighs, clean and robust (PGD-20) test accuracy, before any objective combines them (docs/statistics.md).

Each axis is a difference with its 95 % t-interval (paired by seed where the arms share seeds), Holm-corrected
over the teachers compared with the reference; an axis counts as better (+1) or worse (-1) only beyond the noise.
The class of a teacher:

    helps        better on one axis beyond the noise, worse on none
    trade        better on one, worse on the other, both beyond the noise
    hurts        worse on one or both beyond the noise, better on none
    cannot_tell  neither axis beyond the noise (the smallest detectable differences say how far it can see)

`report.objective` (pgd | clean | balanced) decides which teacher a report names first and which trial is
exported; it never changes a class.
"""
from __future__ import annotations

AXES = ("pgd20", "clean")  # the selection rows' student_<axis>_mean / students[i][<axis>]
AXIS_WORDS = {"pgd20": "test PGD-20", "clean": "clean test accuracy"}
CLASSES = ("helps", "trade", "hurts", "cannot_tell")
OBJECTIVES = ("pgd", "clean", "balanced")


def sign(c: dict) -> int:
    """+1 / -1: better / worse beyond the noise (Holm-corrected); 0: within it, or no interval."""
    return 0 if not c.get("real") else (1 if c["diff"] > 0 else -1)


def classify(pgd20: dict, clean: dict) -> str:
    """The class of one teacher from its two comparisons with the reference (each {"diff", "real", ...})."""
    signs = (sign(pgd20), sign(clean))
    better, worse = 1 in signs, -1 in signs
    return "trade" if better and worse else "helps" if better else "hurts" if worse else "cannot_tell"


def weight_of_clean(objective: str, clean_weight: float = 0.5) -> float:
    """How much clean accuracy counts in the objective's score (PGD-20 counts the rest)."""
    return {"pgd": 0.0, "clean": 1.0}.get(objective, clean_weight)


def score(pgd20: float, clean: float, objective: str = "pgd", clean_weight: float = 0.5) -> float:
    """The objective's score of a student (or of a difference): balanced is clean_weight x clean + the rest x PGD-20."""
    w = weight_of_clean(objective, clean_weight)
    return w * clean + (1 - w) * pgd20


def phrase(c: dict, mdd: bool = True) -> str:
    """One axis of one comparison in words: "test PGD-20 -1.00 ± 0.47 points (beyond the noise)"."""
    what = AXIS_WORDS[c["axis"]]
    if c.get("noise") is None:
        return f"{what} {c['diff']:+.2f} points (no interval: one student each, and no noise estimate)"
    where = "beyond the noise" if c["real"] else "within the noise" + (
        f"; smallest detectable {c['mdd']:.2f}" if mdd and c.get("mdd") is not None else "")
    if not c["real"] and abs(c["diff"]) > c["noise"] and c.get("p_holm") is not None:
        # the 95 % interval excludes 0 but Holm's correction over the family does not: say why
        where += f"; Holm-adjusted p {c['p_holm']:.3f}"
    return f"{what} {c['diff']:+.2f} ± {c['noise']:.2f} points ({where})"


def best_trial(trials: list, objective: str = "pgd", clean_weight: float = 0.5):
    """The trial (layout.TrialDir) a sweep exports: pgd, the default, the highest validation PGD accuracy at its
    best epoch, then the higher clean accuracy; clean or balanced, that score of its best epoch's validation clean
    and PGD accuracy. The epoch within a trial stays the one best by validation PGD (the checkpoint it kept)."""
    if objective == "pgd":
        return max(trials, key=lambda t: (t.result["best_pgd_acc"], t.result.get("clean_acc", 0)))

    def of(t) -> float:
        e = t.best_entry()
        return score(e["pgd_acc"], e["clean_acc"], objective, clean_weight)
    return max(trials, key=of)
