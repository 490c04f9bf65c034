"""Is the teacher search right? Ground truth, ASHA's rungs, and a sweep scored against them.

    python -m bench.teacher_selection runs/teacher_groundtruth [runs/teacher ...] [--out docs/teacher-selection/ground-truth]
        [--extra docs/teacher-selection/validation-histories-run1.json]

- Ground truth (search_spaces/teacher_groundtruth.yaml, then `rslad-tune compare ... --n-aa 500`): each
  teacher's students' test PGD-20 mean ± std over seeds and AutoAttack (seed 0), read from comparison.json.
- Rungs: for every epoch r, the Spearman correlation between the trials' validation PGD-20 at epoch r and
  at the last epoch (over all ground-truth trials, and over the teachers' means), which is what ASHA bets on.
- Each sweep given after it (after its selection report): its pick (the teacher of its best student by
  validation PGD-20 among those compared at equal hyper-parameters), whether that is the ground truth's best
  or within its noise (`gt_near`: at most 2 standard errors below it), the same for its report's first
  teacher on the test split, the Spearman correlation of the report's teacher ranking with the ground
  truth's, and its compute as trained epochs over the ground truth's (every trial trains the same student
  with a cached teacher, so an epoch costs the same whatever the teacher).
Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rslad_tune.sweep.layout import ExperimentDir
from rslad_tune.sweep.stats import difference_of_means_halfwidth
from rslad_tune.sweep.stats import spearman as _spearman
from rslad_tune.trial.files import read_json, write_json, write_text


def ground_truth(exp: ExperimentDir) -> dict:
    comparison = read_json(exp.path / "comparison.json", "comparison.json")
    by_teacher: dict[str, list[dict]] = {}
    for row in comparison["rows"]:
        by_teacher.setdefault(row["teacher"], []).append(row)
    table = {}
    for teacher, rows in by_teacher.items():
        pgd = [100 * r["PGD_SAT"] for r in rows]
        aa = next((r for r in rows if "AA" in r), None)
        table[teacher] = {"seeds": sorted(r["seed"] for r in rows), "pgd20_mean": statistics.fmean(pgd),
                          "pgd20_std": statistics.stdev(pgd) if len(pgd) > 1 else 0.0, "pgd20": pgd,
                          "clean_mean": statistics.fmean(100 * r["Clean"] for r in rows),
                          "aa": 100 * aa["AA"] if aa else None, "aa_n": aa["n_aa"] if aa else 0,
                          "pgd20_on_aa_images": 100 * aa["PGD_SAT_aa"] if aa and "PGD_SAT_aa" in aa else None}
    cards = {name: read_json(Path(folder) / "card.json") for name, folder in exp.teacher_dirs.items()}
    for name, row in table.items():
        c = cards.get(name, {})
        row.update({"teacher_params": c.get("params"), "teacher_clean": 100 * c["clean_acc"] if c else None,
                    "teacher_pgd20": 100 * c["pgd20_acc"] if c else None, "teacher_aa": 100 * c["aa_acc"] if "aa_acc" in c else None})
    order = sorted(table, key=lambda t: -table[t]["pgd20_mean"])
    histories = [{"trial_id": t.trial_id, "teacher": t.config.get("teacher"), "seed": t.config.get("seed"),
                  "val_pgd": [h["pgd_acc"] for h in t.history], "val_clean": [h.get("clean_acc") for h in t.history]}
                 for t in exp.finished_trials()]
    ss = sum(sum((v - row["pgd20_mean"]) ** 2 for v in row["pgd20"]) for row in table.values())
    dof = sum(len(row["pgd20"]) - 1 for row in table.values())
    return {"table": table, "ranking": order, "epochs": exp.sweep.get("epochs"),
            "pooled_seed_std": (ss / dof) ** 0.5 if dof else None, "pooled_seed_dof": dof,
            "trial_epochs": sum(t.result.get("epoch", 0) for t in exp.trials()), "histories": histories}


def rung_correlations(curves: list[tuple[str, list[float]]]) -> list[dict]:
    """curves: (teacher, validation PGD-20 per epoch) of full-length trials."""
    epochs = min(len(h) for _, h in curves)
    teachers = sorted({t for t, _ in curves})
    out = []
    for r in range(1, epochs + 1):
        at_r = [h[r - 1] for _, h in curves]
        final = [h[epochs - 1] for _, h in curves]
        mean_r = [statistics.fmean(h[r - 1] for t, h in curves if t == name) for name in teachers]
        mean_f = [statistics.fmean(h[epochs - 1] for t, h in curves if t == name) for name in teachers]
        out.append({"epoch": r, "spearman_trials": spearman(at_r, final), "spearman_teacher_means": spearman(mean_r, mean_f),
                    "n_trials": len(at_r)})
    return out


def spearman(a: list[float], b: list[float]) -> float | None:
    return _spearman(a, b).rho


def gt_near(gt: dict) -> list[str]:
    """The ground truth's teachers whose mean is within its noise of the best one's: a difference inside the 95 %
    t-interval of two means (the pooled seed std at its degrees of freedom, the seeds of each)."""
    table, best = gt["table"], gt["ranking"][0]
    sd, dof = gt["pooled_seed_std"], gt["pooled_seed_dof"]
    return [t for t in gt["ranking"] if table[best]["pgd20_mean"] - table[t]["pgd20_mean"]
            <= difference_of_means_halfwidth(sd, dof, len(table[best]["pgd20"]), len(table[t]["pgd20"]))]


def score_sweep(exp: ExperimentDir, gt: dict) -> dict:
    """The sweep's teacher pick is the teacher of its best compared student by validation PGD-20 (the metric the
    sweep ranks and exports by; compared: full-length, at equal hyper-parameters, from its selection.json);
    the report's test-split ranking is scored beside it."""
    sel = read_json(exp.path / "selection.json", "selection.json (run `rslad-tune report` on the sweep first)")
    verdict = sel["verdict"]
    decided = [r for r in sel["rows"] if r["decided"]]
    val_pick = max(((s["val_pgd"], r["teacher"]) for r in decided for s in r["students"]), default=(None, None))[1]
    test_means = {r["teacher"]: r["student_pgd20_mean"] for r in decided}
    table, best, near = gt["table"], gt["ranking"][0], gt_near(gt)
    common = [name for name in gt["ranking"] if name in test_means]
    used = sum(t.result.get("epoch", 0) for t in exp.trials())
    test_pick = verdict["ranking"][0] if verdict["ranking"] else None
    return {"experiment": str(exp.path), "picked": val_pick, "gt_best": best, "gt_near": near,
            "picked_is_gt_best": val_pick == best, "within_noise": val_pick in near,
            "test_pick": test_pick, "test_pick_is_gt_best": test_pick == best, "test_pick_within_noise": test_pick in near,
            "ranked_teachers": verdict["ranking"], "undecided": verdict["undecided"],
            "spearman_vs_gt": spearman([test_means[n] for n in common], [table[n]["pgd20_mean"] for n in common]),
            "trials": len(exp.trials()), "epochs_trained": used, "compute_fraction": used / gt["trial_epochs"]}


