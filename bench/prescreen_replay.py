"""Would prescreening teachers by a proxy let teacher.yaml find the right choice at a tenth of the ground truth's compute?

    python -m bench.prescreen_replay --old docs/teacher-selection/ground-truth.json --arm results/baseline_groundtruth \
        --arm results/teacher_groundtruth_fresh --arm results/teacher_groundtruth_new [--out docs/teacher-proxies/prescreen-replay]

The choices: every zoo teacher whose RSLAD students are archived (alpha 0.75, epsilon 0.1, 6 epochs) and the
no-teacher baseline (the same student, SAT alone), on the seeds they all share, so every comparison is paired by
seed. One replayed sweep: `tune.prescreen` keeps the K teachers with the best proxy on their cards (and the
baseline, always kept), then one trial per kept choice, in a shuffled order, each drawing one of its recorded
validation curves, reports to Ray's ASHA rule at teacher.yaml's rungs (bench.asha_simulation.replay); the pick is
the choice of the best trial. Scored on the test split: the pick is within the noise of the best choice (paired,
Holm), and -- the proxy's own test, without the baseline -- the picked teacher is within the noise of the best
teacher. Compute: trained epochs over the ground truth's (every choice x every shared seed x 6 epochs); a proxy
costs one forward pass of each teacher (stored on the zoo's cards), not counted. Intervals: seed bootstrap (the
shared seed list resampled, the ground truth re-derived from it, the replay rerun).
"""
from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

from bench.asha_simulation import replay
from bench.proxy_test import PROXIES, proxy_values
from bench.should_distill import BASELINE, LABELS, _near, load_arms, only
from rslad_tune.trial.files import read_json, write_json, write_text


def _truth(pgd: dict, choices: list[str]) -> tuple[set[str], set[str]]:
    """(choices within the noise of the best choice, teachers within the noise of the best teacher)."""
    order = sorted(choices, key=lambda a: -statistics.fmean(pgd[a].values()))
    teachers = [a for a in order if a != BASELINE]
    return set(_near(pgd, order)), set(_near(pgd, teachers))


def _rates(curves: dict, kept: list[str], near: tuple[set[str], set[str]], means: dict, draws: int,
           rng: random.Random, grace: int, rf: int, max_t: int) -> tuple[float, float, float, float, float]:
    """(within noise of the best choice, kept teachers only: within noise of the best teacher, mean epochs,
    the best choice picked, mean regret: the best choice's test PGD-20 minus the pick's, points)."""
    within = teacher_within = epochs = top = regret = 0
    teachers = [a for a in kept if a != BASELINE]
    best = max(means, key=means.get)
    for _ in range(draws):
        order = rng.sample(kept, len(kept))
        picked, used, _ = replay([(a, rng.choice(curves[a])) for a in order], grace, rf, max_t)
        within += picked in near[0]
        epochs += used
        top += picked == best
        regret += means[best] - means[picked]
        order = rng.sample(teachers, len(teachers))
        picked, _, _ = replay([(a, rng.choice(curves[a])) for a in order], grace, rf, max_t)
        teacher_within += picked in near[1]
    return within / draws, teacher_within / draws, epochs / draws, top / draws, regret / draws


def _means(pgd: dict) -> dict:
    return {a: statistics.fmean(v.values()) for a, v in pgd.items()}


