"""A selection policy judged the way docs/statistics.md states claims: expected regret on seeds it did not train, against controls.

Used by bench.asha_simulation and bench.prescreen_replay. A *policy* runs one replayed sweep: given `curve_of(arm)`
(that arm's recorded validation curve at the sweep's seed) and a random generator, it returns the choice the sweep
would export and the epochs it trained. One draw: the sweep's seed is drawn from the seed list (every trial at that
seed, as teacher.yaml fixes `trial.seed`), the policy runs, and its pick is scored on the test-split means of the
*other* seeds (the seeds the sweep did not train):

- regret: the best choice's mean minus the pick's (points of test PGD-20, >= 0; 0 when the best is picked),
- the best choice picked, a choice within the noise of the best picked (paired t-test by seed, Holm),
- the trained epochs, as a fraction of the ground truth's (every choice x every seed x every epoch).

Intervals: seed bootstrap. The seed list is resampled with replacement, every policy is replayed on the same
resample (a quarter of the draws), and the 2.5 / 97.5 percentiles are taken; a policy's regret minus its random
control's is taken within each resample, so that difference is paired too. The controls (docs/statistics.md: a random choice
at the same budget, always the reference, and the selector's worst pick): K random teachers + the baseline (the
prescreen's K), the baseline alone, the proxy's K worst-ranked teachers + the baseline.

Other reference arms (`extra`, e.g. a pseudo-label baseline a sweep also never stops) join the baseline in every
control that keeps it. A cell whose arms are its sweep's `teacher` values (`load_cell`, as bench.regime_map reads
one) can be scored by another objective (`objective_data`: balanced = (clean + PGD-20) / 2 of the test accuracies);
then ASHA still stops on validation PGD-20 and a trial keeps its best epoch by it, but the pick is the trial whose
kept epoch scores best on the objective's validation value (`Curve`), as `report.objective` exports
(rslad_tune.sweep.two_axes.best_trial).
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler
from scipy import stats as sps

from rslad_tune.sweep import stats
from rslad_tune.sweep.scheduling import asha_scheduler
from rslad_tune.sweep.two_axes import score as objective_score
from rslad_tune.trial.files import read_json

CurveOf = Callable[[str], list[float]]


class Curve(NamedTuple):
    """A trial's validation curves when the pick's metric is not the one ASHA stops on: ASHA reads `stop`
    (validation PGD-20), the trial keeps its first epoch best by `stop` (the checkpoint the trainer keeps), and
    the pick is the trial whose kept epoch has the highest `pick` (e.g. validation (clean + PGD-20) / 2)."""
    stop: list[float]
    pick: list[float]


def kept_value(curve: list[float] | Curve, epochs: int) -> float:
    """What ranks a trial that ran `epochs` epochs for the pick: its best value (a plain curve), or its kept
    epoch's `pick` value (a Curve)."""
    if isinstance(curve, Curve):
        return curve.pick[max(range(epochs), key=lambda i: curve.stop[i])]
    return max(curve[:epochs])


# the trials ASHA decides (their arms and curve objects, in order) and the settings -> (their epochs, those curve
# objects: held so that their ids are not reused while the entry lives)
_DECIDED: dict = {}


def replay(curves: list[tuple[str, list[float]]], grace: int, rf: float, max_t: int,
           references: set[str] = frozenset()) -> tuple[str, int, list[str]]:
    """One sweep through the tool's own scheduler (sweep/scheduling.py: Ray's AsyncHyperBandScheduler, reference arms
    passed through): the trials report their recorded validation curves epoch by epoch, one trial after another,
    until the scheduler stops them. Returns (the arm of the best trial by its best validation PGD-20 over the epochs
    it ran (a `Curve`: by its kept epoch's pick value): what the export ships, the epochs trained, the arms with a
    trial that ran every epoch).

    Remembered: a reference arm is never stopped and stays out of the rungs, so the epochs of the other trials
    depend only on their own order and curves (the same objects, not changed in place); the bootstrap replays each
    such order many times. The pick is taken on the full order every time (ties go to the earlier trial)."""
    references = frozenset(references)
    decided = [(a, c) for a, c in curves if a not in references]
    key = (tuple((a, id(c)) for a, c in decided), grace, rf, max_t, references)
    hit = _DECIDED.get(key)
    if hit is None or any(c is not kept for (_, c), kept in zip(decided, hit[1])):
        if len(_DECIDED) >= 1_000_000:
            _DECIDED.clear()
        lengths = _epochs(curves, grace, rf, max_t, references)
        _DECIDED[key] = ([n for (a, _), n in zip(curves, lengths) if a not in references], [c for _, c in decided])
    else:
        ran = iter(hit[0])
        lengths = [max_t if a in references else next(ran) for a, _ in curves]
    best = max(range(len(curves)), key=lambda i: kept_value(curves[i][1], lengths[i]))
    return curves[best][0], sum(lengths), sorted({curves[i][0] for i in range(len(curves)) if lengths[i] == max_t})


