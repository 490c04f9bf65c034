"""rslad_tune.sweep.stats against scipy.stats reference computations written out here."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from rslad_tune.sweep import stats as S

A = [61.2, 59.8, 62.5, 60.9, 61.7]
B = [60.1, 59.9, 61.0, 60.2, 60.3]


def test_imports_nothing_heavy():
    # the file on its own (rslad_tune/__init__.py imports torch through export.py, whatever stats.py does)
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("stats_alone", {S.__file__!r})
module = sys.modules["stats_alone"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.paired_difference({{0: 1.0, 1: 2.0, 2: 2.5}}, {{0: 0.0, 1: 1.5, 2: 1.0}})
bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "ray", "mlflow", "optuna", "rslad_tune")]
print(bad)
sys.exit(1 if bad else 0)
"""
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("conf", [0.95, 0.9])
def test_mean_interval_uses_t_for_the_dof(conf):
    m = S.mean_interval(A, conf)
    sd = np.std(A, ddof=1)
    assert m.n == 5 and m.mean == pytest.approx(np.mean(A)) and m.sd == pytest.approx(sd)
    assert m.halfwidth == pytest.approx(stats.t.ppf((1 + conf) / 2, 4) * sd / math.sqrt(5), rel=1e-12)
    assert m.halfwidth > 1.96 * sd / math.sqrt(5)  # never the normal quantile at 5 seeds


def test_mean_interval_small_n():
    assert S.mean_interval([3.0]).halfwidth is None and S.mean_interval([3.0]).mean == 3.0
    assert S.mean_interval([]).mean is None


def test_paired_difference_matches_ttest_rel_on_shared_seeds():
    a = dict(zip([0, 1, 2, 3, 4, 9], A + [99.0]))  # seed 9 only in a: ignored
    b = dict(zip([4, 3, 2, 1, 0, 7], B[::-1] + [-5.0]))  # same seeds, different order; seed 7 only in b
    r = S.paired_difference(a, b)
    d = np.subtract(A, B)
    assert r.n == 5 and r.dof == 4 and r.paired
    assert r.diff == pytest.approx(d.mean())
    assert r.halfwidth == pytest.approx(stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5), rel=1e-12)
    assert r.pvalue == pytest.approx(stats.ttest_rel(A, B).pvalue, rel=1e-12)
    assert r.mdd == pytest.approx(S.min_detectable_difference(d.std(ddof=1), 5), rel=1e-12)
    assert r.low == pytest.approx(r.diff - r.halfwidth) and r.high == pytest.approx(r.diff + r.halfwidth)


def test_paired_difference_one_shared_seed_has_no_interval():
    r = S.paired_difference({0: 1.0, 1: 2.0}, {1: 0.5, 2: 3.0})
    assert r.n == 1 and r.diff == 1.5 and r.halfwidth is None and r.pvalue is None and r.mdd is None


def test_unpaired_difference_is_welch():
    a, b = A, [58.0, 60.5, 59.0, 61.5]
    r = S.unpaired_difference(a, b)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    assert not r.paired and r.n == 4
    assert r.dof == pytest.approx(dof, rel=1e-12)
    assert r.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert r.halfwidth == pytest.approx(stats.t.ppf(0.975, dof) * math.sqrt(va + vb), rel=1e-10)
    assert r.pvalue == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    sd, _ = S.pooled_std([a, b])
    assert r.mdd == pytest.approx(S.min_detectable_difference(sd, 4, paired=False), rel=1e-12)


def test_pooled_std_and_difference_halfwidth():
    g = [[1.0, 2.0, 4.0], [10.0, 13.0], [7.0]]  # the single value carries no variance: ignored
    sd, dof = S.pooled_std(g)
    ss = np.var(g[0], ddof=0) * 3 + np.var(g[1], ddof=0) * 2
    assert dof == 3 and sd == pytest.approx(math.sqrt(ss / 3))
    assert S.pooled_std([[1.0], [2.0]]) == (None, 0)
    hw = S.difference_of_means_halfwidth(sd, dof, 3, 2, 0.9)
    assert hw == pytest.approx(stats.t.ppf(0.95, 3) * sd * math.sqrt(1 / 3 + 1 / 2), rel=1e-12)