def prescreen_replay(pgd: dict, curves: dict, proxies: dict, by: str, keep: int, *, grace: int = 3, rf: int = 2,
                     draws: int = 400, boots: int = 200, seed: int = 0) -> dict:
    sign = PROXIES[by][1] or 1  # proxy_values already negated nll and ece: larger is predicted better
    teachers = sorted((t for t in pgd if t not in (BASELINE, LABELS)), key=lambda t: -sign * proxies[t][by])
    kept = teachers[:keep] + [BASELINE]  # keep >= the number of teachers: no prescreen, teacher.yaml as it is
    choices = teachers + [BASELINE]
    seeds = sorted(set.intersection(*(set(pgd[a]) & set(curves[a]) for a in choices)))
    max_t = min(len(curves[a][s]) for a in choices for s in seeds)
    rng = random.Random(seed)
    truth = _truth(only(pgd, seeds), choices)
    point = _rates({a: [curves[a][s] for s in seeds] for a in kept}, kept, truth, _means(only(pgd, seeds)),
                   draws, rng, grace, rf, max_t)
    samples = []
    for _ in range(boots):  # one resampled seed list for every arm: the comparisons stay paired
        ss = [rng.choice(seeds) for _ in seeds]
        boot = {a: {i: pgd[a][s] for i, s in enumerate(ss)} for a in choices}
        samples.append(_rates({a: [curves[a][s] for s in ss] for a in kept}, kept, _truth(boot, choices), _means(boot),
                              draws // 4, rng, grace, rf, max_t))

    def interval(i: int) -> list[float]:
        xs = sorted(s[i] for s in samples)
        return [xs[int(0.025 * boots)], xs[int(0.975 * boots) - 1]]

    full = len(choices) * len(seeds) * max_t
    return {"by": by, "keep": keep, "kept": kept, "seeds": seeds, "grace_period": grace, "reduction_factor": rf,
            "draws": draws, "bootstraps": boots, "p_within_noise": point[0], "p_within_noise_interval": interval(0),
            "p_teacher_within_noise": point[1], "p_teacher_within_noise_interval": interval(1),
            "epochs": point[2], "ground_truth_epochs": full, "compute_fraction": point[2] / full,
            "near_best": sorted(truth[0]), "near_best_teacher": sorted(truth[1]),
            "p_best": point[3], "p_best_interval": interval(3), "regret": point[4], "regret_interval": interval(4)}


def markdown(rows: list[dict], pgd: dict) -> str:
    seeds = rows[0]["seeds"]
    order = sorted(pgd, key=lambda a: -statistics.fmean(pgd[a][s] for s in seeds))
    md = [f"Choices on seeds {seeds} (test PGD-20, mean): " + ", ".join(
              f"{a} {statistics.fmean(pgd[a][s] for s in seeds):.2f}" for a in order) + ".", "",
          f"Within the noise of the best choice (paired, Holm, on these seeds): {len(rows[0]['near_best'])} of "
          f"{len(order)} choices ({', '.join(rows[0]['near_best'])}); of the best teacher: "
          f"{len(rows[0]['near_best_teacher'])} of {len(order) - 1} teachers. Where that is (nearly) every choice, the "
          "within-noise rate cannot fail: read the best-picked rate and the regret.", "",
          "| by | keep | kept | within noise of the best choice | kept teachers alone: within noise of the best teacher "
          "| best choice picked | regret (points) | epochs | compute |", "|---|---|---|---|---|---|---|---|---|"]

    def pct(r: dict, key: str) -> str:
        lo, hi = r[key + "_interval"]
        return f"{100 * r[key]:.0f} % ({100 * lo:.0f}–{100 * hi:.0f})"
    for r in rows:
        lo, hi = r["regret_interval"]
        kept = "all (no prescreen)" if len(r["kept"]) == len(order) else ", ".join(r["kept"])
        md.append(f"| {r['by']} | {r['keep']} | {kept} | {pct(r, 'p_within_noise')} | {pct(r, 'p_teacher_within_noise')} "
                  f"| {pct(r, 'p_best')} | {r['regret']:.2f} ({lo:.2f}–{hi:.2f}) "
                  f"| {r['epochs']:.1f} | {100 * r['compute_fraction']:.1f} % |")
    md += ["", f"{rows[0]['draws']} shuffled draws per row; 95 % seed-bootstrap intervals ({rows[0]['bootstraps']} "
               f"resamples); ASHA grace {rows[0]['grace_period']}, reduction factor {rows[0]['reduction_factor']} "
               f"(teacher.yaml's); compute = trained epochs / {rows[0]['ground_truth_epochs']} (the ground truth's)."]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, help="the first ground truth's JSON (seeds 0-2 of the six first teachers)")
    ap.add_argument("--arm", type=Path, action="append", default=[], help="archives of students (results/...)")
    ap.add_argument("--zoo-cards", default="rslad_tune/teacher_zoo/fashion_mnist", type=Path)
    ap.add_argument("--by", action="append", default=None, help="proxies to prescreen by (default true_prob, clean_acc)")
    ap.add_argument("--keep", type=int, action="append", default=None, help="K values (default 1 2 3; every teacher, "
                    "no prescreen, is always added as the reference row)")
    ap.add_argument("--out", default="docs/teacher-proxies/prescreen-replay")
    args = ap.parse_args()
    pgd, curves = load_arms(args.old, args.arm)
    cards = {p.parent.name: read_json(p) for p in args.zoo_cards.glob("*/card.json")}
    proxies = {t: proxy_values(cards[t]) for t in cards}
    pgd = {a: v for a, v in pgd.items() if a == BASELINE or a in cards}
    curves = {a: curves[a] for a in pgd}
    n_teachers = len(pgd) - 1
    rows = [prescreen_replay(pgd, curves, proxies, by, k) for by in args.by or ["true_prob", "clean_acc"]
            for k in args.keep or [1, 2, 3]] + [prescreen_replay(pgd, curves, proxies, "true_prob", n_teachers)]
    import subprocess
    import sys

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    command = "python -m bench.prescreen_replay " + " ".join(sys.argv[1:])
    md = "\n".join([f"# Prescreen replay: {', '.join(a.name for a in args.arm)}", "",
                     f"`{command}` (commit {commit}, {date}; 2-core CPU, seconds).", "", markdown(rows, pgd)])
    write_json({"command": command, "commit": commit, "date": date, "arms": [str(a) for a in args.arm],
                "old": str(args.old), "rows": rows}, Path(args.out + ".json"))
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


if __name__ == "__main__":
    main()
