"""Keep a long comparison's numbers in the repository as trials finish, so a cut-off run loses only running trials.

    python -m bench.archive_trials runs/paper_fmnist results/paper_fmnist [--evaluate --n-aa 500 --last]
    python -m bench.archive_trials --table results/paper_fmnist        # the comparison table from the archive

Each trial that trained every epoch gets `<out>/<trial_id>.json`: its configuration, per-epoch validation
history, best and last epochs, and -- with `--evaluate`, or once `rslad-tune compare` has scored it -- its
suite.json row (the test-split suite, best and last checkpoints, AutoAttack for seed 0). `--evaluate` scores
the trials that finished training and are not scored yet, with compare's own code and cache (suite.json),
so running it while the sweep trains and `rslad-tune compare` afterwards compute nothing twice. `--table`
aggregates the archived rows with compare's own grouping and table (mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rslad_tune.sweep.compare import aggregate, evaluate_trials, format_markdown
from rslad_tune.sweep.layout import ExperimentDir, TrialDir
from rslad_tune.trial.files import read_json, write_json, write_text


def complete(t: TrialDir) -> bool:
    """Trained every epoch (a FIFO sweep's trial that is not still running)."""
    return t.finished and t.result.get("epoch") == t.config.get("epochs")


def archive(exp_dir: Path, out: Path, commit: str | None = None) -> list[Path]:
    exp = ExperimentDir.open(exp_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    meta = {k: exp.sweep.get(k) for k in ("experiment", "space", "epochs", "metric")} | {"commit": commit}
    if not (out / "sweep.json").is_file() or read_json(out / "sweep.json") != meta:
        write_json(meta, out / "sweep.json")
        write_text(exp.space_file.read_text(), out / "space.yaml")
    for t in exp.trials():
        if not complete(t):
            continue
        keep = {k: t.result.get(k) for k in ("best_epoch", "best_pgd_acc", "epoch", "pgd_acc", "clean_acc", "time_total_s")}
        row = {"trial_id": t.trial_id, "config": t.config, "result": keep,
               "history": t.history, "suite": t.cached("suite.json")}
        f = out / f"{t.trial_id}.json"
        if not f.is_file() or read_json(f) != json.loads(json.dumps(row)):
            write_json(row, f)
            written.append(f)
    return written


def scored_rows(dirs: list[Path]) -> list[dict]:
    """compare's suite rows with their trial config and training time, from every archived, scored trial."""
    return [r["suite"] | {"config": r["config"], "train_s": r.get("result", {}).get("time_total_s")}
            for d in dirs for f in sorted(d.glob("*.json")) if f.name != "sweep.json" for r in [read_json(f)]
            if r.get("suite")]


def table(out: Path) -> str:
    rows = scored_rows([out])
    if not rows:
        return "(no scored trial archived yet)"
    return format_markdown(aggregate(rows), rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="runs/<experiment> results/<experiment>, or with --table results/<experiment>")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--evaluate", action="store_true", help="score finished, unscored trials first (compare's suite)")
    ap.add_argument("--n-aa", type=int, default=500)
    ap.add_argument("--last", action="store_true")
    ap.add_argument("--attacks", default=None, help="the suite's columns to score (compare's --attacks), e.g. clean,pgd_sat")
    ap.add_argument("--commit", help="the git commit the sweep ran from (recorded in <out>/sweep.json)")
    args = ap.parse_args()
    if args.table:
        print(table(Path(args.paths[0])))
        return
    exp_dir, out = Path(args.paths[0]), Path(args.paths[1])
    if args.evaluate:  # one trial at a time, each archived as soon as it is scored (cached ones: "done before")
        for tid in [t.trial_id for t in ExperimentDir.open(exp_dir).trials() if complete(t)]:
            evaluate_trials(exp_dir, n_aa=args.n_aa, last=args.last, only=lambda t, tid=tid: complete(t) and t.trial_id == tid,
                            **({"attacks": args.attacks.split(",")} if args.attacks else {}))
            for f in archive(exp_dir, out, args.commit):
                print(f"archived {f}")
    for f in archive(exp_dir, out, args.commit):
        print(f"archived {f}")


if __name__ == "__main__":
    main()