def test_holm_hand_computed():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> .06 (monotone)
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert S.holm([0.2]) == [0.2]


def test_tukey_all_pairs_matches_scipy():
    groups = {"rslad": A, "sat": B, "kd": [58.0, 60.5, 59.0, 61.5]}
    ref = stats.tukey_hsd(A, B, groups["kd"])
    ci = ref.confidence_interval(0.95)
    pairs = S.tukey_all_pairs(groups)
    assert [(p.a, p.b) for p in pairs] == [("rslad", "sat"), ("rslad", "kd"), ("sat", "kd")]
    for p, (i, j) in zip(pairs, [(0, 1), (0, 2), (1, 2)]):
        assert p.diff == pytest.approx(np.mean(list(groups.values())[i]) - np.mean(list(groups.values())[j]))
        assert p.pvalue == pytest.approx(ref.pvalue[i, j], rel=1e-12)
        assert (p.low, p.high) == pytest.approx((ci.low[i, j], ci.high[i, j]), rel=1e-12)
        assert p.low < p.diff < p.high


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
@pytest.mark.parametrize("paired", [True, False])
def test_mdd_has_the_power_it_claims(n, paired):
    sd = 1.7
    mdd = S.min_detectable_difference(sd, n, paired=paired)
    dof = n - 1 if paired else 2 * n - 2
    nc = mdd / sd * math.sqrt(n if paired else n / 2)  # reference power, written out
    tcrit = stats.t.ppf(0.975, dof)
    power = stats.nct.sf(tcrit, dof, nc) + stats.nct.sf(tcrit, dof, -nc)  # upper tail + lower tail by symmetry
    assert abs(power - 0.8) < 1e-6
    k = 1 if paired else 2
    assert mdd > (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd * math.sqrt(k / n)


@pytest.mark.parametrize("paired", [True, False])
def test_detection_power_counts_both_tails(paired):
    assert S.detection_power(0.0, 1.0, 4, paired=paired) == pytest.approx(0.05, rel=1e-9)  # no effect: alpha
    up, down = S.detection_power(0.9, 1.0, 4, paired=paired), S.detection_power(-0.9, 1.0, 4, paired=paired)
    assert up == pytest.approx(down, rel=1e-12) and 0.05 < up < 0.8


def test_mdd_edges():
    assert S.min_detectable_difference(1.0, 1) is None
    assert S.min_detectable_difference(None, 5) is None
    assert S.min_detectable_difference(0.0, 5) == 0.0
    assert S.min_detectable_difference(2.0, 5) == pytest.approx(2 * S.min_detectable_difference(1.0, 5))
    assert S.min_detectable_difference(1.0, 10) < S.min_detectable_difference(1.0, 5)


def mean(v):
    return sum(v) / len(v)


def test_bootstrap_interval_reproducible_and_covers_statistic():
    x = [0.3, 1.2, -0.4, 2.2, 0.9, 1.5, 0.1, 1.1]
    r1 = S.bootstrap_interval(x, mean, seed=3)
    assert r1 == S.bootstrap_interval(x, mean, seed=3)
    assert r1 != S.bootstrap_interval(x, mean, seed=4)
    assert r1.estimate == pytest.approx(mean(x)) and r1.low < mean(x) < r1.high
    assert min(x) < r1.low and r1.high < max(x)
    wide = S.bootstrap_interval(x, mean, seed=3, confidence=0.99)
    assert wide.low <= r1.low and wide.high >= r1.high
    # the resampling is by unit: the same numbers with numpy's generator, written out
    rng = np.random.default_rng(3)
    ref = [mean([x[i] for i in idx]) for idx in rng.integers(0, len(x), size=(2000, len(x)))]
    assert (r1.low, r1.high) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])))


