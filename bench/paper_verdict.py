"""The paper comparison's verdict, from the archived trial rows (bench/archive_trials.py):

    python -m bench.paper_verdict results/paper_fmnist results/paper_fmnist_klpaper --out docs/paper-comparison

1. RSLAD against each baseline: the difference in PGD-20 (PGD_SAT) and AutoAttack, paired by seed (same seed =
   same data order and initialisation), its mean, spread, and a 95 % t-interval; beyond the noise when the interval
   excludes 0. AutoAttack is paired over the seeds it was run for; with one seed there is no spread, so the
   difference is set against 2 sd of a one-seed difference: the pair's PGD-20 seed spread combined with the
   sampling error of two accuracies on the AA images (the independent-samples bound).
2. The loss scale: RSLAD and ARD at kl_reduction batchmean against paper (at the same lr and at lr x10).
3. Best-to-last drop per method: best-checkpoint minus last-checkpoint PGD-20, per seed.
4. Wall time per arm: training (Ray's time_total_s of each trial) and scoring (the suite's seconds).

Writes <out>/verdict.md (the tables) and <out>/verdict.json (every number, with the rows' trial ids).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.archive_trials import scored_rows
from rslad_tune.sweep import stats
from rslad_tune.sweep.compare import aggregate, format_markdown
from rslad_tune.sweep.spec import load_sweep
from rslad_tune.teachers import zoo
from rslad_tune.trial.files import read_json, write_json, write_text
from rslad_tune.trial.methods import METHODS

REFERENCE = ("rslad", "batchmean")  # RSLAD at the per-sample scale, the lr every method shares
BASELINES = ("natural", "sat", "trades", "mart", "ard", "iad")


def arm(row: dict) -> tuple:
    """A row's treatment: method, KL scale (for the KL-distilling methods), lr."""
    c = row["config"]
    kl = c.get("kl_reduction", "batchmean") if "kl_reduction" in METHODS[c["method"]].knobs else None
    return c["method"], kl, c["lr"]


def arm_name(a: tuple) -> str:
    method, kl, lr = a
    return method + (f" ({kl}, lr {lr:g})" if kl else f" (lr {lr:g})")


def paired(ref: list[dict], other: list[dict], get) -> dict | None:
    """Differences ref - other (points) over the seeds both have a value for."""
    a = {r["seed"]: get(r) for r in ref}
    b = {r["seed"]: get(r) for r in other}
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    if not seeds:
        return None
    d = [100 * (a[s] - b[s]) for s in seeds]
    out = {"seeds": seeds, "diffs": d, "mean": statistics.fmean(d), "n": len(d)}
    if len(d) > 1:  # t at n - 1 dof, the two-sided p (for Holm) and the smallest difference n seeds detect at 80 %
        t = stats.paired_difference({s: 100 * a[s] for s in seeds}, {s: 100 * b[s] for s in seeds})
        out |= {"std": statistics.stdev(d), "half_ci95": t.halfwidth, "p": t.pvalue, "mdd": t.mdd,
                "beyond_noise": abs(out["mean"]) > t.halfwidth}
    return out


def holm_family(pairs: list[dict | None]) -> None:
    """Several comparisons with one reference: Holm-adjusted p, and "beyond noise" only when that is < 0.05."""
    tested = [p for p in pairs if p and p.get("p") is not None]
    for p, adj in zip(tested, stats.holm([p["p"] for p in tested])):
        p["p_holm"], p["beyond_noise"] = adj, adj < 0.05


def _pgd(which: str):
    return (lambda r: r.get("PGD_SAT")) if which == "best" else (lambda r: r.get("last", {}).get("PGD_SAT"))


def teacher_cards(dirs: list[Path]) -> dict[str, dict]:
    """The zoo teachers' cards, by the name the archived spaces give them (the card's test PGD-20 and AA)."""
    cards = {}
    for d in dirs:
        if (d / "space.yaml").is_file():
            for name, t in load_sweep(d / "space.yaml").teachers.items():
                if t.source == "zoo":  # a shipped teacher: its card is in the zoo
                    cards[name] = read_json(zoo.zoo_folder(t.args["zoo"]) / "card.json")
    return cards


def headroom(rows: list[dict], cards: dict[str, dict]) -> list[dict]:
    """How much more robust each teacher is than the SAT-trained student (test PGD-20, best checkpoints)."""
    sat = [100 * r["PGD_SAT"] for r in rows if r["method"] == "sat"]
    return [{"teacher": name, "teacher_pgd20": 100 * c["pgd20_acc"], "sat_student_pgd20": statistics.fmean(sat),
             "sat_seeds": len(sat), "headroom": 100 * c["pgd20_acc"] - statistics.fmean(sat)}
            for name, c in cards.items() if sat]


