"""Helps / trade / hurts / cannot tell on both axes (clean and PGD-20), on hand-computed numbers, and the objective
that names a teacher and picks the exported trial."""
import pytest

from rslad_tune.sweep.report import format_markdown
from rslad_tune.sweep.selection_verdict import verdict
from rslad_tune.sweep.two_axes import best_trial, classify

HALF = 4.302653 * 0.5 / 3 ** 0.5  # t(0.975, 2 dof) x sd 0.5 / sqrt(3): the interval of three paired differences of sd 0.5


@pytest.mark.parametrize("pgd,clean,cls", [
    ((1, True), (1, True), "helps"), ((1, True), (0.3, False), "helps"), ((-0.2, False), (2, True), "helps"),
    ((2, True), (-1, True), "trade"), ((-1, True), (2, True), "trade"),
    ((-1, True), (-1, True), "hurts"), ((-1, True), (0.5, False), "hurts"), ((0.1, False), (-2, True), "hurts"),
    ((0.4, False), (-0.4, False), "cannot_tell"), ((3.0, False), (3.0, False), "cannot_tell"),
])
def test_each_class_from_the_two_comparisons(pgd, clean, cls):
    assert classify({"diff": pgd[0], "real": pgd[1]}, {"diff": clean[0], "real": clean[1]}) == cls


def _row(name: str, pgd: list[float], clean: list[float], baseline: bool = False) -> dict:
    students = [{"trial_id": f"{name}-{i}", "seed": i, "alpha": 0.75, "epsilon": 0.1, "val_pgd": p, "clean": c, "pgd20": p, "aa": None, "n": 10000,
                 "n_aa": 0} for i, (p, c) in enumerate(zip(pgd, clean))]
    row = {"teacher": name, "baseline": baseline, "params": 0 if baseline else 10_000, "teacher_method": None,
           "decided": True, "students": students, "trials": 3, "full_length": 3, "teacher_clean": None,
           "teacher_pgd20": None, "teacher_aa": None, "teacher_n": None, "teacher_aa_n": None}
    for key in ("val_pgd", "clean", "pgd20", "aa"):
        vals = [100 * s[key] for s in students if s[key] is not None]
        row[f"student_{key}_mean"] = sum(vals) / len(vals) if vals else None
        row[f"student_{key}_std"] = None
        row[f"student_{key}_count"] = len(vals)
    return row


BASE = _row("none", [0.630, 0.635, 0.625], [0.750, 0.760, 0.740], baseline=True)


def _plus(values: list[float], points: list[float]) -> list[float]:
    return [v + p / 100 for v, p in zip(values, points)]


def _teacher(name, pgd_points, clean_points):
    return _row(name, _plus([0.630, 0.635, 0.625], pgd_points), _plus([0.750, 0.760, 0.740], clean_points))


def test_a_trade_names_both_axes_with_their_intervals():
    # PGD-20 -2.0 (differences -2, -1.5, -2.5: sd 0.5), clean +2.0 (2, 2.5, 1.5): both beyond the noise
    rows = [BASE, _teacher("trader", [-2.0, -1.5, -2.5], [2.0, 2.5, 1.5])]
    v = verdict(rows)
    (b,) = v["both_axes"]
    assert b["class"] == "trade" and v["should_distill"]["case"] == "trade"
    assert b["pgd20"]["diff"] == pytest.approx(-2.0) and b["pgd20"]["noise"] == pytest.approx(HALF, rel=1e-5)
    assert b["clean"]["diff"] == pytest.approx(2.0) and b["clean"]["noise"] == pytest.approx(HALF, rel=1e-5)
    first = format_markdown(rows, v=v).splitlines()[0]
    assert first.startswith("**A trade, not a gain: distil from trader only if clean test accuracy matters more")
    assert "clean test accuracy +2.00 ± 1.24 points (beyond the noise)" in first
    assert "test PGD-20 -2.00 ± 1.24 points (beyond the noise)" in first


