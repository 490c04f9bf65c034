"""Which ASHA settings can pick the right teacher? Replays teacher.yaml's sweep on the ground truth's curves.

    python -m bench.asha_simulation docs/teacher-selection/ground-truth.json --extra docs/teacher-selection/validation-histories-run1.json [--out docs/teacher-selection/asha-simulation]

The ground truth (search_spaces/teacher_groundtruth.yaml) trained every zoo teacher's student 3 times (and
`--extra` adds an earlier run's curves: the same seeds do not give the same curves on this CPU) at
alpha 0.75, epsilon 0.1 -- the point teacher.yaml's first six trials use (tuning.teacher_points: every teacher
once, the other searched keys at their centres). A simulated sweep draws, for each of its trials, one of that
teacher's three recorded validation curves: trials 1-6 take the six teachers in order, later trials a teacher
at random (TPE proposes at random for its first 10 trials). Trials report in index order to Ray's own ASHA
rule (`_Bracket`: a trial stops at a rung when its value is below the (1 - 1/rf) quantile of the values
recorded there before it). The sweep's pick is the teacher of its best trial by best validation PGD-20 (what
export ships). Scored against the test-split ground truth: the share of draws that pick its best teacher,
that pick one within its noise (teacher_selection.gt_near: at most 2 standard errors below it), and the mean trained epochs as a
fraction of the ground truth's trained epochs (108).

What it leaves out, said plainly: later trials of the real sweep use other alpha/epsilon values (here they
repeat the centre's curves), and two concurrent trials can reach a rung in either order.
"""
from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import numpy as np

from bench.teacher_selection import gt_near
from rslad_tune.trial.files import read_json, write_json, write_text

SETTINGS = [(g, rf, n) for g in (1, 2, 3, 4) for rf in (2, 3) for n in (6, 7, 8)]


def rungs(grace: int, rf: int, max_t: int) -> list[int]:
    """Ray's milestones for one bracket: grace * rf**k while <= max_t (async_hyperband._Bracket)."""
    n = int(np.log(max_t / grace) / np.log(rf) + 1)
    return [grace * rf ** k for k in range(n)]


def replay(curves: list[tuple[str, list[float]]], grace: int, rf: int, max_t: int) -> tuple[str, int, list[str]]:
    """One sweep: (picked teacher, trained epochs, teachers with a full-length trial)."""
    recorded: dict[int, list[float]] = {m: [] for m in rungs(grace, rf, max_t)}
    lengths = []
    for _, curve in curves:
        stop = max_t
        for m in sorted(recorded):
            if m >= max_t:
                break
            v = curve[m - 1]
            cutoff = np.nanpercentile(recorded[m], (1 - 1 / rf) * 100) if recorded[m] else None
            recorded[m].append(v)
            if cutoff is not None and v < cutoff:
                stop = m
                break
        lengths.append(stop)
    best = max(range(len(curves)), key=lambda i: max(curves[i][1][:lengths[i]]))
    full = sorted({curves[i][0] for i in range(len(curves)) if lengths[i] == max_t})
    return curves[best][0], sum(lengths), full


def simulate(histories: dict[str, list[list[float]]], gt: dict, grace: int, rf: int, n: int, draws: int,
             rng: random.Random, max_t: int, shuffle: bool = False) -> dict:
    """shuffle: the teachers' first pass in a random order each draw instead of the YAML's (ASHA lets the first
    trial at a rung through, so the teacher listed first has an advantage that has nothing to do with it)."""
    teachers = list(histories)
    best, near = gt["ranking"][0], set(gt_near(gt))
    hits = within = 0
    epochs, decided = [], []
    for _ in range(draws):
        first = rng.sample(teachers, len(teachers)) if shuffle else teachers
        order = first[:n] + [rng.choice(teachers) for _ in range(n - len(teachers))]
        picked, used, full = replay([(t, rng.choice(histories[t])) for t in order], grace, rf, max_t)
        hits += picked == best
        within += picked in near
        epochs.append(used)
        decided.append(len(full))
    return {"grace_period": grace, "reduction_factor": rf, "num_samples": n, "rungs": rungs(grace, rf, max_t), "shuffled": shuffle,
            "p_best": hits / draws, "p_within_noise": within / draws, "epochs": statistics.fmean(epochs),
            "compute_fraction": statistics.fmean(epochs) / gt["trial_epochs"], "decided_teachers": statistics.fmean(decided)}


def markdown(rows: list[dict], best: str, near: list[str], draws: int) -> str:
    md = [f"Replayed sweeps ({draws} draws each) scored against the test-split ground truth: best teacher **{best}**; "
          f"within its noise: {', '.join(near)}.", "",
          "| grace | rf | samples | rungs | teacher order | picks the best | picks within noise | epochs | compute | teachers decided |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['grace_period']} | {r['reduction_factor']} | {r['num_samples']} | {r['rungs']} | "
                  f"{'shuffled' if r['shuffled'] else 'as listed'} | "
                  f"{100 * r['p_best']:.0f} % | {100 * r['p_within_noise']:.0f} % | {r['epochs']:.1f} | "
                  f"{100 * r['compute_fraction']:.0f} % | {r['decided_teachers']:.1f} |")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ground_truth", help="the JSON that `python -m bench.teacher_selection` wrote")
    ap.add_argument("--extra", action="append", default=[], metavar="JSON",
                    help="more curves of the same trials (an earlier run of the ground truth: {'trials': [{teacher, val_pgd}]})")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/teacher-selection/asha-simulation")
    args = ap.parse_args()
    gt = read_json(Path(args.ground_truth), "ground truth")
    histories: dict[str, list[list[float]]] = {}
    for t in gt["ground_truth"]["histories"] + [t for f in args.extra for t in read_json(Path(f), "--extra")["trials"]]:
        histories.setdefault(t["teacher"], []).append(t["val_pgd"])
    max_t = min(len(c) for cs in histories.values() for c in cs)
    rng = random.Random(args.seed)
    rows = [simulate(histories, gt["ground_truth"], g, rf, n, args.draws, rng, max_t, shuffle)
            for g, rf, n in SETTINGS for shuffle in (False, True)]
    best, near = gt["ground_truth"]["ranking"][0], gt_near(gt["ground_truth"])
    md = markdown(rows, best, near, args.draws)
    write_json({"source": args.ground_truth, "extra": args.extra, "curves_per_teacher": {k: len(v) for k, v in histories.items()},
                "draws": args.draws, "seed": args.seed, "rows": rows}, Path(args.out + ".json"))
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


if __name__ == "__main__":
    main()