def _epochs(curves: list[tuple[str, list[float]]], grace: int, rf: float, max_t: int,
            references: set[str]) -> list[int]:
    """The epochs each trial runs when the tool's scheduler sees the curves in this order."""
    scheduler = asha_scheduler(max_t, grace, rf, set(references))
    scheduler.set_search_properties("pgd_acc", "max")
    lengths = []
    for i, (arm, curve) in enumerate(curves):
        trial = SimpleNamespace(trial_id=str(i), config={"teacher": arm})
        scheduler.on_trial_add(None, trial)
        stop, reported = max_t, curve.stop if isinstance(curve, Curve) else curve
        for epoch in range(1, max_t + 1):
            if scheduler.on_trial_result(None, trial, {"training_iteration": epoch, "pgd_acc": reported[epoch - 1]}) \
                    == TrialScheduler.STOP and epoch < max_t:
                stop = epoch
                break
        lengths.append(stop)
    return lengths


@dataclass
class Policy:
    name: str
    run: Callable[[CurveOf, random.Random], tuple[str, int]]  # -> (pick, trained epochs)
    kept: str = ""           # what it trains, in words
    control: bool = False
    k: int | None = None     # the prescreen's K (its random control has the same)
    random_control: str | None = None  # the name of the control it is measured against


def race(kept: list[str], grace: int, rf: int, max_t: int, references: set[str]) -> Callable:
    """One trial per kept choice in a shuffled order, through the tool's scheduler (reference arms never stopped)."""
    def run(curve_of: CurveOf, rng: random.Random) -> tuple[str, int]:
        order = rng.sample(kept, len(kept))
        pick, used, _ = replay([(a, curve_of(a)) for a in order], grace, rf, max_t, references)
        return pick, used
    return run


def random_race(teachers: list[str], k: int, baseline: str, grace: int, rf: int, max_t: int,
                extra: tuple[str, ...] = ()) -> Callable:
    """k teachers drawn at random each sweep, and the baseline (and the `extra` reference arms), raced as the
    prescreen's kept set is."""
    def run(curve_of: CurveOf, rng: random.Random) -> tuple[str, int]:
        return race(rng.sample(teachers, k) + [baseline, *extra], grace, rf, max_t, {baseline, *extra})(curve_of, rng)
    return run


def baseline_alone(baseline: str, max_t: int) -> Callable:
    return lambda curve_of, rng: (baseline, max_t)


def controls(teachers_by_proxy: list[str], k: int, baseline: str, by: str, grace: int, rf: int, max_t: int,
             random_name: str, extra: tuple[str, ...] = ()) -> list[Policy]:
    """The random control at K and the proxy's worst K (`teachers_by_proxy`: best first), each with the baseline
    and the `extra` reference arms."""
    worst, refs = teachers_by_proxy[-k:], [baseline, *extra]
    return [Policy(random_name, random_race(teachers_by_proxy, k, baseline, grace, rf, max_t, tuple(extra)),
                   f"{k} random teacher{'s' * (k > 1)} + {' + '.join(refs)}", control=True, k=k),
            Policy(f"control: {by}'s worst {k} + {' + '.join(refs)}", race(worst + refs, grace, rf, max_t, set(refs)),
                   ", ".join(worst + refs), control=True, k=k)]


