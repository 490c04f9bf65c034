"""`rslad-tune teachers rank --space FILE [--by PROXY] [--json] [--space-only]`: a YAML's teachers ranked before any
student trains, with the other zoo teachers of its dataset beside them (marked; --space-only leaves them out).

Every teacher of the YAML is resolved (into its runs_dir, as a sweep would), its proxies computed once on the YAML's
student data and cached in its card (teachers/proxies.py), and one table printed, sorted by a proxy best first in
the direction docs/teacher-proxies/predictions.md predicts (lower nll and ece; higher otherwise), beside the card's
test PGD-20, AutoAttack and size. A teacher without proxies (the no-teacher baseline) comes last.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..teachers.folders import read_card
from ..teachers.proxies import (
    HIGHER_IS_BETTER,
    PROXIES,
    all_proxies,
    best_first,
    check_proxy,
)
from ..teachers.sources import prepare_teachers
from ..teachers.zoo import unnamed_zoo_teachers
from .spec import SweepSpec, load_sweep


def rank_rows(spec: SweepSpec, log: Callable[[str], None] = print, zoo: bool = True) -> list[dict]:
    """One row per teacher of the YAML (and, with zoo, per zoo teacher of its dataset it does not name): its proxies
    on the training images and the validation split, its card."""
    extra = unnamed_zoo_teachers(spec.teachers, spec.trial.dataset) if zoo else {}
    teachers = prepare_teachers({**spec.teachers, **extra}, spec.trial, Path(spec.runs_dir).resolve(), None, log)
    proxies = all_proxies(teachers, spec.trial, log)
    rows = []
    for name, t in teachers.items():
        c, p = read_card(t.folder), proxies[name] or {}
        rows.append({"teacher": name, "in_space": name not in extra, "control": t.control,
                     "training": p.get("training"), "validation": p.get("validation"),
                     "pgd20": c.get("pgd20_acc"), "pgd20_n": c.get("eval_n"), "aa": c.get("aa_acc"), "aa_n": c.get("aa_n"),
                     "params": c.get("params"), "source": c.get("source"), "folder": str(t.folder)})
    return rows


def sort_rows(rows: list[dict], by: str) -> list[dict]:
    order = best_first({r["teacher"]: (r["training"] or {}).get(by) for r in rows}, by)
    return sorted(rows, key=lambda r: order.index(r["teacher"]))


def format_rank(rows: list[dict], by: str, trial) -> str:
    head = ["rank", "teacher", *PROXIES, "PGD-20", "AutoAttack", "params", "source"]
    table, rank = [], 0
    for r in sort_rows(rows, by):
        t = r["training"]
        rank += t is not None
        table.append([str(rank) if t else "–", r["teacher"] + ("" if r["in_space"] else " *"), *(f"{t[k]:.4f}" if t else "–" for k in PROXIES),
                      "–" if r["pgd20"] is None else f"{100 * r['pgd20']:.2f} ({r['pgd20_n']})",
                      "–" if r["aa"] is None else f"{100 * r['aa']:.2f} ({r['aa_n']})",
                      "–" if not r["params"] else f"{r['params']:,}", str(r["source"] or "–")])
    widths = [max(len(x) for x in col) for col in zip(head, *table)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *table]]
    n = next((r["training"]["n"] for r in rows if r["training"]), 0)
    lines.append(f"sorted by {by}, {'higher' if HIGHER_IS_BETTER[by] else 'lower'} first"
                 + (" (entropy: no predicted direction)" if by == "entropy" else "") + f"; proxies on the {n} training "
                 f"images of {trial.dataset} (train_subset {trial.train_subset}, val_size {trial.val_size}); PGD-20 and "
                 "AutoAttack: the card's, % on the test split (images); – : no teacher to measure")
    if not all(r["in_space"] for r in rows):
        lines.append(f"* a zoo teacher of {trial.dataset} that this YAML does not name: add `<name>: {{zoo: "
                     f"{trial.dataset}/<name>}}` under teachers: (and to search.teacher) to give it students; "
                     "--space-only hides them")
    return "\n".join(lines)


def cmd_rank(args, log: Callable[[str], None] = print) -> int:
    """The CLI verb: `teachers rank`."""
    import sys

    from .places import place
    from .preflight import check_sweep

    by = check_proxy(args.by, "--by")
    spec = place(load_sweep(args.space, sweep=False))
    check_sweep(spec, verb="teachers")  # the teachers' files and names, the data: one line before anything is written
    rows = rank_rows(spec, (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else log,  # stdout: the JSON
                     zoo=not args.space_only)
    if args.json:
        print(json.dumps({"by": by, "rows": sort_rows(rows, by)}, indent=2))
    else:
        print("\n" + format_rank(rows, by, spec.trial), flush=True)
    return 0