def test_a_clean_only_gain_with_robustness_within_the_noise_helps():
    rows = [BASE, _teacher("cleaner", [0.5, -0.5, 0.0], [2.0, 2.5, 1.5])]
    v = verdict(rows)
    assert v["both_axes"][0]["class"] == "helps" and v["should_distill"]["case"] == "helps"
    first = format_markdown(rows, v=v).splitlines()[0]
    # the objective (PGD-20, the default) is within the noise: the first words say so, not a plain "Distil"
    assert first.startswith("**Distil from cleaner for clean test accuracy; test PGD-20, the objective, is not "
                            "resolved:** it helps clean test accuracy by 2.00 ± 1.24 points"), first
    assert "test PGD-20 +0.00 ± 1.24 points (within the noise; smallest detectable" in first
    for objective in ("clean", "balanced"):  # the gain is on the objective's axis, or on half of it
        text = verdict(rows, objective=objective)["should_distill"]["text"]
        assert text.startswith("**Distil, from cleaner:** it helps clean test accuracy by 2.00 ± 1.24 points"), text


def test_a_clean_only_loss_hurts_and_within_the_noise_cannot_tell():
    v = verdict([BASE, _teacher("dull", [0.5, -0.5, 0.0], [-2.0, -2.5, -1.5])])
    assert v["both_axes"][0]["class"] == "hurts" and v["should_distill"]["case"] == "hurts"
    assert "hurts by 2.00 ± 1.24 points of clean test accuracy" in v["should_distill"]["text"]
    v = verdict([BASE, _teacher("same", [0.5, -0.5, 0.0], [0.5, -0.5, 0.0])])
    assert v["should_distill"]["case"] == "cannot_tell"
    assert "clean test accuracy +0.00 ± 1.24 points (within the noise)" in v["should_distill"]["text"]


def test_the_objective_names_the_teacher_and_orders_the_ranking_but_never_changes_a_class():
    robust = _teacher("robust", [3.0, 3.5, 2.5], [0.5, 0.0, 1.0])    # +3 PGD-20, clean within the noise
    accurate = _teacher("accurate", [1.0, 1.5, 0.5], [4.0, 4.5, 3.5])  # +1 PGD-20, +4 clean
    rows = [BASE, robust, accurate]
    by = {o: verdict(rows, objective=o) for o in ("pgd", "clean", "balanced")}
    assert by["pgd"]["should_distill"]["teacher"] == "robust" and by["pgd"]["ranking"] == ["robust", "accurate"]
    assert by["clean"]["should_distill"]["teacher"] == "accurate" and by["clean"]["ranking"] == ["accurate", "robust"]
    assert by["balanced"]["ranking"] == ["accurate", "robust"]  # 0.5 x (1 + 4) > 0.5 x (3 + 0.5)
    assert verdict(rows, objective="balanced", clean_weight=0.1)["ranking"] == ["robust", "accurate"]
    assert all({b["teacher"]: b["class"] for b in v["both_axes"]} == {"robust": "helps", "accurate": "helps"}
               for v in by.values())


class _Trial:
    def __init__(self, best_pgd, clean_at_best, last_clean):
        self.result = {"best_pgd_acc": best_pgd, "clean_acc": last_clean}
        self.entry = {"pgd_acc": best_pgd, "clean_acc": clean_at_best}

    def best_entry(self):
        return self.entry


def test_the_exported_trial_follows_the_objective():
    robust, accurate = _Trial(0.70, 0.75, 0.76), _Trial(0.66, 0.82, 0.80)
    assert best_trial([robust, accurate]) is robust
    assert best_trial([robust, accurate], "clean") is accurate
    assert best_trial([robust, accurate], "balanced") is accurate  # 0.74 > 0.725
    assert best_trial([robust, accurate], "balanced", 0.2) is robust  # 0.724 > 0.692
