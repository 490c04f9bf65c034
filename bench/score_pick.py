"""A finished sweep's choice scored against a regime cell's ground truth, on seeds the sweep did not train.

    python -m bench.score_pick runs/few_labels results/regime_few_labels --out docs/regimes/few-labels-selection

The ground truth: bench.archive_trials' JSONs of one cell (every arm x the same seeds, test clean and PGD-20 on
all 10,000 test images, best checkpoint). The sweep: its selection.json (the report's ranking and its
should-distil teacher) and best/config.json (the exported trial's teacher). Each choice is scored by

- regret: the best arm's ground-truth mean minus the choice's, in points of the sweep's objective (and of test
  PGD-20 and clean accuracy beside it), with a seed-bootstrap 95 % interval (the ground truth's seeds resampled
  with replacement, every arm on the same resample, the best arm re-chosen in each);
- within the noise: the best arm minus the choice, paired by seed, 95 % t-interval, Holm over the arms compared
  with the best;
- compute: the epochs the sweep trained over the ground truth's (arms x seeds x epochs).

Controls on the same resamples (expected regret): a uniformly random arm, the plain baseline alone, the
pseudo-label baseline alone.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
from pathlib import Path

from rslad_tune.sweep import stats
from rslad_tune.sweep.layout import ExperimentDir
from rslad_tune.sweep.two_axes import score as objective_score
from rslad_tune.trial.files import read_json, write_json, write_text


def ground_truth(folder: Path, objective: str, clean_weight: float) -> tuple[dict, int]:
    """{arm: {seed: {"pgd": points, "clean": points, "objective": points}}} and the ground truth's epochs."""
    arms: dict[str, dict[int, dict]] = {}
    epochs = 0
    for f in sorted(folder.glob("*.json")):
        t = json.loads(f.read_text())
        if "config" not in t:
            continue
        pgd, clean = 100 * t["suite"]["PGD_SAT"], 100 * t["suite"]["Clean"]
        arms.setdefault(t["config"]["teacher"], {})[t["config"]["seed"]] = {
            "pgd": pgd, "clean": clean, "objective": objective_score(pgd, clean, objective, clean_weight)}
        epochs += len(t["history"])
    return arms, epochs


def _means(arms: dict, seeds: list[int], key: str) -> dict[str, float]:
    return {a: statistics.fmean(v[s][key] for s in seeds) for a, v in arms.items()}


def regret(arms: dict, seeds: list[int], choice: str, key: str) -> float:
    m = _means(arms, seeds, key)
    best = max(m, key=lambda a: _means(arms, seeds, "objective")[a]) if key != "objective" else max(m, key=m.get)
    return m[best] - m[choice]


def bootstrap(arms: dict, seeds: list[int], choices: dict[str, str | None], boots: int, rng: random.Random) -> dict:
    """Each choice's regret on every resample of the seeds (None: a uniformly random arm, averaged over arms)."""
    out = {name: [] for name in choices}
    for _ in range(boots):
        sample = [rng.choice(seeds) for _ in seeds]
        for name, choice in choices.items():
            picks = list(arms) if choice is None else [choice]
            out[name].append(statistics.fmean(regret(arms, sample, c, "objective") for c in picks))
    return {name: {"mean": statistics.fmean(v), "interval": [_pct(v, 2.5), _pct(v, 97.5)]} for name, v in out.items()}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def near_best(arms: dict, seeds: list[int]) -> tuple[str, list[dict]]:
    """The ground truth's best arm by the objective and every other arm against it (paired, Holm)."""
    m = _means(arms, seeds, "objective")
    best = max(m, key=m.get)
    rows = []
    for a in sorted(m, key=lambda a: -m[a]):
        if a == best:
            continue
        d = stats.paired_difference({s: arms[best][s]["objective"] for s in seeds},
                                    {s: arms[a][s]["objective"] for s in seeds})
        rows.append({"arm": a, "diff": d.diff, "halfwidth": d.halfwidth, "p": d.pvalue, "mdd": d.mdd})
    for r, p in zip(rows, stats.holm([r["p"] for r in rows])):
        r["p_holm"], r["within_noise"] = p, p >= 0.05
    return best, rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="a finished sweep folder (runs/<experiment>) with its selection report")
    ap.add_argument("ground_truth", type=Path, help="results/<cell>: the cell's archived trials")
    ap.add_argument("--out", type=Path, required=True, help="writes <out>.md and <out>.json")
    ap.add_argument("--boots", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    exp = ExperimentDir.open(args.sweep)
    objective = exp.sweep.get("report_objective") or "pgd"
    clean_weight = exp.sweep.get("report_clean_weight", 0.5)
    arms, gt_epochs = ground_truth(args.ground_truth, objective, clean_weight)
    seeds = sorted(set.intersection(*(set(v) for v in arms.values())))
    trained = sorted({t.config.get("seed") for t in exp.trials()})
    held_out = [s for s in seeds if s not in trained]
    selection = read_json(exp.path / "selection.json", "selection.json")["verdict"]
    exported = read_json(exp.best_dir / "config.json", "best/config.json")["trial"].get("teacher")
    report_pick = selection["ranking"][0] if selection["ranking"] else selection["reference"]
    epochs = sum(len(t.history) for t in exp.trials())
    best, vs_best = near_best(arms, held_out)
    within = {r["arm"] for r in vs_best if r["within_noise"]} | {best}
    baseline = selection["reference"]
    pseudo = next((r["teacher"] for r in read_json(exp.path / "selection.json", "selection.json")["rows"]
                   if r.get("pseudo")), None)
    choices = {"exported student's arm": exported, "report's best by the objective (test split)": report_pick,
               "control: a random arm": None, f"control: the baseline alone ({baseline})": baseline}
    if pseudo:
        choices[f"control: the pseudo-label baseline alone ({pseudo})"] = pseudo
    boot = bootstrap(arms, held_out, choices, args.boots, random.Random(args.seed))
    rows = []
    for name, choice in choices.items():
        rows.append({"policy": name, "choice": choice or "(any)",
                     "regret": statistics.fmean(regret(arms, held_out, c, "objective")
                                                for c in ([choice] if choice else list(arms))),
                     "regret_pgd": None if choice is None else regret(arms, held_out, choice, "pgd"),
                     "regret_clean": None if choice is None else regret(arms, held_out, choice, "clean"),
                     "interval": boot[name]["interval"], "best": choice == best if choice else None,
                     "within_noise": (choice in within) if choice else len(within) / len(arms)})
    commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"sweep": str(args.sweep), "ground_truth": str(args.ground_truth), "objective": objective,
              "clean_weight": clean_weight, "seeds_trained": trained, "seeds_scored": held_out, "best": best,
              "verdict": selection["should_distill"]["case"],
              "within_noise_of_best": sorted(within), "vs_best": vs_best, "rows": rows, "epochs": epochs,
              "gt_epochs": gt_epochs, "compute": epochs / gt_epochs, "boots": args.boots, "commit": commit,
              "means": {k: _means(arms, held_out, k) for k in ("objective", "pgd", "clean")}}
    write_json(result, args.out.with_suffix(".json"))
    write_text(markdown(result, argv), args.out.with_suffix(".md"))
    return result