def near_best(pgd: dict, order: list[str]) -> list[str]:
    """order[0] (the best mean) and every choice not worse than it beyond the noise: paired t-test over the seeds both
    share, Holm over the comparisons with the best (p >= 0.05 after Holm: within the noise)."""
    best, ps = pgd[order[0]], []
    for a in order[1:]:
        seeds = [s for s in best if s in pgd[a]]
        p = sps.ttest_rel([best[s] for s in seeds], [pgd[a][s] for s in seeds]).pvalue if len(seeds) > 1 else None
        ps.append(1.0 if p is None or p != p else float(p))
    return order[:1] + [a for a, p in zip(order[1:], stats.holm(ps)) if p >= 0.05]


@dataclass
class _Truth:
    means: dict[str, float]
    best: str
    near: set[str] = field(default_factory=set)


def _truths(pgd: dict, choices: list[str], seed_list: list[int]) -> dict[int, _Truth]:
    """Per sweep seed: the held-out seeds' means, the best choice and those within its noise (an entry of a
    resampled list is one unit: a seed drawn twice counts twice)."""
    out = {}
    for s in set(seed_list):
        held = [i for i, x in enumerate(seed_list) if x != s]
        if not held:
            continue
        sub = {a: {i: pgd[a][seed_list[i]] for i in held} for a in choices}
        means = {a: statistics.fmean(v.values()) for a, v in sub.items()}
        order = sorted(choices, key=lambda a: -means[a])
        out[s] = _Truth(means, order[0], set(near_best(sub, order)))
    return out


_KEYS = ("regret", "p_best", "p_within_noise", "epochs", "within_is_baseline")


def _play(policies: list[Policy], pgd: dict, curves: dict, choices: list[str], seed_list: list[int], draws: int,
          rng: random.Random, baseline: str, picks: dict | None = None) -> dict[str, list[float]] | None:
    truths = _truths(pgd, choices, seed_list)
    usable = [s for s in seed_list if s in truths]
    if not usable:
        return None
    out = {}
    for p in policies:
        tot = [0.0] * len(_KEYS)
        for _ in range(draws):
            s = rng.choice(usable)
            t = truths[s]
            pick, used = p.run(lambda a: curves[a][s], rng)
            if picks is not None:
                shares = picks.setdefault(p.name, {})
                shares[pick] = shares.get(pick, 0) + 1
            for i, v in enumerate((t.means[t.best] - t.means[pick], pick == t.best, pick in t.near, used,
                                   (pick in t.near) == (pick == baseline))):
                tot[i] += v
        out[p.name] = [v / draws for v in tot]
    return out


def _interval(xs: list[float]) -> list[float]:
    xs = sorted(xs)
    return [xs[int(0.025 * len(xs))], xs[max(0, int(0.975 * len(xs)) - 1)]]


