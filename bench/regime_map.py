"""Where distillation pays: one cell of the regime map (docs/regimes/) from its archived trials.

    python -m bench.regime_map results/regime_eps02 --out docs/regimes/eps02 [--reference none]
    python -m bench.regime_map results/baseline_groundtruth results/teacher_groundtruth_fresh --seeds 3,4,5,6,7,8 \
        --out docs/should-distill/both-axes     # several archives: only if their sweeps ran at one commit

Arms are the sweep's `teacher` values (the no-teacher baseline `none` is the reference; a pseudo-label baseline is
an arm like a teacher). Every number is test accuracy on the archived suite rows (bench.archive_trials: clean and
PGD-20 on all test images, best and last checkpoints). For each checkpoint: each arm's mean with its 95 %
t-interval; each arm minus the reference on both axes, paired by seed (the cell's arms share one sweep and
commit), Holm-corrected over the arms per axis, classed helps / trade / hurts / cannot tell with the report's
own rule (rslad_tune.sweep.selection_verdict.both_axes); the best teacher against the worst and the best RSLAD
arm against the pseudo-label baseline (paired); the pooled seed std and what 6 seeds can detect.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rslad_tune.sweep import stats
from rslad_tune.sweep.selection_verdict import both_axes, difference
from rslad_tune.sweep.two_axes import phrase
from rslad_tune.trial.files import read_json, write_json, write_text

CHECKPOINTS = ("best", "last")


def load_cell(folders: list[Path], seeds: set[int] | None = None) -> dict[str, dict[str, dict[int, dict]]]:
    """checkpoint -> arm -> seed -> {"pgd20", "clean"} (fractions), from every scored archived trial (of `seeds`).
    A trial without a teacher is the arm `none` (a baseline sweep's SAT students)."""
    cells: dict[str, dict] = {c: {} for c in CHECKPOINTS}
    for f in sorted(f for folder in folders for f in folder.glob("*.json")):
        if f.name == "sweep.json":
            continue
        r = read_json(f)
        suite = r.get("suite")
        if not suite or (seeds is not None and r["config"]["seed"] not in seeds):
            continue
        arm, seed = r["config"].get("teacher") or "none", r["config"]["seed"]
        cells["best"].setdefault(arm, {})[seed] = {"pgd20": suite["PGD_SAT"], "clean": suite["Clean"]}
        last = suite.get("last")
        if last:
            cells["last"].setdefault(arm, {})[seed] = {"pgd20": last["PGD_SAT"], "clean": last["Clean"]}
    return cells


def _row(arm: str, seeds: dict[int, dict]) -> dict:
    """An arm as a selection-report row (what selection_verdict reads)."""
    return {"teacher": arm, "decided": True, "students": [{"seed": s, **v} for s, v in sorted(seeds.items())]}


def _one(c: dict) -> dict:
    """A single comparison (not corrected): beyond the noise at 5 %."""
    return c | {"real": c["p"] is not None and c["p"] < 0.05}


def analyse(arms: dict[str, dict[int, dict]], reference: str) -> dict:
    table = {}
    for arm, seeds in arms.items():
        table[arm] = {"seeds": sorted(seeds)}
        for axis in ("pgd20", "clean"):
            m = stats.mean_interval([100 * v[axis] for v in seeds.values()])
            table[arm][axis] = {"mean": m.mean, "halfwidth": m.halfwidth, "sd": m.sd, "n": m.n}
    rows = {a: _row(a, s) for a, s in arms.items()}
    others = [a for a in arms if a != reference]
    out: dict = {"reference": reference, "table": table}
    for axis in ("pgd20", "clean"):
        sd, dof = stats.pooled_std([[100 * v[axis] for v in s.values()] for s in arms.values()])
        out[f"pooled_sd_{axis}"], out[f"pooled_dof_{axis}"] = sd, dof
    if reference in rows:
        out["vs_reference"] = both_axes([rows[a] for a in others], rows[reference], (None, 0), (None, 0))
    teachers = [a for a in others if not a.startswith("pseudo")]
    if len(teachers) > 1:
        by_pgd = sorted(teachers, key=lambda a: -table[a]["pgd20"]["mean"])
        out["best_vs_worst_teacher"] = {axis: _one(difference(rows[by_pgd[0]], rows[by_pgd[-1]], None, 0, axis))
                                        for axis in ("pgd20", "clean")}
        if "pseudo" in rows:
            out["best_teacher_vs_pseudo"] = {axis: _one(difference(rows[by_pgd[0]], rows["pseudo"], None, 0, axis))
                                             for axis in ("pgd20", "clean")}
    return out


def _pm(cell: dict) -> str:
    return f"{cell['mean']:.2f} ± {cell['halfwidth']:.2f}" if cell["halfwidth"] is not None else f"{cell['mean']:.2f}"


def markdown(res: dict, title: str, header: str) -> str:
    md = [f"# {title}", "", header, ""]
    for ck in (c for c in CHECKPOINTS if c in res):
        a = res[ck]
        md += [f"## {ck} checkpoint", "", "| arm | seeds | clean | PGD-20 | class vs " + a["reference"] + " |", "|---|---|---|---|---|"]
        classes = {b["teacher"]: b["class"] for b in a.get("vs_reference", [])}
        order = sorted(a["table"], key=lambda x: (x != a["reference"], -a["table"][x]["pgd20"]["mean"]))
        md += [f"| {arm} | {len(a['table'][arm]['seeds'])} | {_pm(a['table'][arm]['clean'])} | {_pm(a['table'][arm]['pgd20'])} | "
               f"{'reference' if arm == a['reference'] else classes.get(arm, '–').replace('_', ' ')} |" for arm in order]
        md += ["", "Accuracy in % on the test split, mean ± 95 % t-interval over seeds.", ""]
        for b in a.get("vs_reference", []):
            md.append(f"- **{b['teacher']} − {a['reference']}: {b['class'].replace('_', ' ')}** — {phrase(b['pgd20'])}; "
                      f"{phrase(b['clean'])} (paired by seed, 95 % t-interval, Holm over {len(a['vs_reference'])} arms per axis).")
        for key, what in (("best_vs_worst_teacher", "best teacher − worst teacher (by PGD-20)"),
                          ("best_teacher_vs_pseudo", "best teacher − pseudo-label SAT")):
            if key in a:
                c = a[key]
                md.append(f"- {what}: {c['pgd20']['a']} − {c['pgd20']['b']}: {phrase(c['pgd20'])}; {phrase(c['clean'])} "
                          "(paired, one comparison, not corrected).")
        md.append(f"- Pooled seed sd of one arm: PGD-20 {a['pooled_sd_pgd20']:.2f}, clean {a['pooled_sd_clean']:.2f} points "
                  f"({a['pooled_dof_pgd20']} dof). \"Smallest detectable\": the paired difference these seeds detect at "
                  "80 % power (two-sided t-test at 5 %, before Holm).")
        md.append("")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("archive", type=Path, nargs="+", help="results/<cell>: bench.archive_trials' folder(s), of one commit")
    ap.add_argument("--seeds", default=None, help="only these seeds, e.g. 3,4,5,6,7,8")
    ap.add_argument("--out", type=Path, required=True, help="docs/regimes/<cell> (writes .md and .json)")
    ap.add_argument("--reference", default="none")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    sweeps = [read_json(a / "sweep.json") for a in args.archive]
    if len({s.get("commit") for s in sweeps}) > 1:  # pairing by seed needs one run's code (docs/statistics.md)
        sys.exit(f"the archives ran at different commits ({', '.join(str(s.get('commit')) for s in sweeps)}): their "
                 "seeds cannot be paired; analyse them separately or run the arms again together")
    cells = load_cell(args.archive, {int(s) for s in args.seeds.split(",")} if args.seeds else None)
    res = {ck: analyse(arms, args.reference) for ck, arms in cells.items() if arms}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = "python -m bench.regime_map " + " ".join(sys.argv[1:])
    header = (f"Generated by `{command}` (commit {commit}, {time.strftime('%Y-%m-%d')}) from the trials archived in "
              + ", ".join(f"`{a}`" for a in args.archive) + f" (the sweeps "
              + ", ".join(f"`{s.get('space')}`" for s in sweeps) + f", all at commit {sweeps[0].get('commit')}"
              + (f"; seeds {args.seeds} only" if args.seeds else "") + ").")
    title = args.title or f"Regime map: {sweeps[0].get('experiment')}"
    write_text(markdown(res, title, header) + "\n", args.out.with_suffix(".md"))
    write_json({"command": command, "commit": commit, "archives": [str(a) for a in args.archive], "sweeps": sweeps, **res},
               args.out.with_suffix(".json"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