def markdown(r: dict, argv: list[str] | None) -> str:
    import sys
    what = {"balanced": f"({1 - r['clean_weight']:.2g} x PGD-20 + {r['clean_weight']:.2g} x clean)",
            "pgd": "test PGD-20", "clean": "clean test accuracy"}[r["objective"]]
    lines = [f"# {Path(r['sweep']).name}: its choice scored against {Path(r['ground_truth']).name}", "",
             f"Generated by `python -m bench.score_pick {' '.join(argv if argv is not None else sys.argv[1:])}` "
             f"(commit {r['commit']}). Objective: {r['objective']} {what}, points of test accuracy on all 10,000 "
             f"test images, the ground truth's best checkpoints, scored on the seeds the sweep did not train "
             f"({', '.join(map(str, r['seeds_scored']))}; the sweep trained seed {', '.join(map(str, r['seeds_trained']))}). "
             f"Compute: the sweep trained {r['epochs']} epochs, {100 * r['compute']:.1f} % of the ground truth's "
             f"{r['gt_epochs']}. The sweep's own report (one student per arm) classed the question "
             f"\"should I distil?\" as `{r['verdict']}`.", "",
             "| arm | objective | PGD-20 | clean |", "|---|---|---|---|"]
    m = r["means"]
    for a in sorted(m["objective"], key=lambda a: -m["objective"][a]):
        lines.append(f"| {a} | {m['objective'][a]:.2f} | {m['pgd'][a]:.2f} | {m['clean'][a]:.2f} |")
    lines += ["", f"Best by the objective: **{r['best']}**. Against it (paired by seed, 95 % t-interval, Holm):", ""]
    for v in r["vs_best"]:
        lines.append(f"- {r['best']} − {v['arm']}: {v['diff']:+.2f} ± {v['halfwidth']:.2f} points (Holm p "
                     f"{v['p_holm']:.3f}: {'within' if v['within_noise'] else 'beyond'} the noise)")
    lines += ["", "| policy | choice | regret (95 % seed bootstrap) | PGD-20 regret | clean regret | best | within the noise |",
              "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        def pts(x):
            return "" if x is None else f"{x:+.2f}"
        within = (f"{100 * row['within_noise']:.0f} % of arms" if isinstance(row["within_noise"], float)
                  else ("yes" if row["within_noise"] else "no"))
        best = "" if row["best"] is None else ("yes" if row["best"] else "no")
        lines.append(f"| {row['policy']} | {row['choice']} | {row['regret']:.2f} ({row['interval'][0]:.2f}–"
                     f"{row['interval'][1]:.2f}) | {pts(row['regret_pgd'])} | {pts(row['regret_clean'])} | {best} | {within} |")
    lines += ["", "Regret: the best arm's mean minus the choice's (0 when the best is chosen); the PGD-20 and clean "
              "columns are the same arms' differences on each axis (negative: the choice is higher on that axis). "
              f"Bootstrap: {r['boots']} resamples of the scored seeds, the best arm re-chosen in each."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
