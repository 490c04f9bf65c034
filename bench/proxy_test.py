"""Do zero-cost teacher proxies rank teachers as their students do? Tested on teachers they were not chosen on.

    python -m bench.proxy_test --old docs/teacher-selection/ground-truth.json \
        --arm results/teacher_groundtruth_fresh --new results/teacher_groundtruth_new \
        [--out docs/teacher-proxies/held-out]

The proxies were fixed, with predictions, in docs/teacher-proxies/predictions.md before any student of a new teacher
trained. Ground truth: each teacher's RSLAD students at teacher.yaml's equal-hyper-parameter point (alpha 0.75,
epsilon 0.1, 6 epochs), test PGD-20 on all 10,000 test images: seeds 0-8 for the six first zoo teachers (`--old` +
`--arm`), seeds 3-5 for the six new ones (`--new`). Proxies: each teacher's card (`rslad-tune zoo proxies`: one pass
over teacher.yaml's 9,000 training images) and its card's test PGD-20, AutoAttack and parameter count.

Reported per proxy, on the new teachers alone (6: exact permutation p over all 720 orders) and on all twelve
(Monte Carlo permutation p, 100,000 permutations): Spearman of the proxy (signed so that the predicted-better
direction is positive: nll and ece negated) with the students' mean test PGD-20, a seed-bootstrap 95 % interval
(each teacher's seeds resampled), whether the proxy's top teacher is the ground truth's best (top-1) and whether it
is within the noise of the best (paired by seed, Holm over the comparisons with the best).
"""
from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import numpy as np
from scipy import stats as sps

from bench.should_distill import _near, load_arms
from rslad_tune.sweep import stats
from rslad_tune.trial.files import read_json, write_json, write_text

# proxy -> (where on the card, sign that makes "predicted better" positive; 0: no predicted direction)
PROXIES = {
    "true_prob": ("training", +1), "clean_acc": ("training", +1), "nll": ("training", -1), "ece": ("training", -1),
    "entropy": ("training", 0), "pgd20": ("card", 0), "aa": ("card", 0), "params": ("card", 0)}
CARD_KEYS = {"pgd20": "pgd20_acc", "aa": "aa_acc", "params": "params"}


def proxy_values(card: dict) -> dict[str, float | None]:
    training = next(iter(card.get("proxies", {}).values()), {}).get("training", {})  # teacher.yaml's data: the one stored
    out = {}
    for name, (where, sign) in PROXIES.items():
        v = training.get(name) if where == "training" else card.get(CARD_KEYS[name])
        out[name] = None if v is None else (sign or 1) * float(v)
    return out


def _rho(x: list[float], y: list[float]) -> float | None:
    r = sps.spearmanr(x, y).statistic
    return None if r != r else float(r)


def correlate(teachers: list[str], proxies: dict, pgd: dict, *, seed: int = 0) -> dict:
    """Spearman of each proxy with the students' mean PGD-20 over `teachers`, permutation p, bootstrap interval."""
    means = [statistics.fmean(pgd[t].values()) for t in teachers]
    order = sorted(teachers, key=lambda t: -statistics.fmean(pgd[t].values()))
    near = set(_near(pgd, order))
    rng = np.random.default_rng(seed)
    out = {}
    for name in PROXIES:
        xs = [proxies[t][name] for t in teachers]
        if any(x is None for x in xs) or len(set(xs)) < 2:
            out[name] = None
            continue
        rho = stats.spearman(xs, means)
        if rho.rho is None:  # under 3 teachers, or constant: undefined
            out[name] = None
            continue
        if not rho.exact:  # twelve teachers: 12! orders are too many to list, so a Monte Carlo permutation test
            rx, ry = sps.rankdata(xs), sps.rankdata(means)
            res = sps.permutation_test((rx, ry), lambda u, v, axis=-1: _pearson(u, v, axis), permutation_type="pairings",
                                       vectorized=True, n_resamples=100_000, random_state=seed)
            p, how = float(res.pvalue), "Monte Carlo, 100,000 permutations"
        else:
            p, how = rho.pvalue, f"exact, all {math.factorial(len(teachers))} orders"
        boots = []
        for _ in range(2000):  # each teacher's seeds resampled with replacement
            m = [statistics.fmean(rng.choice(list(pgd[t].values()), size=len(pgd[t]))) for t in teachers]
            r = _rho(xs, m)
            if r is not None:
                boots.append(r)
        top = max(teachers, key=lambda t: proxies[t][name])
        out[name] = {"rho": rho.rho, "p": p, "p_method": how, "bootstrap": [float(np.quantile(boots, 0.025)),
                     float(np.quantile(boots, 0.975))], "top": top, "top1": top == order[0], "top_within_noise": top in near}
    return {"teachers": teachers, "gt_order": order, "gt_best": order[0], "near_best": sorted(near),
            "means": {t: statistics.fmean(pgd[t].values()) for t in teachers}, "seeds": {t: sorted(pgd[t]) for t in teachers},
            "proxies": out}


