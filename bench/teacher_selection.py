"""Is the teacher search right? Ground truth, ASHA's rungs, and a sweep scored against them.

    python -m bench.teacher_selection runs/teacher_groundtruth [runs/teacher ...] [--out docs/teacher-selection/ground-truth]

- Ground truth (search_spaces/teacher_groundtruth.yaml, then `rslad-tune compare ... --n-aa 500`): each
  teacher's students' test PGD-20 mean ± std over seeds and AutoAttack (seed 0), read from comparison.json.
- Rungs: for every epoch r, the Spearman correlation between the trials' validation PGD-20 at epoch r and
  at the last epoch (over all ground-truth trials, and over the teachers' means), which is what ASHA bets on.
- Each sweep given after it (after its selection report): the teacher its report ranks first (teachers
  compared at equal hyper-parameters, undecided ones left out), whether that is the ground truth's best or
  within its noise (one std of the best teacher's seeds), the Spearman correlation of the report's teacher
  ranking with the ground truth's, the exported student's teacher, and its compute as trained epochs over
  the ground truth's (every trial trains the same student with a cached teacher, so an epoch costs the same
  whatever the teacher).
Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rslad_tune.files import read_json, write_json, write_text
from rslad_tune.layout import ExperimentDir
from rslad_tune.report import spearman


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


def rung_correlations(exp: ExperimentDir) -> list[dict]:
    hist = {t.trial_id: (t.config.get("teacher"), [h["pgd_acc"] for h in t.history]) for t in exp.finished_trials()}
    epochs = min(len(h) for _, h in hist.values())
    out = []
    for r in range(1, epochs + 1):
        at_r = [h[r - 1] for _, h in hist.values()]
        final = [h[epochs - 1] for _, h in hist.values()]
        teachers = sorted({t for t, _ in hist.values()})
        mean_r = [statistics.fmean(h[r - 1] for t, h in hist.values() if t == name) for name in teachers]
        mean_f = [statistics.fmean(h[epochs - 1] for t, h in hist.values() if t == name) for name in teachers]
        out.append({"epoch": r, "spearman_trials": spearman(at_r, final), "spearman_teacher_means": spearman(mean_r, mean_f),
                    "n_trials": len(at_r)})
    return out


def score_sweep(exp: ExperimentDir, gt: dict) -> dict:
    """The sweep's teacher pick is its selection report's (selection.json: teachers ranked at equal
    hyper-parameters, undecided ones left out); the exported student's teacher is recorded beside it."""
    trials = exp.finished_trials("to score")
    sel = read_json(exp.path / "selection.json", "selection.json (run `rslad-tune report` on the sweep first)")
    verdict = sel["verdict"]
    means = {r["teacher"]: r["student_pgd20_mean"] for r in sel["rows"] if r["decided"]}
    winner = max(trials, key=lambda t: (t.result["best_pgd_acc"], t.result.get("clean_acc", 0)))
    table = gt["table"]
    best = gt["ranking"][0]
    picked = verdict["ranking"][0] if verdict["ranking"] else None
    common = [name for name in gt["ranking"] if name in means]
    used = sum(t.result.get("epoch", 0) for t in exp.trials())
    return {"experiment": str(exp.path), "picked": picked, "gt_best": best, "picked_is_gt_best": picked == best,
            "picked_gt_pgd20": table[picked]["pgd20_mean"] if picked in table else None,
            "within_noise": picked in table and table[best]["pgd20_mean"] - table[picked]["pgd20_mean"] <= table[best]["pgd20_std"],
            "exported_teacher": winner.config.get("teacher"), "exported_trial": winner.trial_id,
            "ranked_teachers": verdict["ranking"], "undecided": verdict["undecided"],
            "spearman_vs_gt": spearman([means[n] for n in common], [table[n]["pgd20_mean"] for n in common]),
            "trials": len(exp.trials()), "epochs_trained": used, "compute_fraction": used / gt["trial_epochs"]}


def markdown(gt: dict, rungs: list[dict], sweeps: list[dict]) -> str:
    md = ["## Ground truth: every teacher x 3 seeds, full epochs, no early stopping", "",
          "| rank | teacher | params | teacher clean / PGD-20 / AA | student test PGD-20 (mean ± std) | seeds | student clean | student AA (seed 0) | PGD-20 on the AA images |",
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
    md += ["", "## ASHA's rungs: does validation PGD-20 at epoch r rank trials as the last epoch does?", "",
           "| epoch r | Spearman, all trials | Spearman, teachers' means | trials |", "|---|---|---|---|"]
    for r in rungs:
        f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        md.append(f"| {r['epoch']} | {f(r['spearman_trials'])} | {f(r['spearman_teacher_means'])} | {r['n_trials']} |")
    for s in sweeps:
        md += ["", f"## Sweep {s['experiment']} scored against the ground truth", "",
               f"- picked **{s['picked']}** (ground truth's best: {s['gt_best']}; same: {s['picked_is_gt_best']}; "
               f"within one std of it: {s['within_noise']})",
               f"- exported student: trial {s['exported_trial']} (teacher {s['exported_teacher']})",
               f"- teacher ranking (selection report: equal hyper-parameters, full-length students): "
               f"{', '.join(s['ranked_teachers'])}; undecided: "
               f"{', '.join(s['undecided']) or 'none'}; Spearman with the ground truth: "
               + ("–" if s["spearman_vs_gt"] is None else f"{s['spearman_vs_gt']:.2f}"),
               f"- compute: {s['epochs_trained']} trained epochs in {s['trials']} trials = "
               f"{100 * s['compute_fraction']:.0f} % of the ground truth's {s['epochs_trained'] / s['compute_fraction']:.0f}"]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ground_truth", help="runs/teacher_groundtruth, after `rslad-tune compare` on it")
    ap.add_argument("sweeps", nargs="*", help="sweep folders of teacher.yaml (or variants) to score")
    ap.add_argument("--out", default="docs/teacher-selection/ground-truth")
    args = ap.parse_args()
    gt_exp = ExperimentDir.open(args.ground_truth)
    gt = ground_truth(gt_exp)
    rungs = rung_correlations(gt_exp)
    sweeps = [score_sweep(ExperimentDir.open(p), gt) for p in args.sweeps]
    result = {"ground_truth": gt, "rungs": rungs, "sweeps": sweeps}
    write_json(result, Path(args.out + ".json"))
    md = markdown(gt, rungs, sweeps)
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


if __name__ == "__main__":
    main()