def score(policies: list[Policy], pgd: dict, curves: dict, choices: list[str], baseline: str, *, max_t: int,
          draws: int = 400, boots: int = 200, seed: int = 0, metric: str | None = None, picks: bool = False) -> dict:
    """Every policy's row (point estimates over `draws` draws, seed-bootstrap intervals) on the seeds all choices
    share; rows of policies with a random control carry their regret minus the control's. `pgd`: the score a
    choice is judged by (test PGD-20 unless `metric` names another); `picks`: each row also carries the share of
    the point estimate's sweeps that picked each choice."""
    seeds = sorted(set.intersection(*(set(pgd[a]) & set(curves[a]) for a in choices)))
    rng = random.Random(seed)
    shares: dict | None = {} if picks else None
    point = _play(policies, pgd, curves, choices, seeds, draws, rng, baseline, shares)
    samples = [r for r in (_play(policies, pgd, curves, choices, [rng.choice(seeds) for _ in seeds], max(1, draws // 4),
                                 rng, baseline) for _ in range(boots)) if r is not None]
    full = len(choices) * len(seeds) * max_t
    rows = []
    for p in policies:
        row = {"policy": p.name, "kept": p.kept, "control": p.control, "k": p.k, "random_control": p.random_control}
        for i, key in enumerate(_KEYS):
            row[key] = point[p.name][i]
            row[key + "_interval"] = _interval([s[p.name][i] for s in samples])
        row["compute_fraction"] = row["epochs"] / full
        if p.random_control:
            q = point[p.random_control][0]
            row["regret_minus_random"] = row["regret"] - q
            row["regret_minus_random_interval"] = _interval([s[p.name][0] - s[p.random_control][0] for s in samples])
        if shares is not None:
            row["picks"] = {a: n / draws for a, n in sorted(shares[p.name].items(), key=lambda kv: (-kv[1], kv[0]))}
        rows.append(row)
    means = {a: statistics.fmean(pgd[a][s] for s in seeds) for a in choices}
    order = sorted(choices, key=lambda a: -means[a])
    out = {"seeds": seeds, "choices": order, "means": means, "near_best_all_seeds": near_best(only(pgd, seeds), order),
           "baseline": baseline, "draws": draws, "bootstraps": len(samples), "ground_truth_epochs": full, "rows": rows}
    return out | ({"metric": metric} if metric else {})


def only(pgd: dict, seeds: list[int]) -> dict:
    return {a: {s: v[s] for s in seeds} for a, v in pgd.items()}


def verdicts(result: dict) -> list[str]:
    """For each policy measured against a random control: whether it beats it beyond the bootstrap noise (the
    interval of its regret minus the control's lies below 0), is beaten by it (above 0), or neither."""
    out = []
    for r in result["rows"]:
        if not r.get("random_control"):
            continue
        d, (lo, hi) = r["regret_minus_random"], r["regret_minus_random_interval"]
        word = ("beats the random control beyond the bootstrap noise" if hi < 0 else
                "is worse than the random control beyond the bootstrap noise" if lo > 0 else
                "does not beat the random control beyond the bootstrap noise")
        out.append(f"{r['policy']} {word}: regret {d:+.2f} points against it (95 % seed bootstrap {lo:+.2f} to {hi:+.2f}).")
    return out


def markdown(result: dict) -> list[str]:
    """The table: one row per policy and control."""
    seeds, b = result["seeds"], result["baseline"]
    near = result["near_best_all_seeds"]
    picks = all("picks" in r for r in result["rows"])
    md = [f"Choices on seeds {seeds} ({result.get('metric', 'test PGD-20')} on all 10,000 test images, mean): " + ", ".join(
              f"{a} {result['means'][a]:.2f}" for a in result["choices"]) + ".", "",
          f"Within the noise of the best choice on all these seeds (paired, Holm): {', '.join(near)} "
          f"({len(near)} of {len(result['choices'])}).", "",
          "| policy | trains | regret, points (95 % CI) | minus the random control's | best choice picked | "
          "within the noise of the best | within noise = picked " + b + " | epochs | compute |"
          + (" picks |" if picks else ""),
          "|---|---|---|---|---|---|---|---|---|" + ("---|" if picks else "")]

    def ci(r: dict, key: str, pct: bool = False) -> str:
        f = (lambda v: f"{100 * v:.0f}") if pct else (lambda v: f"{v:.2f}")
        lo, hi = r[key + "_interval"]
        return f"{f(r[key])}{' %' if pct else ''} ({f(lo)}–{f(hi)})"
    for r in result["rows"]:
        vs = "–" if "regret_minus_random" not in r else (
            f"{r['regret_minus_random']:+.2f} ({r['regret_minus_random_interval'][0]:+.2f} to "
            f"{r['regret_minus_random_interval'][1]:+.2f})")
        md.append(f"| {r['policy']} | {r['kept']} | {ci(r, 'regret')} | {vs} | {ci(r, 'p_best', True)} | "
                  f"{ci(r, 'p_within_noise', True)} | {100 * r['within_is_baseline']:.0f} % | {r['epochs']:.1f} | "
                  f"{100 * r['compute_fraction']:.1f} % |" + (" " + ", ".join(
                      f"{a} {100 * v:.0f} %" for a, v in r["picks"].items()) + " |" if picks else ""))
    md += ["", f"Each row: {result['draws']} replayed sweeps, each on one seed's validation curves (the order of its "
               "trials shuffled), scored on the test-split means of the other seeds; 95 % seed-bootstrap intervals "
               f"({result['bootstraps']} resamples, {max(1, result['draws'] // 4)} sweeps each). Regret: the best choice's "
               "held-out mean minus the pick's. \"within noise = picked " + b + "\": the share of sweeps in which the "
               "pick was within the noise of the best exactly when it was " + b + ". Compute: trained epochs / "
               f"{result['ground_truth_epochs']} (every choice x every seed x every epoch)."
           + (" Picks: the share of the row's sweeps that exported each choice." if picks else "")]
    return md


def provenance(module: str, inputs: list) -> tuple[str, dict]:
    """The generated page's line naming the command, commit and date (and whether the code or an input differed from
    that commit), and the same for its JSON."""
    import subprocess
    import sys

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "bench", "rslad_tune",
                            *(str(p) for p in inputs if p)], capture_output=True, text=True).stdout.strip()
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    command = f"python -m {module} " + " ".join(sys.argv[1:])
    commit += " with uncommitted changes" if dirty else ""
    return f"`{command}` (commit {commit}, {date}).", {"command": command, "commit": commit, "date": date}


