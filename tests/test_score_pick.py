"""bench.score_pick: a sweep's choice against a cell's ground truth, on hand-made numbers."""
import random

import pytest

from bench.score_pick import bootstrap, near_best, regret


def _arms():
    # three arms x four seeds; "b" is best, 2 points above "a" at every seed (beyond the noise) and 2 above "c"
    # on average with a spread that four seeds cannot resolve (paired p 0.085: within the noise)
    pts = {"a": [70, 71.1, 69, 70.1], "b": [72, 73, 71, 72], "c": [70.5, 69.5, 71, 69]}
    return {a: {s: {"pgd": v, "clean": v + 10, "objective": v} for s, v in enumerate(vs)} for a, vs in pts.items()}


def test_regret_is_the_best_arms_mean_minus_the_choices():
    arms = _arms()
    assert regret(arms, [0, 1, 2, 3], "b", "objective") == 0
    assert regret(arms, [0, 1, 2, 3], "a", "objective") == pytest.approx(1.95)
    assert regret(arms, [0, 1, 2, 3], "a", "clean") == pytest.approx(1.95)  # measured against the objective's best


def test_within_the_noise_of_the_best_is_a_paired_holm_test_and_the_bootstrap_keeps_the_best():
    arms = _arms()
    best, rows = near_best(arms, [0, 1, 2, 3])
    assert best == "b" and {r["arm"]: r["within_noise"] for r in rows} == {"a": False, "c": True}
    boot = bootstrap(arms, [0, 1, 2, 3], {"pick b": "b", "random": None}, 200, random.Random(0))
    assert boot["pick b"]["interval"] == [0, 0]
    assert boot["random"]["mean"] == pytest.approx((0 + 1.95 + 2) / 3, abs=0.3)