def verdict(rows: list[dict]) -> dict:
    arms: dict[tuple, list[dict]] = {}
    for r in rows:
        arms.setdefault(arm(r), []).append(r)
    lr0 = next((a[2] for a in arms if a[:2] == REFERENCE), None)
    ref_arm = (*REFERENCE, lr0)
    ref = arms.get(ref_arm, [])
    out: dict = {"reference": arm_name(ref_arm) if ref else None, "against_baselines": [], "loss_scale": [],
                 "best_to_last": [], "wall_time": []}
    if ref:
        for b in BASELINES:
            b_arm = (b, "batchmean" if b == "ard" else None, lr0)
            if b_arm not in arms:
                continue
            pgd = paired(ref, arms[b_arm], _pgd("best"))
            aa = paired(ref, arms[b_arm], lambda r: r.get("AA"))
            if aa and aa["n"] == 1 and pgd and pgd.get("std") is not None:
                # one AA seed has no spread of its own: its noise is the pair's PGD-20 seed spread plus the sampling
                # error of two accuracies on n_aa images (the independent-samples bound; shared images only lower it)
                pair = [r for r in ref + arms[b_arm] if r["seed"] == aa["seeds"][0] and "AA" in r]
                n_aa = min(r["n_aa"] for r in pair)
                sampling = 100 * (sum(r["AA"] * (1 - r["AA"]) for r in pair) / n_aa) ** 0.5
                aa["noise_std"] = (pgd["std"] ** 2 + sampling ** 2) ** 0.5
                aa["sampling_std"], aa["seed_std"] = sampling, pgd["std"]
                aa["beyond_noise"] = abs(aa["mean"]) > 2 * aa["noise_std"]
            out["against_baselines"].append({"baseline": arm_name(b_arm), "pgd20": pgd, "aa": aa,
                                             "pgd20_last": paired(ref, arms[b_arm], _pgd("last")),
                                             "clean": paired(ref, arms[b_arm], lambda r: r.get("Clean"))})
    for key in ("pgd20", "pgd20_last", "clean"):  # RSLAD against every baseline: one family per measure
        holm_family([b[key] for b in out["against_baselines"]])
    for method in (m for m, cls in METHODS.items() if "kl_reduction" in cls.knobs):
        base = arms.get((method, "batchmean", lr0))
        for a in sorted(k for k in arms if k[0] == method and k[1] == "paper"):
            if base:
                out["loss_scale"].append({
                    "batchmean": arm_name((method, "batchmean", lr0)), "paper": arm_name(a),
                    "pgd20": paired(base, arms[a], _pgd("best")), "aa": paired(base, arms[a], lambda r: r.get("AA")),
                    "clean": paired(base, arms[a], lambda r: r.get("Clean"))})
    for a, rs in sorted(arms.items(), key=lambda kv: arm_name(kv[0])):
        drops = [100 * (r["PGD_SAT"] - r["last"]["PGD_SAT"]) for r in rs if "PGD_SAT" in r.get("last", {})]
        if drops:
            out["best_to_last"].append({
                "arm": arm_name(a), "drop_mean": statistics.fmean(drops),
                "drop_std": statistics.stdev(drops) if len(drops) > 1 else None, "drops": drops,
                "best_epochs": [r.get("best_epoch") for r in rs], "last_epochs": [r.get("last_epoch") for r in rs]})
        train = [r["train_s"] for r in rs if r.get("train_s") is not None]
        score = [r["seconds"] for r in rs if r.get("seconds") is not None]
        out["wall_time"].append({"arm": arm_name(a), "trials": len(rs), "train_s": sum(train), "score_s": sum(score),
                                 "train_s_per_trial": statistics.fmean(train) if train else None,
                                 "score_s_per_trial": statistics.fmean(score) if score else None})
    return out