OBJECTIVES = {"pgd": "test PGD-20", "balanced": "test (clean + PGD-20) / 2"}
PICKED_BY = {
    "pgd": "The pick: the trial with the best validation PGD-20 over the epochs it ran (`report.objective: pgd`, the "
           "tool's default); regret in points of test PGD-20.",
    "balanced": "The pick: the trial whose kept epoch (its best by validation PGD-20) has the best validation "
                "(clean + PGD-20) / 2 (`report.objective: balanced`, as {space} exports); ASHA still stops on "
                "validation PGD-20. Regret in points of test (clean + PGD-20) / 2."}


def load_cell(folders: list[Path]) -> dict[str, dict]:
    """The archived trials of one sweep whose arms are its `teacher` values (a trial without one is `none`, as
    bench.regime_map reads a cell): "pgd" and "clean": arm -> {seed: test accuracy, points, best checkpoint};
    "val_pgd" and "val_clean": arm -> {seed: the validation curve, one value per epoch}."""
    out: dict[str, dict] = {k: {} for k in ("pgd", "clean", "val_pgd", "val_clean")}
    for f in sorted(f for folder in folders for f in Path(folder).glob("*.json")):
        if f.name == "sweep.json":
            continue
        r = read_json(f)
        if not r.get("suite"):
            continue
        arm, seed = r["config"].get("teacher") or "none", r["config"]["seed"]
        for key, v in (("pgd", 100 * r["suite"]["PGD_SAT"]), ("clean", 100 * r["suite"]["Clean"]),
                       ("val_pgd", [h["pgd_acc"] for h in r["history"]]),
                       ("val_clean", [h["clean_acc"] for h in r["history"]])):
            out[key].setdefault(arm, {})[seed] = v
    return out


def objective_data(cell: dict, objective: str, clean_weight: float = 0.5) -> tuple[dict, dict]:
    """arm -> {seed: the objective's test score} and arm -> {seed: validation curve}: for pgd the test PGD-20 and
    the PGD-20 curves (as bench.should_distill.load_arms gives); otherwise the objective's score
    (rslad_tune.sweep.two_axes.score) and a Curve that stops on validation PGD-20 and picks by the objective."""
    if objective == "pgd":
        return cell["pgd"], cell["val_pgd"]
    truth = {a: {s: objective_score(v, cell["clean"][a][s], objective, clean_weight) for s, v in seeds.items()}
             for a, seeds in cell["pgd"].items()}
    curves = {a: {s: Curve(v, [objective_score(p, c, objective, clean_weight)
                               for p, c in zip(v, cell["val_clean"][a][s])]) for s, v in seeds.items()}
              for a, seeds in cell["val_pgd"].items()}
    return truth, curves


@dataclass
class CellReplay:
    """What a replay of a sweep YAML on a regime cell needs (add_cell_arguments, load_cell_replay)."""
    teachers: list[str]
    baseline: str
    extra: tuple[str, ...]
    grace: int
    rf: int
    max_t: int
    space: str                          # the YAML's file name, for the rows' labels
    proxies: dict[str, dict]
    proxies_from: str
    data: dict[str, tuple[dict, dict]]  # objective -> (arm -> {seed: test score}, arm -> {seed: curve})

    @property
    def choices(self) -> list[str]:
        return self.teachers + [self.baseline, *self.extra]

    def record(self, args) -> dict:
        """The replay's inputs, for the generated JSON."""
        return {"cell": [str(a) for a in args.cell], "space": str(args.space), "proxies": self.proxies,
                "proxies_from": self.proxies_from,
                "proxies_sign": "nll and ece negated (bench.proxy_test.proxy_values): larger is predicted better"}


