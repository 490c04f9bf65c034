"""Which ASHA settings pick the right choice, and at what regret? teacher.yaml's sweep replayed on the 9-seed curves.

    python -m bench.asha_simulation --old docs/teacher-selection/ground-truth.json --arm results/baseline_groundtruth \
        --arm results/teacher_groundtruth_fresh [--out docs/teacher-selection/asha-regret]

The choices: teacher.yaml's six zoo teachers and the no-teacher baseline (`none`), their students archived at its
equal-hyper-parameter point (alpha 0.75, epsilon 0.1, 6 epochs) on the seeds all of them share (0-8; seeds 0-2 of
the teachers from the first ground truth, `--old`). A replayed sweep is teacher.yaml's first pass: one trial per
choice in a shuffled order, all at one seed, each reporting that seed's recorded validation curve to the tool's
scheduler (bench.selection_regret.replay: Ray's AsyncHyperBandScheduler, the baseline a reference arm that is
never stopped and stays out of the rungs, as sweeps now run it; the rows marked "baseline in the race" run it as
any other trial, as before). The pick is the choice of the best trial by best validation PGD-20 (what export ships),
scored on the other seeds' test PGD-20: regret with seed-bootstrap intervals, hit rates and compute
(bench.selection_regret), against three controls: a random teacher + the baseline, the baseline alone, and the
worst teacher by the true-class-probability proxy + the baseline, each raced the same way at teacher.yaml's rungs.

A regime cell (`--cell`, with `--space` the sweep YAML replayed on it), e.g. few labels:

    python -m bench.asha_simulation --cell results/regime_few_labels --space search_spaces/few_labels.yaml \
        --baseline none --reference pseudo --objective pgd --objective balanced --out docs/regimes/asha-replay-few-labels

The choices are the cell's arms (its sweep's `teacher` values): the zoo teachers, the baseline and the other
reference arms (every control keeps them all); the proxy of the worst-teacher control is computed on the YAML's
data (bench.proxy_test.proxies_on_space); each `--objective` (pgd; balanced: (clean + PGD-20) / 2, picked by it at
each trial's kept epoch while ASHA stops on PGD-20) gets its section.

What it leaves out, said plainly: later trials of the real sweep (num_samples above 7) use other alpha/epsilon values,
and two concurrent trials can reach a rung in either order; trials here report one after another.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.proxy_test import proxy_values
from bench.selection_regret import (OBJECTIVES, Policy, add_cell_arguments, baseline_alone, cell_markdown, controls,
                                    load_cell_replay, markdown, provenance, race, score, verdicts)
from bench.should_distill import BASELINE, load_arms
from rslad_tune.sweep.scheduling import asha_scheduler, milestones
from rslad_tune.trial.files import read_json, write_json, write_text

SETTINGS = [(1, 2), (2, 2), (3, 2), (1, 3), (2, 3)]  # (grace period, reduction factor); teacher.yaml's: (3, 2)
SHIPPED = (3, 2)


def policies(teachers: list[str], proxies: dict, max_t: int, baseline: str = BASELINE, extra: tuple[str, ...] = (),
             shipped: tuple[int, int] = SHIPPED, space: str = "teacher.yaml") -> list[Policy]:
    """Every ASHA setting with the reference arms (`baseline` and `extra`) as references and in the race, then the
    controls at `shipped`: a random teacher, the proxy's worst, the baseline alone (and, with `extra`, the
    reference arms alone), each with the reference arms."""
    refs = [baseline, *extra]
    choices, names = teachers + refs, " + ".join(refs)
    hows = ((set(refs), "baseline a reference"), (set(), "baseline in the race (as before)")) if not extra else (
        (set(refs), f"{' and '.join(refs)} references"), (set(), f"{' and '.join(refs)} in the race"))
    out = []
    for grace, rf in SETTINGS:
        rungs = milestones(asha_scheduler(max_t, grace, rf), max_t)
        for references, how in hows:
            out.append(Policy(f"ASHA grace {grace}, rf {rf} (rungs {rungs}), {how}"
                              + (f" ({space})" if (grace, rf) == shipped and references else ""),
                              race(choices, grace, rf, max_t, references), f"all {len(choices)}, one trial each",
                              random_control=f"control: random 1 + {names}"))
    by_proxy = sorted(teachers, key=lambda t: -proxies[t]["true_prob"])
    grace, rf = shipped
    return out + controls(by_proxy, 1, baseline, "true_prob", grace, rf, max_t, f"control: random 1 + {names}",
                          extra) + [
        Policy("control: the baseline alone", baseline_alone(baseline, max_t), baseline, control=True)] + (
        [Policy(f"control: the reference arms alone ({names})", race(refs, grace, rf, max_t, set(refs)),
                ", ".join(refs), control=True)] if extra else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, help="the first ground truth's JSON (seeds 0-2 of the six first teachers)")
    ap.add_argument("--arm", type=Path, action="append", default=[], help="archives of students (results/...)")
    ap.add_argument("--zoo-cards", default="rslad_tune/teacher_zoo/fashion_mnist", type=Path)
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--boots", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/teacher-selection/asha-regret")
    add_cell_arguments(ap)
    args = ap.parse_args()
    if args.cell:
        return main_cell(args)
    pgd, curves = load_arms(args.old, args.arm)
    cards = {p.parent.name: read_json(p) for p in args.zoo_cards.glob("*/card.json")}
    teachers = sorted(a for a in pgd if a in cards)
    choices = teachers + [BASELINE]
    max_t = min(len(c) for a in choices for c in curves[a].values())
    result = score(policies(teachers, {t: proxy_values(cards[t]) for t in teachers}, max_t),
                   pgd, curves, choices, BASELINE, max_t=max_t, draws=args.draws, boots=args.boots, seed=args.seed)
    head, record = provenance("bench.asha_simulation", [args.old, *args.arm])
    md = "\n".join([f"# ASHA replayed, judged by regret: {', '.join(a.name for a in args.arm)}", "", head, ""]
                   + markdown(result) + [""] + [f"- {v}" for v in verdicts(result)])
    write_json(record | {"old": str(args.old), "result": result}, Path(args.out + ".json"))
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


def main_cell(args) -> None:
    """The replay on a regime cell: one section per objective."""
    c = load_cell_replay(args, args.zoo_cards)
    results = {o: score(policies(c.teachers, c.proxies, c.max_t, c.baseline, c.extra, (c.grace, c.rf), c.space),
                        truth, curves, c.choices, c.baseline, max_t=c.max_t, draws=args.draws, boots=args.boots,
                        seed=args.seed, metric=OBJECTIVES[o], picks=True)
               for o, (truth, curves) in c.data.items()}
    head, record = provenance("bench.asha_simulation", args.cell)
    notes = [f"A replayed sweep is {c.space}'s: one trial per choice in a shuffled order, all at one seed, each "
             "reporting that seed's recorded validation curve to the tool's scheduler (reference arms never stopped, "
             "out of the rungs; rows \"... in the race\": stopped like any trial). The rows at other ASHA settings "
             f"are what-ifs; the controls run at {c.space}'s."]
    md = cell_markdown(f"ASHA replayed on {', '.join(a.name for a in args.cell)}, judged by regret", head, c, results,
                       notes)
    write_json(record | c.record(args) | {"results": results}, Path(args.out + ".json"))
    write_text(md + "\n", Path(args.out + ".md"))
    print(md)


if __name__ == "__main__":
    main()
