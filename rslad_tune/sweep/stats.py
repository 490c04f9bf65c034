"""The statistics behind every claim the project publishes (docs/statistics.md).

A difference is reported with its interval, never alone: mean ± t-interval (t for the dof at hand, not
a fixed 2), paired by seed when the arms share seeds, corrected (Holm or Tukey HSD) across several pairs.
When the interval straddles 0 the report gives the smallest difference the seeds could have detected,
so "no difference" is never read into too few seeds. Hit rates and Spearman correlations get
seed-bootstrap (or exact) intervals. Only numpy, scipy and the standard library: no torch, ray, mlflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class MeanInterval:
    mean: float | None
    sd: float | None  # sample std (ddof=1)
    n: int
    halfwidth: float | None  # t_{(1+conf)/2, n-1} * sd / sqrt(n); None for n < 2
    confidence: float


@dataclass(frozen=True)
class Difference:
    diff: float | None  # mean of a - b
    halfwidth: float | None
    n: int  # paired: seeds in both arms; unpaired: the smaller arm
    dof: float | None
    pvalue: float | None  # two-sided
    mdd: float | None  # smallest difference detectable at 80 % power with this n
    paired: bool
    confidence: float

    @property
    def low(self) -> float | None:
        return None if self.halfwidth is None else self.diff - self.halfwidth

    @property
    def high(self) -> float | None:
        return None if self.halfwidth is None else self.diff + self.halfwidth


@dataclass(frozen=True)
class PairComparison:
    a: str
    b: str
    diff: float  # mean(a) - mean(b)
    pvalue: float  # Tukey HSD, already corrected for all pairs
    low: float
    high: float


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float


@dataclass(frozen=True)
class Correlation:
    rho: float | None
    pvalue: float | None  # two-sided
    n: int
    exact: bool  # True: exact permutation p-value; False: scipy's t approximation


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval:
    """Mean with its t half-width: with 3 to 10 seeds a fixed 2 (or 1.96) understates the interval."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return MeanInterval(float(x[0]) if n else None, None, n, None, confidence)
    sd = float(np.std(x, ddof=1))
    t = stats.t.ppf((1 + confidence) / 2, n - 1)
    return MeanInterval(float(x.mean()), sd, n, float(t * sd / math.sqrt(n)), confidence)


def detection_power(diff: float, sd: float, n: int, *, paired: bool = True, alpha: float = 0.05) -> float:
    """Power of the two-sided t-test to detect a true difference `diff` (noncentral t).

    paired: n pairs, sd of the differences, dof n-1; unpaired: two arms of n each, sd per arm, dof 2n-2."""
    dof = n - 1 if paired else 2 * n - 2
    nc = diff / sd * math.sqrt(n if paired else n / 2)
    tcrit = stats.t.ppf(1 - alpha / 2, dof)
    # P(T < -c | nc) written as P(T > c | -nc): nct.cdf returns NaN deep in the lower tail at dof 1
    return float(stats.nct.sf(tcrit, dof, nc) + stats.nct.sf(tcrit, dof, -nc))