def markdown(gt: dict, rungs: list[dict], sweeps: list[dict], rungs_all: list[dict] | None = None) -> str:
    md = ["## Ground truth: every teacher x 3 seeds, full epochs, no early stopping", "",
          "| rank | teacher | params | teacher clean / PGD-20 / AA | student test PGD-20 (mean ± std) | seeds | student clean "
          "| student AA (seed 0) | PGD-20 on the AA images |",
          "|---|---|---|---|---|---|---|---|---|"]
    for i, name in enumerate(gt["ranking"], 1):
        r = gt["table"][name]
        teacher = " / ".join(f"{v:.1f}" if v is not None else "–" for v in (r["teacher_clean"], r["teacher_pgd20"], r["teacher_aa"]))
        md.append(f"| {i} | {name} | {r['teacher_params'] or 0:,} | {teacher} | {r['pgd20_mean']:.2f} ± {r['pgd20_std']:.2f} | "
                  f"{len(r['seeds'])} | {r['clean_mean']:.2f} | {r['aa']:.2f} ({r['aa_n']}) | "
                  f"{r['pgd20_on_aa_images']:.2f} |" if r["aa"] is not None else
                  f"| {i} | {name} | {r['teacher_params'] or 0:,} | {teacher} | {r['pgd20_mean']:.2f} ± {r['pgd20_std']:.2f} | "
                  f"{len(r['seeds'])} | {r['clean_mean']:.2f} | – | – |")
    if gt.get("pooled_seed_std") is not None:
        md += ["", f"One teacher's students spread over seeds by **{gt['pooled_seed_std']:.2f} points** of test PGD-20 "
                   f"(std pooled over the teachers, {gt['pooled_seed_dof']} degrees of freedom): teacher.yaml's "
                   "`report.noise_std`."]
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    md += ["", "## ASHA's rungs: does validation PGD-20 at epoch r rank trials as the last epoch does?", "",
           "| epoch r | Spearman, all trials | Spearman, teachers' means | trials |"
           + (" with the earlier run: all trials | teachers' means | curves |" if rungs_all else ""),
           "|---|---|---|---|" + ("---|---|---|" if rungs_all else "")]
    for i, r in enumerate(rungs):
        more = ""
        if rungs_all:
            a = rungs_all[i]
            more = f" {f(a['spearman_trials'])} | {f(a['spearman_teacher_means'])} | {a['n_trials']} |"
        md.append(f"| {r['epoch']} | {f(r['spearman_trials'])} | {f(r['spearman_teacher_means'])} | {r['n_trials']} |" + more)
    for s in sweeps:
        md += ["", f"## Sweep {s['experiment']} scored against the ground truth", "",
               f"- its pick (best compared student by validation PGD-20): **{s['picked']}**; the ground truth's best: "
               f"{s['gt_best']} (same: {s['picked_is_gt_best']}); within the ground truth's noise of it: "
               f"{', '.join(s['gt_near'])} (pick among them: {s['within_noise']})",
               f"- its report's first teacher on the test split: {s['test_pick']} (the ground truth's best: "
               f"{s['test_pick_is_gt_best']}; within its noise: {s['test_pick_within_noise']})",
               f"- teacher ranking (selection report: equal hyper-parameters, full-length students): "
               f"{', '.join(s['ranked_teachers'])}; undecided: {', '.join(s['undecided']) or 'none'}; Spearman with the "
               "ground truth's: " + ("–" if s["spearman_vs_gt"] is None else f"{s['spearman_vs_gt']:.2f}"),
               f"- compute: {s['epochs_trained']} trained epochs in {s['trials']} trials = "
               f"{100 * s['compute_fraction']:.0f} % of the ground truth's {s['epochs_trained'] / s['compute_fraction']:.0f}"]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ground_truth", help="runs/teacher_groundtruth, after `rslad-tune compare` on it")
    ap.add_argument("sweeps", nargs="*", help="sweep folders of teacher.yaml (or variants) to score")
    ap.add_argument("--out", default="docs/teacher-selection/ground-truth")
    ap.add_argument("--extra", action="append", default=[], metavar="JSON",
                    help="an earlier run's validation curves of the same trials, for the rung correlations too")
    args = ap.parse_args()
    gt_exp = ExperimentDir.open(args.ground_truth)
    gt = ground_truth(gt_exp)
    curves = [(h["teacher"], h["val_pgd"]) for h in gt["histories"]]
    extra = [(t["teacher"], t["val_pgd"]) for f in args.extra for t in read_json(Path(f), "--extra")["trials"]]
    rungs = rung_correlations(curves)
    rungs_all = rung_correlations(curves + extra) if extra else None
    sweeps = [score_sweep(ExperimentDir.open(p), gt) for p in args.sweeps]
    result = {"ground_truth": gt, "rungs": rungs, "rungs_with_extra": rungs_all, "extra": args.extra, "sweeps": sweeps}
    write_json(result, Path(args.out + ".json"))
    md = markdown(gt, rungs, sweeps, rungs_all)
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


if __name__ == "__main__":
    main()
