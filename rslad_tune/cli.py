"""`rslad-tune`: tune (the default verb), train, export, evaluate, compare.

    rslad-tune --space search_spaces/quickstart.yaml          # a whole sweep
    rslad-tune train --space FILE --set alpha=0.9             # one trial, no Ray
    rslad-tune export runs/<experiment>                       # best student out again
    rslad-tune evaluate runs/<experiment>/best                # the paper's table: Clean FGSM PGD CW AA
    rslad-tune compare runs/<experiment>                      # the suite on every trial, mean ± std over seeds
    rslad-tune report runs/<experiment>                       # teacher selection: every teacher's students, the verdict
    rslad-tune zoo list | zoo build fashion_mnist/sat_w32     # the shipped teachers; rebuild one from its recipe

Bad input exits with status 2 and one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

VERBS = ("tune", "train", "export", "evaluate", "compare", "report", "resume", "zoo")


def _log(msg: str) -> None:
    print(f"[rslad-tune] {msg}", flush=True)


def _int_in(lo: int, hi: int | None, what: str):
    """An argparse type: an integer in [lo, hi], else the one-line usage error saying `what` it must be."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; must be {what}")
        return v
    return parse


_positive_int = _int_in(1, None, "a positive integer")
_count = _int_in(0, None, "a non-negative integer")
_seed = _int_in(0, 2**32 - 1, "a seed in [0, 4294967295]")
DEVICES = ("auto", "cpu", "cuda")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"rslad-tune: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rslad-tune", description="Distil adversarial robustness (RSLAD) and tune it with Ray Tune + MLflow.")
    sub = p.add_subparsers(dest="verb")

    def space_args(sp):
        sp.add_argument("--space", required=True, help="YAML search space, e.g. search_spaces/quickstart.yaml")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a trial: value (repeatable)")
        sp.add_argument("--data-dir", help="dataset folder (overrides data.data_dir)")
        sp.add_argument("--runs-dir", help="output folder (default: the YAML's runs_dir, else runs/)")

    t = sub.add_parser("tune", help="run a sweep (default)")
    space_args(t)
    t.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///runs/mlflow.db; http://host:port for a server)")
    t.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    t.add_argument("--no-export", action="store_true", help="skip exporting the best student")
    t.add_argument("--resume", action="store_true", help="continue the interrupted sweep in runs/<experiment> "
                   "(finished trials kept, unfinished ones from their last checkpoint; same YAML, no --set)")
    t.add_argument("--no-report", action="store_true", help="skip the teacher selection report (written when teacher is searched)")

    rs = sub.add_parser("resume", help="continue an interrupted sweep: rslad-tune resume runs/<experiment>")
    rs.add_argument("experiment_dir", help="runs/<experiment> of the interrupted sweep")
    rs.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    rs.add_argument("--no-export", action="store_true", help="skip exporting the best student")
    rs.add_argument("--no-report", action="store_true", help="skip the teacher selection report")

    tr = sub.add_parser("train", help="run one trial without Ray: the YAML's fixed values, searched keys at their centre")
    space_args(tr)
    tr.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///runs/mlflow.db)")
    tr.add_argument("--out", help="checkpoint folder (default runs/<experiment>-train)")

    e = sub.add_parser("export", help="export the best student of a sweep folder")
    e.add_argument("experiment_dir", help="runs/<experiment>")

    ev = sub.add_parser("evaluate", help="the paper's robustness table (Clean, FGSM, PGD SAT/TRADES, CW-inf, AutoAttack) of a model folder")
    ev.add_argument("path", help="an exported student (runs/<experiment>/best) or a trial checkpoint folder (trial.json + model.safetensors + best.safetensors)")
    ev.add_argument("--n-examples", type=_positive_int, metavar="N", help="first N test images (default: the whole test split)")
    ev.add_argument("--n-aa", default="500", metavar="N", help="AutoAttack on the first N of them (default 500; 'all' for every one). "
                    "AutoAttack is slow on CPU: the progress lines give the rate and ETA")
    ev.add_argument("--attacks", default="clean,fgsm,pgd_sat,pgd_trades,cw_inf,aa", help="comma-separated columns (default: all six)")
    ev.add_argument("--out", help="JSON file for the numbers (default PATH/eval.json)")
    ev.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    ev.add_argument("--seed", type=_seed, default=0, help="attack seed (default 0)")
    ev.add_argument("--batch-size", type=_positive_int, default=500, help="images per attack batch (default 500)")

    c = sub.add_parser("compare", help="the evaluation suite on every finished trial of a sweep, mean ± std over seeds")
    c.add_argument("experiment_dir", help="runs/<experiment>, e.g. of search_spaces/paper_fmnist.yaml")
    c.add_argument("--n-examples", type=_positive_int, metavar="N", help="first N test images (default: all)")
    c.add_argument("--n-aa", type=_count, default=500, metavar="N", help="AutoAttack on the first N images (default 500; 0: none)")
    c.add_argument("--aa-seed", type=_seed, default=0, help="run AutoAttack for the trials of this seed only (default 0)")
    c.add_argument("--last", action="store_true", help="also score each trial's last checkpoint (best versus last)")
    c.add_argument("--attacks", default="clean,fgsm,pgd_sat,pgd_trades,cw_inf,aa",
                   help="comma-separated columns (default: all six; e.g. clean,pgd_sat,aa for a ranking by PGD-20)")
    c.add_argument("--device", default="auto", choices=DEVICES, help="auto (default), cpu or cuda")

    r = sub.add_parser("report", help="teacher selection report: every teacher's students (mean ± std), the verdict against the noise")
    r.add_argument("experiment_dir", help="runs/<experiment> of a sweep that used teachers, e.g. of search_spaces/teacher.yaml")
    r.add_argument("--n-examples", type=_positive_int, metavar="N", help="first N test images for clean / PGD-20 (default: all)")
    r.add_argument("--n-aa", type=_count, default=200, metavar="N", help="AutoAttack on the first N images (default 200; 0: none)")
    r.add_argument("--device", default="auto", choices=DEVICES, help="auto (default), cpu or cuda")

    z = sub.add_parser("zoo", help="the teacher zoo shipped with rslad-tune: list it, or rebuild a teacher from its recipe")
    z.add_argument("action", choices=("list", "build"), help="list: names and cards; build: retrain NAME from its recipe.yaml")
    z.add_argument("name", nargs="?", help="a zoo teacher, e.g. fashion_mnist/sat_w32 (build)")
    z.add_argument("--threads", type=_positive_int, help="torch threads for the build (default: torch's default)")
    z.add_argument("--work-dir", default="runs", help="scratch folder for the build (default runs/)")
    z.add_argument("--markdown", action="store_true", help="list: a Markdown table (the README's)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in VERBS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "tune")
    args = _parser().parse_args(argv)
    if args.verb is None:
        _parser().print_help()
        return 2
    from .sweep.interrupts import Interrupted, handled
    from .trial.errors import DataError, SpecError

    with handled():  # Ctrl-C / SIGTERM: everything below ends cleanly (temporary folders, MLflow runs KILLED)
        try:
            return {"tune": cmd_tune, "resume": cmd_resume, "train": cmd_train, "export": cmd_export,
                    "evaluate": cmd_evaluate, "compare": cmd_compare, "report": cmd_report, "zoo": cmd_zoo}[args.verb](args)
        except (SpecError, DataError) as e:
            print(f"rslad-tune: error: {e}", file=sys.stderr)
            return 2
        except Interrupted as e:
            again = f"; the sweep is saved, continue it with: rslad-tune resume {e.resume}" if e.resume else ""
            print(f"rslad-tune: interrupted by {e}{again}", file=sys.stderr, flush=True)
            return e.exit_code
        except KeyboardInterrupt:
            print("rslad-tune: interrupted", file=sys.stderr)
            return 130


def _load(args):
    from .sweep.spec import check_tracking_uri, load_sweep, parse_set_overrides

    spec = load_sweep(args.space, parse_set_overrides(args.set), args.data_dir, sweep=args.verb == "tune")
    if args.runs_dir:
        spec.runs_dir = args.runs_dir
    if getattr(args, "tracking_uri", None):
        check_tracking_uri(args.tracking_uri)
    from .sweep.preflight import check_sweep

    # the data, teacher files, the machine or cluster: checked before anything is written
    for line in check_sweep(spec, getattr(args, "address", None), args.verb):
        print(f"rslad-tune: warning: {line}", file=sys.stderr, flush=True)
    return spec


def cmd_tune(args) -> int:
    from .sweep.tuning import check_resumable, experiment_dir

    spec = _load(args)
    if args.resume:
        from .trial.errors import SpecError

        if args.set:
            raise SpecError("--set", args.set[0], "cannot be combined with --resume: a sweep resumes with its own values")
        check_resumable(spec)
    exp = experiment_dir(spec)
    if not args.resume:
        exp.check_replaceable()  # only an earlier sweep of ours is moved aside
    from .sweep.interrupts import Interrupted

    with exp.lock(" ".join(["rslad-tune", *sys.argv[1:]])):  # one command per experiment at a time
        try:
            return _tune_locked(args, spec)
        except Interrupted as e:  # no export, no report: the resume command, when there is a sweep to resume
            if e.resume or args.resume:
                e.resume = os.path.relpath(exp.path) if not os.path.relpath(exp.path).startswith("..") else str(exp.path)
            raise


def _tune_locked(args, spec) -> int:
    from .sweep.export import export_best
    from .sweep.interrupts import Interrupted, received
    from .sweep.tuning import format_summary, run_sweep

    t0 = time.time()
    rows, exp_dir = run_sweep(spec, tracking_uri=args.tracking_uri, address=args.address, log=_log, resume=args.resume)
    print("\n" + format_summary(rows), flush=True)
    done = [r for r in rows if r.status == "TERMINATED"]
    cut = sum(r.status == "INTERRUPTED" for r in rows)
    _log(f"{len(done)}/{len(rows)} trials finished ({sum(r.early_stopped for r in rows)} stopped early by ASHA, "
         f"{len(rows) - len(done) - cut} failed, {cut} interrupted) in {time.time() - t0:.0f}s")
    if received():  # Tune stopped the trials and saved the sweep: resumable
        raise Interrupted(received(), resume=str(exp_dir))
    if not done:
        print("rslad-tune: error: no trial finished; see the summary above", file=sys.stderr)
        return 1
    if not args.no_export:
        out = export_best(exp_dir, log=_log)
        m = json.loads((out / "metrics.json").read_text())
        _log(f"best student: {out}  (test clean {m['test_clean_acc']:.4f}, PGD-{m['eval_steps']} {m['test_pgd_acc']:.4f})")
    searched = spec.search.get("teacher")
    if searched and len(searched.args) > 1 and spec.report.enabled and not args.no_report:
        from .sweep.report import selection_report

        md, path = selection_report(exp_dir, n_examples=spec.report.n_examples, n_aa=spec.report.n_aa,
                                    device=spec.trial.device, log=_log)
        print("\n" + md + "\n", flush=True)
        _log(f"teacher selection report: {path} and {path.with_suffix('.png')}")
    _log(f"MLflow UI: mlflow ui --backend-store-uri {args.tracking_uri or spec.tracking_uri or 'sqlite:///' + str(Path(spec.runs_dir) / 'mlflow.db')}")
    return 0


def cmd_resume(args) -> int:
    """`resume runs/<exp>` = `--space <the sweep's YAML> --runs-dir runs --resume`."""
    from .sweep.layout import ExperimentDir

    exp = ExperimentDir.open(args.experiment_dir)
    original = exp.sweep.get("space") or ""
    space = original if original and Path(original).is_file() else str(exp.space_file)
    ns = argparse.Namespace(verb="tune", space=space, set=[], data_dir=None, runs_dir=str(exp.path.resolve().parent),
                            tracking_uri=None, address=args.address, no_export=args.no_export,
                            no_report=args.no_report, resume=True)
    return cmd_tune(ns)


def cmd_train(args) -> int:
    """One trial without Ray: the YAML's fixed values, each searched key at its domain's centre unless --set."""
    import dataclasses

    from .sweep.tracking import TrainRun, resolve_tracking_uri, trial_run_name
    from .teachers.sources import prepare_teachers
    from .teachers.student import train_student
    from .trial.files import write_json
    from .trial.methods import METHODS
    from .trial.trainer import score_test_split

    spec = _load(args)
    given = parse_set_keys(args.set)
    for key in given:
        _log(f"{key} = {getattr(spec.trial, key)!r} (--set)")
    centres = {k: d.center() for k, d in spec.search.items()}
    for key, value in centres.items():
        _log(f"{key} = {value!r} (centre of the searched {spec.search[key].kind} {spec.search[key].args}; --set {key}=... to choose)")
    cfg = dataclasses.replace(spec.trial, **centres)
    runs_dir = Path(spec.runs_dir).resolve()
    dirs = prepare_teachers(spec.teachers, cfg, runs_dir, {cfg.teacher}, _log) if METHODS[cfg.method].needs_teacher else {}
    out = Path(args.out) if args.out else runs_dir / f"{spec.experiment}-train"
    uri = resolve_tracking_uri(args.tracking_uri or spec.tracking_uri, runs_dir)
    run = TrainRun(uri, spec.experiment, runs_dir, "train-" + trial_run_name(time.strftime("%H%M%S"), cfg.to_dict()), cfg.to_dict())
    try:  # the same path as a sweep's trial: the teacher's soft-label cache is read (built first if missing)
        result = train_student(cfg, dirs, checkpoint_dir=out, log=_log, report=lambda m, _: run.epoch(m))
    except BaseException:
        run.finish("KILLED" if not isinstance(sys.exc_info()[1], Exception) else "FAILED")
        raise
    model = result["model"]
    final = {"last": score_test_split(model, cfg, result["splits"])}
    model.load_state_dict(result["best_state"])
    final["best"] = score_test_split(model, cfg, result["splits"])
    write_json(final, out / "test_metrics.json")
    for which, m in final.items():
        _log(f"{which} checkpoint: test clean {m['test_clean_acc']:.4f}, PGD-{cfg.eval_steps} {m['test_pgd_acc']:.4f} ({m['test_n']} images)")
    run.finish("FINISHED", {f"{which}_{k}": v for which, m in final.items() for k, v in m.items()}, out)
    _log(f"checkpoints in {out}; MLflow run {run.run_id} ({uri})")
    return 0


def parse_set_keys(pairs: list[str]) -> list[str]:
    return [p.split("=", 1)[0].strip() for p in pairs if "=" in p]


def _replay_pending(path: str | Path) -> None:
    """MLflow calls a sweep could not make (its store was away) are replayed by the next command on its folder."""
    from .sweep.layout import find_experiment
    from .sweep.tracking import replay_pending
    from .trial.errors import SpecError

    exp = find_experiment(Path(path))
    if exp is None or not exp.pending_file.is_file():
        return
    try:
        with exp.lock(" ".join(["rslad-tune", *sys.argv[1:]])):  # (a sweep running there replays at its end)
            replay_pending(exp.pending_file, exp.tracking_uri, exp.sweep.get("experiment", exp.name), exp.parent_run_id, _log)
    except SpecError:
        pass


def cmd_export(args) -> int:
    from .sweep.export import export_best

    _replay_pending(args.experiment_dir)
    export_best(Path(args.experiment_dir), log=_log)
    return 0


def cmd_compare(args) -> int:
    from .sweep.compare import compare_experiment

    _replay_pending(args.experiment_dir)
    t0 = time.time()
    from .trial.errors import SpecError
    from .trial.robustness import ATTACK_NAMES, resolve_columns

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    try:
        resolve_columns(attacks)
    except ValueError:
        raise SpecError("--attacks", args.attacks, f"must be a comma-separated subset of {','.join(ATTACK_NAMES)}") from None
    md, path = compare_experiment(Path(args.experiment_dir), n_aa=args.n_aa, aa_seed=args.aa_seed, attacks=attacks,
                                  n_examples=args.n_examples, device=args.device, last=args.last, log=_log)
    print("\n" + md + "\n", flush=True)
    _log(f"wrote {path} ({time.time() - t0:.0f}s)")
    return 0


def cmd_report(args) -> int:
    from .sweep.report import selection_report

    if args.n_aa < 0:
        from .trial.errors import SpecError

        raise SpecError("--n-aa", args.n_aa, "must be a non-negative integer")
    _replay_pending(args.experiment_dir)
    md, path = selection_report(Path(args.experiment_dir), n_examples=args.n_examples, n_aa=args.n_aa,
                                device=args.device, log=_log)
    print("\n" + md + "\n", flush=True)
    _log(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


def cmd_evaluate(args) -> int:
    from .sweep.evaluate import evaluate_folder, format_table, log_eval_to_mlflow
    from .trial.errors import SpecError
    from .trial.files import write_json

    n_aa = None if args.n_aa.strip().lower() == "all" else (int(args.n_aa) if args.n_aa.strip().isdigit() else -1)
    if n_aa is not None and n_aa < 0:
        raise SpecError("--n-aa", args.n_aa, "must be a non-negative integer or 'all'")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    _replay_pending(args.path)
    report = evaluate_folder(args.path, n_examples=args.n_examples, n_aa=n_aa, attacks=attacks, device=args.device,
                             seed=args.seed, batch_size=args.batch_size, log=_log)
    print("\n" + format_table(report) + "\n", flush=True)
    out = Path(args.out) if args.out else Path(report["path"]) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, out)  # temporary file + os.replace
    _log(f"wrote {out} ({report['seconds']:.0f}s)")
    log_eval_to_mlflow(report, out, log=_log)
    return 0


def cmd_zoo(args) -> int:
    from .teachers import zoo
    from .trial.errors import SpecError

    if args.action == "list":
        print(zoo.zoo_table(markdown=args.markdown))
        return 0
    if not args.name:
        raise SpecError("zoo build", None, f"needs a teacher name, one of {', '.join(zoo.zoo_names())}")
    from .teachers.zoo_build import build_zoo_teacher

    build_zoo_teacher(args.name, threads=args.threads, work_dir=args.work_dir, log=_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