def add_cell_arguments(ap) -> None:
    g = ap.add_argument_group("a regime cell (instead of --old and --arm)")
    g.add_argument("--cell", type=Path, action="append", default=[],
                   help="archives of one sweep whose arms are its `teacher` values (results/regime_...)")
    g.add_argument("--space", type=Path, help="with --cell: the sweep YAML replayed on it (its ASHA grace period and "
                   "reduction factor; its reference arms must be --baseline and --reference); each zoo teacher's "
                   "proxies are computed on its data here, in memory")
    g.add_argument("--baseline", default="none", help="with --cell: the baseline arm (default none)")
    g.add_argument("--reference", action="append", default=[],
                   help="with --cell: another reference arm, never stopped and kept by every policy and control")
    g.add_argument("--objective", action="append", choices=list(OBJECTIVES),
                   help="with --cell: what picks and scores the choice; several: one section each (default pgd)")


def load_cell_replay(args, zoo: Path) -> CellReplay:
    """The cell's choices (zoo teachers, the baseline, the other reference arms), its objectives' data, the YAML's
    ASHA settings and the teachers' proxies on its data."""
    from bench.proxy_test import proxies_on_space
    from rslad_tune.sweep.spec import load_sweep

    if not args.space:
        raise SystemExit("--cell needs --space: the sweep YAML replayed on the cell")
    spec = load_sweep(str(args.space), sweep=False)
    cell = load_cell(args.cell)
    refs = [args.baseline, *args.reference]
    if set(refs) != spec.references:
        raise SystemExit(f"{args.space.name}'s reference arms are {sorted(spec.references)}, not --baseline and "
                         f"--reference {refs}")
    if spec.tune.scheduler != "asha":
        raise SystemExit(f"{args.space.name} does not run ASHA (tune.scheduler {spec.tune.scheduler})")
    teachers = sorted(a for a in cell["pgd"] if a not in refs)
    missing = [a for a in teachers if not (zoo / a / "card.json").exists()] + [a for a in refs if a not in cell["pgd"]]
    if missing:
        raise SystemExit(f"arms neither a zoo teacher in {zoo} nor a reference arm, or references not archived: {missing}")
    curves = [c for a in teachers + refs for c in cell["val_pgd"][a].values()]
    proxies, where = proxies_on_space(args.space, zoo, teachers)
    return CellReplay(teachers, args.baseline, tuple(args.reference), spec.tune.grace_period,
                      int(spec.tune.reduction_factor), min(len(c) for c in curves), args.space.name, proxies, where,
                      {o: objective_data(cell, o, spec.report.clean_weight or 0.5) for o in args.objective or ["pgd"]})


def cell_markdown(title: str, head: str, c: CellReplay, results: dict[str, dict], notes: list[str]) -> str:
    """The page of a replay on a cell: one section per objective (its table, notes and verdicts)."""
    proxies = "; ".join(f"{t} " + ", ".join(f"{k} {v:.4f}" for k, v in c.proxies[t].items() if k in ("true_prob",
                                                                                                     "clean_acc"))
                        for t in sorted(c.teachers, key=lambda t: -c.proxies[t]["true_prob"]))
    md = [f"# {title}", "", head, "",
          f"Choices: {', '.join(c.teachers)} (zoo teachers) and the reference arms {', '.join([c.baseline, *c.extra])} "
          f"(never stopped by ASHA, out of its rungs), {c.max_t} epochs; ASHA grace {c.grace}, reduction factor "
          f"{c.rf} ({c.space}'s). Proxies ({c.proxies_from}): {proxies}.", ""] + notes
    for objective, result in results.items():
        md += ["", f"## Judged by {OBJECTIVES[objective]}", "", PICKED_BY[objective].format(space=c.space), ""] + \
            markdown(result) + [""] + [
            f"- {v}" for v in verdicts(result)]
    return "\n".join(md)
