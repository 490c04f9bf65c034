"""Should I distil at all, and from which teacher? The 9-seed ground truth with the statistics of docs/statistics.md.

    python -m bench.should_distill --old docs/teacher-selection/ground-truth.json \
        --arm results/baseline_groundtruth --arm results/teacher_groundtruth_fresh --arm results/labels_groundtruth \
        [--sweep runs/teacher] [--fresh 3,4,5,6,7,8] [--out docs/should-distill/ground-truth]

Arms: each teacher's RSLAD students (teacher_groundtruth*.yaml), the student trained with SAT alone (`none`,
baseline_groundtruth.yaml) and the label teacher (`labels`, labels_groundtruth.yaml), all at teacher.yaml's
equal-hyper-parameter point (alpha 0.75, epsilon 0.1, 6 epochs). Seeds 0-2 of the six teachers come from the
first ground truth (`--old`); every other number from the archived trials (`--arm`, written by
bench.archive_trials: test PGD-20 on all 10,000 test images, best checkpoint, attack seed 0).

Reported: each arm's mean with its 95 % t-interval; the pooled seed std and its dof; every arm minus the baseline,
paired by seed, Holm-corrected; the label teacher against natural_w16; Tukey HSD over every pair; the size question
(same recipe, largest minus smallest, paired) with the minimum detectable difference; Spearman of teacher size
with student robustness (exact p, seed-bootstrap interval). A sweep (`--sweep`, after its selection report) is
scored against the `--fresh` seeds only, which no run of teacher.yaml trains: its pick, whether the pick is
within the noise of the best (not worse beyond the noise, Holm over the comparisons with the best), the Spearman
of its report's ranking with the ground truth's (seed-bootstrap interval), and its compute. ASHA's replay
(bench.asha_simulation's rule) on the fresh curves gives hit rates with seed-bootstrap intervals.
"""
from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

from bench.selection_regret import replay
from rslad_tune.sweep import stats
from rslad_tune.sweep.layout import ExperimentDir
from rslad_tune.trial.files import read_json, write_json, write_text

BASELINE, LABELS = "none", "labels"