def _pearson(u, v, axis=-1):
    u = u - u.mean(axis=axis, keepdims=True)
    v = v - v.mean(axis=axis, keepdims=True)
    return (u * v).sum(axis=axis) / np.sqrt((u * u).sum(axis=axis) * (v * v).sum(axis=axis))


def markdown(res: dict[str, dict], proxies: dict) -> str:
    md = []
    for label, r in res.items():
        md += [f"## {label}: {len(r['teachers'])} teachers", "",
               "Students' test PGD-20 (mean over seeds): " + ", ".join(
                   f"{t} {r['means'][t]:.2f} ({len(r['seeds'][t])} seeds)" for t in r["gt_order"]) + ".",
               f"Best: {r['gt_best']}; within its noise (paired by seed, Holm): {', '.join(r['near_best'])}.", "",
               "| proxy | Spearman | permutation p | seed-bootstrap 95 % | proxy's top teacher | top-1 | within noise |",
               "|---|---|---|---|---|---|---|"]
        for name, c in r["proxies"].items():
            if c is None:
                md.append(f"| {name} | – | | | | | |")
                continue
            md.append(f"| {name} | {c['rho']:+.2f} | {c['p']:.3f} | {c['bootstrap'][0]:+.2f} to {c['bootstrap'][1]:+.2f} | "
                      f"{c['top']} | {'yes' if c['top1'] else 'no'} | {'yes' if c['top_within_noise'] else 'no'} |")
        md.append("")
        md.append("p: " + next((c["p_method"] for c in r["proxies"].values() if c), "–") + "; nll and ece negated "
                  "(lower predicted better), entropy / pgd20 / aa / params as they are.")
        md.append("")
    md += ["## The proxies", "", "| teacher | " + " | ".join(PROXIES) + " |", "|---" * (len(PROXIES) + 1) + "|"]
    for t in sorted(proxies):
        md.append(f"| {t} | " + " | ".join("–" if proxies[t][n] is None else f"{proxies[t][n]:.4g}" for n in PROXIES) + " |")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, help="the first ground truth's JSON (seeds 0-2 of the six first teachers)")
    ap.add_argument("--arm", type=Path, action="append", default=[], help="archives of the first teachers' students")
    ap.add_argument("--new", type=Path, action="append", default=[], help="archives of the new teachers' students")
    ap.add_argument("--zoo-cards", default="rslad_tune/teacher_zoo/fashion_mnist", type=Path)
    ap.add_argument("--out", default="docs/teacher-proxies/held-out")
    args = ap.parse_args()
    old_pgd, _ = load_arms(args.old, args.arm)
    new_pgd, _ = load_arms(None, args.new)
    cards = {p.parent.name: read_json(p) for p in args.zoo_cards.glob("*/card.json")}
    proxies = {t: proxy_values(cards[t]) for t in cards}
    old = sorted(t for t in old_pgd if t in cards)
    new = sorted(t for t in new_pgd if t in cards and len(new_pgd[t]) > 1)
    pgd = {**{t: old_pgd[t] for t in old}, **{t: new_pgd[t] for t in new}}
    res = {"New teachers alone (out of sample)": correlate(new, proxies, pgd)}
    if old:
        res["All teachers"] = correlate(old + new, proxies, pgd)
    write_json({"results": res, "proxies": {t: proxies[t] for t in old + new}}, Path(args.out + ".json"))
    md = markdown(res, {t: proxies[t] for t in old + new})
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


if __name__ == "__main__":
    main()


def proxies_on_space(space: Path, zoo: Path, teachers: list[str]) -> tuple[dict, str]:
    """Each zoo teacher's proxies on the student data of the sweep YAML `space` (the images that carry a label,
    as rslad_tune.teachers.proxies.folder_proxies reads them), computed here in memory (no card is written), in
    proxy_values' convention (nll and ece negated), and a line saying what they were computed on."""
    from rslad_tune.sweep.spec import load_sweep
    from rslad_tune.teachers.proxies import teacher_proxies
    from rslad_tune.teachers.sources import load_teacher
    from rslad_tune.trial.data import load_data

    trial = load_sweep(str(space), sweep=False).trial
    labelled = load_data(trial, "cpu").only_labelled()
    out = {}
    for t in teachers:
        p = teacher_proxies(load_teacher(zoo / t, "cpu"), labelled.train_x, labelled.train_y)
        out[t] = {name: None if p.get(name) is None else (sign or 1) * float(p[name])
                  for name, (where, sign) in PROXIES.items() if where == "training"}
    return out, (f"computed by this command on the {len(labelled.train_y)} labelled training images of "
                 f"{Path(space).name}'s data ({trial.dataset}, train_subset {trial.train_subset}, val_size "
                 f"{trial.val_size}, labelled {trial.labelled}), not read from the cards")