def min_detectable_difference(sd: float | None, n: int, *, paired: bool = True,
                              alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest true difference a two-sided t-test at level alpha detects with `power` at n seeds.

    What "cannot tell" means in numbers: a smaller difference could hide in the noise. Solved with the
    noncentral t, so at few seeds it is larger than the normal approximation."""
    dof = n - 1 if paired else 2 * n - 2
    if sd is None or dof < 1 or math.isnan(sd):
        return None
    if sd == 0:
        return 0.0

    def gap(effect: float) -> float:
        return detection_power(effect, 1.0, n, paired=paired, alpha=alpha) - power

    k = 1 if paired else 2
    hi = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * math.sqrt(k / n)
    while gap(hi) < 0:
        hi *= 2
    effect = optimize.brentq(gap, 0.0, hi, xtol=1e-13)
    return float(effect * sd)


def paired_difference(a: Mapping[Any, float], b: Mapping[Any, float], confidence: float = 0.95,
                      *, power: float = 0.8) -> Difference:
    """a - b over the seeds both arms share: pairing removes the seed-to-seed variance both arms have.

    The MDD is for a test at alpha = 1 - confidence, so it matches the interval printed beside it."""
    seeds = [s for s in a if s in b]
    d = [a[s] - b[s] for s in seeds]
    m = mean_interval(d, confidence)
    if m.n < 2:
        return Difference(m.mean, None, m.n, None, None, None, True, confidence)
    p = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue
    mdd = min_detectable_difference(m.sd, m.n, paired=True, alpha=1 - confidence, power=power)
    return Difference(m.mean, m.halfwidth, m.n, m.n - 1, _none_if_nan(p), mdd, True, confidence)


def unpaired_difference(a_values: Sequence[float], b_values: Sequence[float], confidence: float = 0.95,
                        *, power: float = 0.8) -> Difference:
    """Welch's a - b, for arms without shared seeds; its MDD uses the pooled sd and the smaller arm."""
    a, b = np.asarray(a_values, dtype=float), np.asarray(b_values, dtype=float)
    n = min(len(a), len(b))
    diff = float(a.mean() - b.mean()) if n else None
    if n < 2:
        return Difference(diff, None, n, None, None, None, False, confidence)
    r = stats.ttest_ind(a, b, equal_var=False)
    ci = r.confidence_interval(confidence)
    sd, _ = pooled_std([list(a), list(b)])
    mdd = min_detectable_difference(sd, n, paired=False, alpha=1 - confidence, power=power)
    return Difference(diff, _none_if_nan((ci.high - ci.low) / 2), n, _none_if_nan(r.df),
                      _none_if_nan(r.pvalue), mdd, False, confidence)


def pooled_std(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """Pooled sample std and its dof (sum of n_i - 1): one noise estimate from every arm's seeds."""
    used = [np.asarray(g, dtype=float) for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in used)
    if dof == 0:
        return None, 0
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in used)
    return math.sqrt(ss / dof), dof


def difference_of_means_halfwidth(sd: float, dof: int, n1: int, n2: int, confidence: float = 0.95) -> float:
    """Half-width of a difference of two means, t at the pooled dof: t * sd * sqrt(1/n1 + 1/n2)."""
    return float(stats.t.ppf((1 + confidence) / 2, dof) * sd * math.sqrt(1 / n1 + 1 / n2))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values in input order: family-wise error control, never weaker than Bonferroni."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def tukey_all_pairs(groups: Mapping[str, Sequence[float]], confidence: float = 0.95) -> list[PairComparison]:
    """Every pair (i < j in the given order) with Tukey HSD p-value and simultaneous interval."""
    names = list(groups)
    if len(names) < 2:
        raise ValueError("tukey_all_pairs needs at least two groups")
    res = stats.tukey_hsd(*[np.asarray(groups[k], dtype=float) for k in names])
    ci = res.confidence_interval(confidence)
    return [PairComparison(names[i], names[j], float(res.statistic[i, j]), float(res.pvalue[i, j]),
                           float(ci.low[i, j]), float(ci.high[i, j]))
            for i in range(len(names)) for j in range(i + 1, len(names))]


def bootstrap_interval(samples: Sequence[Any], statistic: Callable[[list], float | None], *,
                       n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile interval from resampling whole units (seeds, the independent unit) with replacement.

    Resamples where the statistic is undefined (None or NaN) are dropped."""
    items = list(samples)
    n = len(items)
    if n == 0:
        raise ValueError("bootstrap_interval needs at least one unit")
    rng = np.random.default_rng(seed)
    values = []
    for idx in rng.integers(0, n, size=(n_resamples, n)):
        v = statistic([items[i] for i in idx])
        if v is not None and not math.isnan(v):
            values.append(v)
    est = statistic(items)
    if not values:
        return Interval(est, None, None, n, confidence)
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(est, float(lo), float(hi), n, confidence)


def hit_rate_interval(hits: Sequence[bool], confidence: float = 0.95, method: str = "wilson") -> Interval:
    """Rate of hits with a binomial interval (Wilson by default: sane at 0 or n hits, unlike Wald)."""
    n = len(hits)
    if n == 0:
        raise ValueError("hit_rate_interval needs at least one outcome")
    k = sum(bool(h) for h in hits)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method=method)
    return Interval(k / n, float(ci.low), float(ci.high), n, confidence)


def spearman(a: Sequence[float], b: Sequence[float], *, exact_max_n: int = 8) -> Correlation:
    """Spearman rho, exact permutation p-value for n <= exact_max_n (the t approximation is poor there).

    rho is None below 3 points or for a constant input: undefined, not 0."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of the same length")
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(None, None, n, False)
    r = stats.spearmanr(x, y)
    if n > exact_max_n:
        return Correlation(float(r.statistic), _none_if_nan(r.pvalue), n, False)
    rx, ry = stats.rankdata(x), stats.rankdata(y)

    def pearson_of_ranks(u, v, axis=-1):  # permuting ranks keeps them ranks: rho = Pearson of ranks
        u = u - u.mean(axis=axis, keepdims=True)
        v = v - v.mean(axis=axis, keepdims=True)
        return (u * v).sum(axis=axis) / np.sqrt((u * u).sum(axis=axis) * (v * v).sum(axis=axis))

    # one sample permuted against the other fixed: its n! orders (two samples given to "pairings" would walk
    # (n!)^2 orders, the same p-value: 8 points took 23 GB)
    perm = stats.permutation_test((rx,), lambda u, axis=-1: pearson_of_ranks(u, ry, axis), permutation_type="pairings",
                                  vectorized=True, n_resamples=math.inf)
    return Correlation(float(r.statistic), float(perm.pvalue), n, True)


def difference_sentence(diff: float | None, halfwidth: float | None, n: int, mdd: float | None, *,
                        what: str = "PGD-20", unit: str = "points") -> str:
    """The plain-English verdict at the top of a report: helps, hurts, or cannot tell (with the MDD).

    Only an interval strictly on one side of 0 is a verdict; one touching 0 cannot tell."""
    seeds = f"{n} seed" + ("" if n == 1 else "s")
    if diff is None:
        return f"cannot tell on {what}: no seeds to compare"
    if halfwidth is not None and diff - halfwidth > 0:
        return f"helps {what} by {diff:.2f} ± {halfwidth:.2f} {unit}"
    if halfwidth is not None and diff + halfwidth < 0:
        return f"hurts {what} by {-diff:.2f} ± {halfwidth:.2f} {unit}"
    spread = f"{diff:.2f} ± {halfwidth:.2f}" if halfwidth is not None else f"{diff:.2f}, no interval"
    detect = (f"the smallest difference {seeds} could detect at 80 % power is {mdd:.2f} {unit}"
              if mdd is not None else f"{seeds} are too few to estimate the smallest detectable difference")
    return f"cannot tell on {what} at {seeds} ({spread}; {detect})"


def t_difference(diff: float, se: float | None, dof: int | None, n: int, *, confidence: float = 0.95,
                 power: float = 0.8, paired: bool = False) -> Difference:
    """A difference whose standard error comes from elsewhere (a pooled seed std, or a ground truth's): t interval
    and two-sided p at `dof`, and the smallest true difference that se and dof detect with `power`."""
    if se is None or not dof or dof < 1:
        return Difference(diff, None, n, dof, None, None, paired, confidence)
    if se == 0:
        return Difference(diff, 0.0, n, dof, 0.0 if diff else 1.0, 0.0, paired, confidence)
    alpha = 1 - confidence
    tcrit = float(stats.t.ppf(1 - alpha / 2, dof))
    p = float(2 * stats.t.sf(abs(diff) / se, dof))

    def gap(nc: float) -> float:
        return float(stats.nct.sf(tcrit, dof, nc) + stats.nct.sf(tcrit, dof, -nc)) - power

    hi = tcrit + 2 * float(stats.norm.ppf(power)) + 1
    while gap(hi) < 0:
        hi *= 2
    return Difference(diff, tcrit * se, n, dof, p, float(optimize.brentq(gap, 0.0, hi, xtol=1e-12)) * se, paired, confidence)