def _rho(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho alone (no p-value): the statistic a bootstrap resamples thousands of times."""
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return None if r != r else float(r)


def arm_name(config: dict) -> str:
    if config.get("method") == "sat":
        return BASELINE
    return config.get("teacher") or "?"


def load_arms(old: Path | None, arms: list[Path]) -> tuple[dict, dict]:
    """arm -> {seed: test PGD-20 points}, and arm -> {seed: validation curve}."""
    pgd: dict[str, dict[int, float]] = {}
    curves: dict[str, dict[int, list[float]]] = {}
    if old:
        gt = read_json(old, "--old")["ground_truth"]
        for name, row in gt["table"].items():
            pgd.setdefault(name, {}).update(dict(zip(row["seeds"], row["pgd20"])))
        for h in gt["histories"]:
            curves.setdefault(h["teacher"], {})[h["seed"]] = h["val_pgd"]
    for d in arms:
        for f in sorted(d.glob("*.json")):
            if f.name == "sweep.json":
                continue
            r = read_json(f)
            if not r.get("suite"):
                continue
            name = LABELS if str(r["config"].get("teacher", "")).startswith("labels") else arm_name(r["config"])
            pgd.setdefault(name, {})[r["config"]["seed"]] = 100 * r["suite"]["PGD_SAT"]
            curves.setdefault(name, {})[r["config"]["seed"]] = [h["pgd_acc"] for h in r["history"]]
    return pgd, curves


def only(pgd: dict, seeds: set[int] | None) -> dict:
    return {a: {s: v for s, v in vals.items() if seeds is None or s in seeds} for a, vals in pgd.items()}


def _diff(a: dict, b: dict) -> dict:
    d = stats.paired_difference(a, b)
    return {"diff": d.diff, "halfwidth": d.halfwidth, "n": d.n, "p": d.pvalue, "mdd": d.mdd}


def analyse(pgd: dict, cards: dict, light: bool = False) -> dict:
    """Every number of the ground truth's verdict from arm -> {seed: PGD-20} (light: ranking and near-best only)."""
    pgd = {a: v for a, v in pgd.items() if v}
    arms = sorted(pgd, key=lambda a: -statistics.fmean(pgd[a].values()))
    table = {}
    for a in arms:
        m = stats.mean_interval(list(pgd[a].values()))
        table[a] = {"seeds": sorted(pgd[a]), "mean": m.mean, "sd": m.sd, "halfwidth": m.halfwidth, "n": m.n}
    sd, dof = stats.pooled_std([list(v.values()) for v in pgd.values()])
    teachers = [a for a in arms if a not in (BASELINE, LABELS)]
    out = {"table": table, "ranking": arms, "teacher_ranking": teachers, "pooled_std": sd, "pooled_dof": dof}
    if light:
        return out | {"near_best": _near(pgd, teachers)}
    if BASELINE in pgd:
        vs = [dict(_diff(pgd[a], pgd[BASELINE]), arm=a) for a in arms if a != BASELINE]
        for c, p in zip(vs, stats.holm([1.0 if c["p"] is None else c["p"] for c in vs])):
            c["p_holm"], c["beyond_noise"] = p, p < 0.05
        out["vs_baseline"] = vs
    if LABELS in pgd and "natural_w16" in pgd:
        out["labels_vs_natural_w16"] = _diff(pgd[LABELS], pgd["natural_w16"])
    if len(arms) > 1 and all(len(v) > 1 for v in pgd.values()):
        out["tukey"] = [vars(c) for c in stats.tukey_all_pairs({a: list(pgd[a].values()) for a in arms})]
    if teachers:
        out["vs_best"] = _vs_best(pgd, teachers)
        out["near_best"] = _near(pgd, teachers)
    families = {}
    for a in teachers:
        if a in cards and cards[a].get("recipe"):
            families.setdefault(cards[a]["recipe"]["method"], []).append(a)
    out["size"] = []
    for method, members in sorted(families.items()):
        if len({cards[a]["params"] for a in members}) > 1:
            big = max(members, key=lambda a: cards[a]["params"])
            small = min(members, key=lambda a: cards[a]["params"])
            out["size"].append(dict(_diff(pgd[big], pgd[small]), family=method, larger=big, smaller=small))
    sized = [a for a in teachers if a in cards]
    rho = stats.spearman([cards[a]["params"] for a in sized], [table[a]["mean"] for a in sized])  # exact p
    seeds = sorted(set.intersection(*[set(pgd[a]) for a in sized])) if sized else []
    boot = stats.bootstrap_interval(seeds, lambda ss: _rho(
        [cards[a]["params"] for a in sized], [statistics.fmean(pgd[a][s] for s in ss) for a in sized])) if len(sized) > 2 else None
    out["size_spearman"] = {"rho": rho.rho, "p_exact": rho.pvalue, "n": rho.n,
                            "bootstrap": [boot.low, boot.high] if boot else None}
    return out


def _vs_best(pgd: dict, teachers: list[str]) -> list[dict]:
    near = [dict(_diff(pgd[teachers[0]], pgd[a]), arm=a) for a in teachers[1:]]
    for c, p in zip(near, stats.holm([1.0 if c["p"] is None else c["p"] for c in near])):
        c["p_holm"], c["beyond_noise"] = p, p < 0.05
    return near


def _near(pgd: dict, teachers: list[str]) -> list[str]:
    """The best teacher and those not worse than it beyond the noise (paired, Holm)."""
    return teachers[:1] + [c["arm"] for c in _vs_best(pgd, teachers) if not c["beyond_noise"]]


def score_sweep(exp: ExperimentDir, truth: dict, pgd: dict, gt_epochs: int) -> dict:
    """The sweep against the ground truth of seeds it did not train."""
    sel = read_json(exp.path / "selection.json", "selection.json (run `rslad-tune report` on the sweep first)")
    # the sweep's answer: the teacher (or the baseline) of its best student by validation PGD-20 among the students
    # that trained every epoch, which is what it exports
    full = [r for r in sel["rows"] if r["students"]]
    pick = max(((s["val_pgd"], r["teacher"]) for r in full for s in r["students"]), default=(None, None))[1]
    choices = [a for a in truth["ranking"] if a in {r["teacher"] for r in sel["rows"]}]
    ranking = sel["verdict"]["ranking"]
    common = [a for a in truth["teacher_ranking"] if a in ranking]
    rho = stats.spearman([-ranking.index(a) for a in common], [truth["table"][a]["mean"] for a in common])
    seeds = sorted(set.intersection(*[set(pgd[a]) for a in common])) if common else []
    boot = stats.bootstrap_interval(seeds, lambda ss: _rho(
        [-ranking.index(a) for a in common], [statistics.fmean(pgd[a][s] for s in ss) for a in common])) if len(common) > 2 else None
    used = sum(t.result.get("epoch", 0) for t in exp.trials())
    return {"experiment": str(exp.path), "sweep_seeds": sorted({t.config.get("seed") for t in exp.trials()}),
            "pick": pick, "gt_best": choices[0], "pick_is_best": pick == choices[0],
            "pick_within_noise": pick in _near(pgd, choices), "near_best": _near(pgd, choices), "ranking": ranking,
            "undecided": sel["verdict"]["undecided"],
            "spearman": rho.rho, "spearman_p_exact": rho.pvalue, "spearman_bootstrap": [boot.low, boot.high] if boot else None,
            "should_distill": sel["verdict"].get("should_distill", {}).get("case"),
            "epochs_trained": used, "compute_fraction": used / gt_epochs}


def asha_replay(curves: dict, truth: dict, *, grace: int = 3, rf: int = 2, n: int = 7, draws: int = 500,
                boots: int = 200, seed: int = 0) -> dict:
    """teacher.yaml's sweep replayed on the recorded curves (teachers' order shuffled), hit rates with a seed-bootstrap
    interval: each bootstrap resamples every arm's seeds (curves and test numbers) and re-derives the ground truth."""
    rng = random.Random(seed)
    arms = [a for a in curves if a != LABELS and len(curves[a]) > 1]  # teacher.yaml's choices: the baseline is one
    max_t = min(len(c) for a in arms for c in curves[a].values())

    def rates(cv: dict, best: str, near: set[str]) -> tuple[float, float, float]:
        hit = within = epochs = 0
        for _ in range(draws):
            order = rng.sample(arms, len(arms))
            order = order[:n] + [rng.choice(arms) for _ in range(n - len(arms))]
            picked, used, _ = replay([(a, rng.choice(cv[a])) for a in order], grace, rf, max_t)
            hit += picked == best
            within += picked in near
            epochs += used
        return hit / draws, within / draws, epochs / draws

    def truth_of(pg: dict) -> tuple[str, set[str]]:  # the best choice of teacher.yaml (the baseline is one) and its noise
        order = sorted((a for a in arms if pg.get(a)), key=lambda a: -statistics.fmean(pg[a].values()))
        return order[0], set(_near(pg, order))

    point = rates({a: list(curves[a].values()) for a in arms}, *truth_of(truth_pgd))
    # one resampled seed list for every arm: the ground truth's comparisons are paired by seed, so a bootstrap that
    # drew each arm's seeds independently would break the pairs and widen every noise band
    common = sorted(set.intersection(*(set(curves[a]) & set(truth_pgd.get(a, {})) for a in arms)))
    samples = []
    for _ in range(boots):
        ss = [rng.choice(common) for _ in common]
        boot_pgd = {a: {i: truth_pgd[a][s] for i, s in enumerate(ss)} for a in arms}
        samples.append(rates({a: [curves[a][s] for s in ss] for a in arms}, *truth_of(boot_pgd)))
    lo = lambda i: sorted(s[i] for s in samples)[int(0.025 * boots)]  # noqa: E731
    hi = lambda i: sorted(s[i] for s in samples)[int(0.975 * boots) - 1]  # noqa: E731
    best, near = truth_of(truth_pgd)
    return {"best": best, "near_best": sorted(near), "grace_period": grace, "reduction_factor": rf, "num_samples": n,
            "draws": draws, "bootstraps": boots,
            "p_best": point[0], "p_best_interval": [lo(0), hi(0)], "p_within_noise": point[1],
            "p_within_noise_interval": [lo(1), hi(1)], "epochs": point[2], "arms": arms,
            "curves_per_arm": {a: len(curves[a]) for a in arms}}


truth_pgd: dict = {}  # the test numbers asha_replay's bootstrap resamples (set by main)


def _pm(c: dict) -> str:
    hw = "–" if c["halfwidth"] is None else f"{c['halfwidth']:.2f}"
    return f"{c['diff']:+.2f} ± {hw}"


def markdown(full: dict, fresh: dict, sweeps: list[dict], asha: dict | None, fresh_seeds: list[int]) -> str:
    md = ["## The ground truth: 9 seeds per arm", "",
          f"Test PGD-20 (%, all 10,000 test images), mean ± 95 % t-interval over seeds. Pooled seed std "
          f"**{full['pooled_std']:.2f}** points ({full['pooled_dof']} dof).", "",
          "| rank | arm | seeds | mean ± t-interval | sd | minus the baseline (paired, 95 %) | Holm p | beyond the noise |",
          "|---|---|---|---|---|---|---|---|"]
    vs = {c["arm"]: c for c in full.get("vs_baseline", [])}
    for i, a in enumerate(full["ranking"], 1):
        r = full["table"][a]
        c = vs.get(a)
        md.append(f"| {i} | {a} | {r['n']} | {r['mean']:.2f} ± {r['halfwidth']:.2f} | {r['sd']:.2f} | "
                  + (f"{_pm(c)} | {c['p_holm']:.3f} | {'yes' if c['beyond_noise'] else 'no'} (MDD {c['mdd']:.2f}) |" if c else "reference | | |"))
    if "labels_vs_natural_w16" in full:
        c = full["labels_vs_natural_w16"]
        md += ["", f"Label teacher minus natural_w16 (paired, {c['n']} seeds): {_pm(c)} points (p {c['p']:.3f}; MDD {c['mdd']:.2f})."]
    md += ["", "Teachers against the best teacher (paired, Holm): " + "; ".join(
        f"{full['teacher_ranking'][0]} − {c['arm']} = {_pm(c)} ({'beyond' if c['beyond_noise'] else 'within'} the noise)"
        for c in full.get("vs_best", [])) + "."]
    md += ["", "**Is a larger teacher better?** " + "; ".join(
        f"{c['family']}: {c['larger']} − {c['smaller']} = {_pm(c)} points (p {c['p']:.3f}; smallest detectable {c['mdd']:.2f})"
        for c in full["size"]) + f". Spearman of teacher parameters with student PGD-20: {full['size_spearman']['rho']:+.2f} "
        f"(exact p {full['size_spearman']['p_exact']:.2f}; seed-bootstrap 95 % interval "
        f"{full['size_spearman']['bootstrap'][0]:+.2f} to {full['size_spearman']['bootstrap'][1]:+.2f})."]
    if "tukey" in full:
        sig = [f"{c['a']} vs {c['b']} ({c['diff']:+.2f}, p {c['pvalue']:.3f})" for c in full["tukey"] if c["pvalue"] < 0.05]
        md += ["", f"Tukey HSD over all {len(full['tukey'])} pairs of arms: {len(sig)} differ at 5 %: " + ("; ".join(sig) or "none") + "."]
    md += ["", f"## Fresh seeds only ({', '.join(map(str, fresh_seeds))}): the ground truth sweeps are scored against", "",
           "| rank | arm | seeds | mean ± t-interval | minus the baseline (paired) | Holm p |", "|---|---|---|---|---|---|"]
    vs = {c["arm"]: c for c in fresh.get("vs_baseline", [])}
    for i, a in enumerate(fresh["ranking"], 1):
        r, c = fresh["table"][a], vs.get(a)
        md.append(f"| {i} | {a} | {r['n']} | {r['mean']:.2f} ± {r['halfwidth']:.2f} | "
                  + (f"{_pm(c)} | {c['p_holm']:.3f} |" if c else "reference | |"))
    if fresh["teacher_ranking"]:
        md += ["", f"Within the noise of the best teacher ({fresh['teacher_ranking'][0]}; paired, Holm): {', '.join(fresh['near_best'])}."]
    for s in sweeps:
        b = s["spearman_bootstrap"]
        md += ["", f"### Sweep {s['experiment']} (trained seeds {s['sweep_seeds']}) against the fresh seeds", "",
               f"- pick (the teacher of its best student by validation PGD-20, the student it exports; `none` = no "
               f"teacher): **{s['pick']}**; the fresh ground truth's best of the sweep's choices (baseline included): "
               f"{s['gt_best']} (same: {s['pick_is_best']}); within its noise ({', '.join(s['near_best'])}): {s['pick_within_noise']}",
               f"- report's ranking: {', '.join(s['ranking'])}; undecided: {', '.join(s['undecided']) or 'none'}; its "
               f"'should I distill?': {s['should_distill']}",
               "- Spearman with the fresh ground truth's means: " + (f"none (the report ranked {len(s['ranking'])} "
               "teacher(s): nothing to correlate)" if s["spearman"] is None else
               f"{s['spearman']:+.2f} (exact p {s['spearman_p_exact']:.2f}" + (f"; seed-bootstrap {b[0]:+.2f} to {b[1]:+.2f})" if b else ")")),
               f"- compute: {s['epochs_trained']} trained epochs = {100 * s['compute_fraction']:.0f} % of a 3-seed ground truth of the same arms"]
    if asha:
        md += ["", f"## ASHA replay on the fresh curves (grace {asha['grace_period']}, rf {asha['reduction_factor']}, "
                   f"{asha['num_samples']} samples, order shuffled; {asha['draws']} draws, {asha['bootstraps']} seed bootstraps)", "",
               f"The best choice on the fresh seeds: {asha['best']} (within its noise: {', '.join(asha['near_best'])}). "
               f"Picks the best choice in **{100 * asha['p_best']:.0f} %** of draws (seed-bootstrap 95 %: "
               f"{100 * asha['p_best_interval'][0]:.0f}–{100 * asha['p_best_interval'][1]:.0f} %), one within its noise in "
               f"**{100 * asha['p_within_noise']:.0f} %** ({100 * asha['p_within_noise_interval'][0]:.0f}–"
               f"{100 * asha['p_within_noise_interval'][1]:.0f} %), {asha['epochs']:.1f} trained epochs per sweep on average."]
    return "\n".join(md)


def main() -> None:
    global truth_pgd
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, help="the first ground truth's JSON (seeds 0-2 of the six teachers)")
    ap.add_argument("--arm", type=Path, action="append", default=[], help="an archive folder (bench.archive_trials)")
    ap.add_argument("--sweep", action="append", default=[], help="a teacher.yaml sweep folder to score")
    ap.add_argument("--fresh", default="3,4,5,6,7,8", help="seeds no sweep trained (scored against)")
    ap.add_argument("--zoo-cards", default="rslad_tune/teacher_zoo/fashion_mnist", type=Path)
    ap.add_argument("--out", default="docs/should-distill/ground-truth")
    args = ap.parse_args()
    pgd, curves = load_arms(args.old, args.arm)
    cards = {p.parent.name: read_json(p) for p in args.zoo_cards.glob("*/card.json")}
    fresh_seeds = [int(s) for s in args.fresh.split(",")]
    full, fresh = analyse(pgd, cards), analyse(only(pgd, set(fresh_seeds)), cards)
    truth_pgd = only(pgd, set(fresh_seeds))
    fresh_curves = {a: {s: c for s, c in cs.items() if s in fresh_seeds} for a, cs in curves.items()}
    ready = [a for a in fresh["ranking"] if a != LABELS and len(fresh_curves.get(a, {})) > 1]
    asha = asha_replay(fresh_curves, fresh) if len(ready) >= 7 else None  # teacher.yaml's 7 choices
    gt_epochs = 6 * 3 * len([a for a in fresh["ranking"] if a != LABELS])
    sweeps = [score_sweep(ExperimentDir.open(p), fresh, truth_pgd, gt_epochs) for p in args.sweep]
    result = {"arms": {a: {str(s): v for s, v in vals.items()} for a, vals in pgd.items()}, "full": full, "fresh": fresh,
              "fresh_seeds": fresh_seeds, "sweeps": sweeps, "asha_replay": asha,
              "curves": {a: {str(s): c for s, c in cs.items()} for a, cs in curves.items()}}
    write_json(result, Path(args.out + ".json"))
    md = markdown(full, fresh, sweeps, asha, fresh_seeds)
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


if __name__ == "__main__":
    main()