def _diff(p: dict | None) -> str:
    if not p:
        return "–"
    if "half_ci95" in p:
        holm = f", Holm p {p['p_holm']:.3f}" if "p_holm" in p else ""
        return (f"{p['mean']:+.2f} ± {p['half_ci95']:.2f} (sd {p['std']:.2f}, n {p['n']}{holm}) "
                + ("**beyond noise**" if p["beyond_noise"] else f"within noise (smallest detectable {p['mdd']:.2f})"))
    if "noise_std" in p:
        return (f"{p['mean']:+.2f} (seed {p['seeds'][0]} only; noise sd {p['noise_std']:.2f}: seeds {p['seed_std']:.2f}, "
                f"images {p['sampling_std']:.2f}) " + ("**beyond noise**" if p["beyond_noise"] else "within noise"))
    return f"{p['mean']:+.2f} (seed {p['seeds'][0]} only)"


def _minutes(s: float | None) -> str:
    return "–" if s is None else f"{s / 60:.1f}"


def format_verdict(v: dict) -> str:
    md = [f"Teacher headroom: {h['teacher']} {h['teacher_pgd20']:.2f} % test PGD-20 (its card) against the SAT-trained "
          f"student's {h['sat_student_pgd20']:.2f} % (mean of {h['sat_seeds']} seeds): **{h['headroom']:+.2f} points**."
          for h in v.get("headroom", [])] + [""]
    if not v["reference"]:
        return "\n".join(md + ["(RSLAD at the batchmean scale is not scored yet: no paired differences.)"])
    md += [f"### {v['reference']} minus each baseline (points; mean ± 95 % t-interval over seeds, paired by seed)", "",
          "| baseline | PGD-20, best | PGD-20, last | AutoAttack, best | Clean, best |", "|---|---|---|---|---|"]
    md += [f"| {b['baseline']} | {_diff(b['pgd20'])} | {_diff(b['pgd20_last'])} | {_diff(b['aa'])} | {_diff(b['clean'])} |"
           for b in v["against_baselines"]]
    md += ["", "### Loss scale: batchmean minus paper (points, paired by seed, best checkpoints)", "",
           "| batchmean | paper | PGD-20 | AutoAttack | Clean |", "|---|---|---|---|---|"]
    md += [f"| {s['batchmean']} | {s['paper']} | {_diff(s['pgd20'])} | {_diff(s['aa'])} | {_diff(s['clean'])} |"
           for s in v["loss_scale"]]
    md += ["", "### Best-to-last drop (best minus last checkpoint, PGD-20, points)", "",
           "| arm | drop mean ± sd | per seed | best epochs | last epoch |", "|---|---|---|---|---|"]
    md += [f"| {d['arm']} | {d['drop_mean']:+.2f}" + (f" ± {d['drop_std']:.2f}" if d["drop_std"] is not None else "")
           + f" | {', '.join(f'{x:+.2f}' for x in d['drops'])} "
           f"| {', '.join(map(str, d['best_epochs']))} | {d['last_epochs'][0]} |" for d in v["best_to_last"]]
    if v["wall_time"]:
        md += ["", "### Wall time (minutes; training: Ray's time_total_s per trial, two trials at a time on the same "
               "cores; scoring: the test-split suite, AutoAttack included for seed 0)", "",
               "| arm | trials | training per trial | scoring per trial | training, all | scoring, all |",
               "|---|---|---|---|---|---|"]
        md += [f"| {w['arm']} | {w['trials']} | {_minutes(w['train_s_per_trial'])} | {_minutes(w['score_s_per_trial'])} "
               f"| {_minutes(w['train_s'])} | {_minutes(w['score_s'])} |" for w in v["wall_time"]]
        tot = [sum(w[k] for w in v["wall_time"]) for k in ("train_s", "score_s")]
        md += [f"| all | {sum(w['trials'] for w in v['wall_time'])} | | | {_minutes(tot[0])} | {_minutes(tot[1])} |"]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="results/<experiment> folders written by bench.archive_trials")
    ap.add_argument("--out", type=Path, help="write verdict.md and verdict.json here")
    args = ap.parse_args()
    rows = scored_rows(args.dirs)
    if not rows:
        raise SystemExit(f"no scored trial in {', '.join(map(str, args.dirs))}")
    v = verdict(rows) | {"headroom": headroom(rows, teacher_cards(args.dirs))}
    md = format_markdown(aggregate(rows), rows) + "\n\n" + format_verdict(v)
    print(md)
    if args.out:
        sweeps = {str(d): read_json(d / "sweep.json") for d in args.dirs if (d / "sweep.json").is_file()}
        write_json({"sweeps": sweeps, "verdict": v, "trials": sorted(r["trial_id"] for r in rows)}, args.out / "verdict.json")
        write_text(md + "\n", args.out / "verdict.md")


if __name__ == "__main__":
    main()