def test_bootstrap_drops_undefined_resamples():
    units = [(1, 2), (2, 3), (3, 5), (4, 4)]  # a statistic of whole units: spearman of the pairs
    r = S.bootstrap_interval(units, lambda u: S.spearman(*zip(*u)).rho, n_resamples=100)
    assert r.estimate == pytest.approx(0.8) and -1 <= r.low <= r.high <= 1


@pytest.mark.parametrize("method", ["wilson", "exact"])
def test_hit_rate_interval(method):
    hits = [True, False, True, True, False, True, True]
    r = S.hit_rate_interval(hits, method=method)
    ref = stats.binomtest(5, 7).proportion_ci(confidence_level=0.95, method=method)
    assert r.estimate == pytest.approx(5 / 7) and (r.low, r.high) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert S.hit_rate_interval([True] * 4).high == pytest.approx(1.0)


def test_spearman_exact_on_monotone_input():
    r = S.spearman([1, 2, 3, 4, 5], [2.0, 4.1, 6.3, 8.0, 11.0])
    assert r.rho == pytest.approx(1.0) and r.exact
    assert r.pvalue == pytest.approx(2 / math.factorial(5))  # only identity (and reverse) reach |rho| = 1


def test_spearman_matches_scipy_permutation_with_ties():
    a, b = [3, 1, 4, 1, 5], [1, 9, 2, 30, 2]  # ties and an outlier: raw-value permutations would differ
    r = S.spearman(a, b)
    ref = stats.permutation_test((a,), lambda x: stats.spearmanr(x, b).statistic,
                                 permutation_type="pairings", n_resamples=math.inf, vectorized=False)
    assert r.exact and r.rho == pytest.approx(stats.spearmanr(a, b).statistic)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


def test_spearman_large_n_and_undefined():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=12), rng.normal(size=12)
    r = S.spearman(a, b)
    assert not r.exact and r.pvalue == pytest.approx(stats.spearmanr(a, b).pvalue)
    assert S.spearman([1, 2], [2, 1]).rho is None
    assert S.spearman([1, 1, 1, 1], [1, 2, 3, 4]).rho is None


def test_difference_sentence_three_cases_and_boundary():
    assert S.difference_sentence(1.234, 0.5, 5, 1.8) == "helps PGD-20 by 1.23 ± 0.50 points"
    assert S.difference_sentence(-1.234, 0.5, 5, 1.8, what="clean") == "hurts clean by 1.23 ± 0.50 points"
    s = S.difference_sentence(0.3, 1.2, 5, 2.104)
    assert s == ("cannot tell on PGD-20 at 5 seeds (0.30 ± 1.20; the smallest difference "
                 "5 seeds could detect at 80 % power is 2.10 points)")
    assert S.difference_sentence(0.5, 0.5, 3, 2.0).startswith("cannot tell")  # touches 0
    assert S.difference_sentence(-0.5, 0.5, 3, 2.0).startswith("cannot tell")
    assert S.difference_sentence(0.5, None, 1, None).startswith("cannot tell on PGD-20 at 1 seed (")


def test_exact_spearman_p_of_eight_points_walks_their_orders_once():
    """8 points: the p-value of all 8! orders of one side (two-sided), not of (8!)^2 pairings (23 GB)."""
    import itertools

    import numpy as np

    from rslad_tune.sweep import stats

    x, y = [1, 2, 3, 4, 5, 6, 7, 8], [2, 1, 4, 3, 6, 5, 8, 7]
    r = stats.spearman(x, y)
    yc = np.array(y, dtype=float) - 4.5
    xs = np.array(list(itertools.permutations(x)), dtype=float) - 4.5
    null = xs @ yc / np.sqrt((xs * xs).sum(1) * (yc @ yc))
    assert r.exact and r.rho == pytest.approx(0.9047619)
    assert r.pvalue == pytest.approx(np.mean(np.abs(null) >= r.rho - 1e-12))
