"""Would prescreening teachers by a proxy let teacher.yaml find the right choice at a fraction of the compute -- and is
that the proxy's doing, or only a smaller race's?

    python -m bench.prescreen_replay --old docs/teacher-selection/ground-truth.json --arm results/baseline_groundtruth \
        --arm results/teacher_groundtruth_fresh --arm results/teacher_groundtruth_new [--out docs/teacher-proxies/prescreen-replay]

The choices: every zoo teacher whose RSLAD students are archived (alpha 0.75, epsilon 0.1, 6 epochs) and the
no-teacher baseline (the same student, SAT alone), on the seeds they all share. One replayed sweep: `tune.prescreen`
keeps the K teachers with the best proxy on their cards and the baseline, then one trial per kept choice in a
shuffled order, all at one seed, each reporting that seed's recorded validation curve to the tool's scheduler at
teacher.yaml's rungs (the baseline a reference arm: never stopped, out of the rungs); the pick is the choice of the
best trial. Scored on the other seeds (bench.selection_regret): regret with seed-bootstrap intervals, hit rates,
compute (trained epochs over the ground truth's; a proxy costs one forward pass of each teacher, stored on the zoo's
cards, not counted), and the three controls run on the same replays: K random teachers + the baseline, the
baseline alone, and the proxy's K worst-ranked teachers + the baseline. The proxy's claim is its regret minus the
random control's at the same K, with its seed-bootstrap interval.

A regime cell (`--cell`, with `--space` the sweep YAML replayed on it), e.g. few labels:

    python -m bench.prescreen_replay --cell results/regime_few_labels --space search_spaces/few_labels.yaml \
        --baseline none --reference pseudo --objective pgd --objective balanced --out docs/regimes/prescreen-replay-few-labels

The choices are the cell's arms (its sweep's `teacher` values): the zoo teachers, the baseline and the other
reference arms, which every prescreen and control keeps; the proxies are computed on the YAML's data
(bench.proxy_test.proxies_on_space), the rungs are the YAML's, and each `--objective` (pgd; balanced: (clean +
PGD-20) / 2, picked by it at each trial's kept epoch while ASHA stops on PGD-20) gets its section.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.proxy_test import PROXIES, proxy_values
from bench.selection_regret import (OBJECTIVES, Policy, add_cell_arguments, baseline_alone, cell_markdown,
                                    controls, load_cell_replay, markdown, provenance, race, score, verdicts)
from bench.should_distill import BASELINE, LABELS, load_arms
from rslad_tune.trial.files import read_json, write_json, write_text

GRACE, RF = 3, 2  # teacher.yaml's ASHA


def policies(teachers: list[str], proxies: dict, bys: list[str], keeps: list[int], max_t: int,
             baseline: str = BASELINE, extra: tuple[str, ...] = (), grace: int = GRACE, rf: int = RF,
             space: str = "teacher.yaml") -> list[Policy]:
    """Per proxy and K: the prescreen and its worst-K control; per K: the random control; then no prescreen (every
    teacher raced) and the baseline alone (and, with `extra` reference arms, which every row but that one keeps:
    the reference arms alone)."""
    out, seen = [], set()
    refs = [baseline, *extra]
    names = " + ".join(refs)
    for k in keeps:
        random_name = f"control: random {k} + {names}"
        for by in bys:
            sign = PROXIES[by][1] or 1  # proxy_values already negated nll and ece: larger is predicted better
            ranked = sorted(teachers, key=lambda t: -sign * proxies[t][by])
            kept = ranked[:k] + refs
            out.append(Policy(f"prescreen by {by}, K = {k}", race(kept, grace, rf, max_t, set(refs)), ", ".join(kept),
                              k=k, random_control=random_name))
            for c in controls(ranked, k, baseline, by, grace, rf, max_t, random_name, extra):
                if c.name not in seen:
                    seen.add(c.name)
                    out.append(c)
    choices, top = teachers + refs, out[0]
    before = "baseline in the race (as before)" if not extra else f"{' and '.join(refs)} in the race"
    return out + [Policy(f"no prescreen ({space} as it is)", race(choices, grace, rf, max_t, set(refs)),
                         f"all {len(choices)}"),
                  Policy(f"{top.name}, {before}", race(top.kept.split(", "), grace, rf, max_t, set()), top.kept),
                  Policy(f"no prescreen, {before}", race(choices, grace, rf, max_t, set()), f"all {len(choices)}"),
                  Policy(f"control: {baseline} alone", baseline_alone(baseline, max_t), baseline, control=True)] + (
        [Policy(f"control: the reference arms alone ({names})", race(refs, grace, rf, max_t, set(refs)),
                ", ".join(refs), control=True)] if extra else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, help="the first ground truth's JSON (seeds 0-2 of the six first teachers)")
    ap.add_argument("--arm", type=Path, action="append", default=[], help="archives of students (results/...)")
    ap.add_argument("--zoo-cards", default="rslad_tune/teacher_zoo/fashion_mnist", type=Path)
    ap.add_argument("--by", action="append", default=None, help="proxies to prescreen by (default true_prob, clean_acc)")
    ap.add_argument("--keep", type=int, action="append", default=None, help="K values (default 1 2 3)")
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--boots", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/teacher-proxies/prescreen-replay")
    add_cell_arguments(ap)
    args = ap.parse_args()
    if args.cell:
        return main_cell(args)
    pgd, curves = load_arms(args.old, args.arm)
    cards = {p.parent.name: read_json(p) for p in args.zoo_cards.glob("*/card.json")}
    teachers = sorted(a for a in pgd if a in cards and a != LABELS)
    choices = teachers + [BASELINE]
    max_t = min(len(c) for a in choices for c in curves[a].values())
    proxies = {t: proxy_values(cards[t]) for t in teachers}
    result = score(policies(teachers, proxies, args.by or ["true_prob", "clean_acc"], args.keep or [1, 2, 3], max_t),
                   pgd, curves, choices, BASELINE, max_t=max_t, draws=args.draws, boots=args.boots, seed=args.seed)
    head, record = provenance("bench.prescreen_replay", [args.old, *args.arm])
    md = "\n".join([f"# Prescreen replay, judged by regret: {', '.join(a.name for a in args.arm)}", "", head, ""]
                   + markdown(result) + ["", f"ASHA grace {GRACE}, reduction factor {RF} (teacher.yaml's); the baseline a "
                                             "reference arm (never stopped, out of the rungs) except in the rows "
                                             "\"baseline in the race (as before)\", where ASHA may stop it like any "
                                             "trial, as sweeps ran it before reference arms."]
                   + [""] + [f"- {v}" for v in verdicts(result)])
    write_json(record | {"arms": [str(a) for a in args.arm], "old": str(args.old), "result": result},
               Path(args.out + ".json"))
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


def main_cell(args) -> None:
    """The replay on a regime cell: one section per objective."""
    c = load_cell_replay(args, args.zoo_cards)
    bys, keeps = args.by or ["true_prob", "clean_acc"], args.keep or [1, 2, 3]
    results = {o: score(policies(c.teachers, c.proxies, bys, keeps, c.max_t, c.baseline, c.extra, c.grace, c.rf,
                                 c.space),
                        truth, curves, c.choices, c.baseline, max_t=c.max_t, draws=args.draws, boots=args.boots,
                        seed=args.seed, metric=OBJECTIVES[o], picks=True)
               for o, (truth, curves) in c.data.items()}
    head, record = provenance("bench.prescreen_replay", args.cell)
    refs = " and ".join([c.baseline, *c.extra])
    notes = [f"A replayed sweep: the prescreen keeps the K teachers with the best proxy and the reference arms ({refs}), "
             f"then one trial per kept choice in a shuffled order, all at one seed, each reporting that seed's recorded "
             f"validation curve to the tool's scheduler at {c.space}'s rungs (reference arms never stopped, out of "
             f"the rungs; rows \"... in the race\": stopped like any trial). A proxy costs one forward pass of each "
             "teacher over the labelled images, not counted in the compute."]
    md = cell_markdown(f"Prescreen replayed on {', '.join(a.name for a in args.cell)}, judged by regret", head, c,
                       results, notes)
    write_json(record | c.record(args) | {"results": results}, Path(args.out + ".json"))
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


if __name__ == "__main__":
    main()
