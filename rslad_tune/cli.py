"""`rslad-tune`: tune (the default verb), train, export, evaluate, compare.

    rslad-tune --space search_spaces/quickstart.yaml          # a whole sweep
    rslad-tune train --space FILE --set alpha=0.9             # one trial, no Ray
    rslad-tune export runs/<experiment>                       # best student out again
    rslad-tune evaluate runs/<experiment>/best                # the paper's table: Clean FGSM PGD CW AA
    rslad-tune compare runs/<experiment>                      # the suite on every trial, mean ± std over seeds
    rslad-tune report runs/<experiment>                       # teacher selection: every teacher's students, the verdict
    rslad-tune zoo list [--json] | zoo build fashion_mnist/sat_w32   # the shipped teachers; rebuild one from its recipe
    rslad-tune teachers rank --space FILE [--by true_prob]   # a YAML's teachers by a proxy, before any student trains
    rslad-tune ui runs/<experiment> [--port N]                # mlflow ui on the sweep's store; prints the runs' URL
    rslad-tune completion bash                                # a bash completion script (shtab)

Bad input exits with status 2 and one line naming the key, the value and what is allowed. The arguments are
built in cli_args.py, which imports nothing heavy: --help, --version and completion answer at once.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .cli_args import build_parser, route

_parser = build_parser  # (the name tests and callers know)


def _log(msg: str) -> None:
    print(f"[rslad-tune] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = route(list(sys.argv[1:] if argv is None else argv))  # (tune is the default verb)
    args = _parser().parse_args(argv)
    if args.verb is None:
        _parser().print_help()
        return 2
    if args.verb == "completion":  # before anything else is imported
        return cmd_completion(args)
    from .sweep.interrupts import handled
    from .trial.errors import Interrupted
    from .trial.errors import DataError, SpecError, StoreBusy, SweepFailed

    with handled():  # Ctrl-C / SIGTERM: everything below ends cleanly (temporary folders, MLflow runs KILLED)
        try:
            if args.verb in FOLDER_VERBS:  # the store: stores.choose_store(--tracking-uri, no YAML, $MLFLOW_TRACKING_URI)
                from .sweep.folder_command import on_folder
                from .sweep.stores import check_tracking_uri

                if args.tracking_uri:
                    check_tracking_uri(args.tracking_uri, "--tracking-uri")
                with on_folder(args, _log):  # links out, earlier outputs, a broken store: refused before any work
                    return {"export": cmd_export, "evaluate": cmd_evaluate, "compare": cmd_compare,
                            "report": cmd_report}[args.verb](args)
            return {"tune": cmd_tune, "resume": cmd_resume, "train": cmd_train, "export": cmd_export,
                    "evaluate": cmd_evaluate, "compare": cmd_compare, "report": cmd_report, "zoo": cmd_zoo,
                    "teachers": cmd_teachers, "ui": cmd_ui}[args.verb](args)
        except (SpecError, DataError) as e:
            print(f"rslad-tune: error: {e}", file=sys.stderr)
            return 2
        except StoreBusy as e:  # a store another process holds: nothing was changed, try again later
            print(f"rslad-tune: error: {e}", file=sys.stderr, flush=True)
            return 1
        except SweepFailed as e:  # Ray gave up (its OOM killer took trials): one line, and how to continue
            again = f"; the sweep is saved, continue it with: rslad-tune resume {_shown(e.resume)}" if e.resume else ""
            print(f"rslad-tune: error: {e}{again}", file=sys.stderr, flush=True)
            return 1
        except Interrupted as e:
            again = f"; the sweep is saved, continue it with: rslad-tune resume {e.resume}" if e.resume else ""
            print(f"rslad-tune: interrupted by {e}{again}", file=sys.stderr, flush=True)
            return e.exit_code
        except KeyboardInterrupt:
            print("rslad-tune: interrupted", file=sys.stderr)
            return 130
        except OSError as e:  # a full disk, a read-only place met mid-run: one line, the work so far kept
            if e.errno not in DISK_ERRNOS:
                raise
            where = f" ({e.filename})" if e.filename else ""
            print(f"rslad-tune: error: {e.strerror or type(e).__name__}{where}: the command stopped; what was written "
                  "before stands (MLflow runs ended FAILED or KILLED, scratch folders removed); free space or give a "
                  "writable place, then run it again (a sweep: rslad-tune resume)", file=sys.stderr, flush=True)
            return 1
        except BrokenPipeError:  # `rslad-tune zoo list --json | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no second error at exit)
            return 141


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
FOLDER_VERBS = ("export", "evaluate", "compare", "report")  # commands on a sweep folder: its lock, its own store only


def _shown(path: str | Path) -> str:
    """A sweep folder as a resume command names it: relative to here when it is below here."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _load(args):
    # the schema imports no torch: a bad YAML is one line from a small process (tests/test_bad_input.py)
    from .sweep.places import place
    from .sweep.spec import load_sweep, parse_set_overrides
    from .sweep.stores import choose_store, resolve_store

    spec = load_sweep(args.space, parse_set_overrides(args.set), args.data_dir, sweep=args.verb == "tune")
    place(spec, args.runs_dir)  # `~` and relative paths, once (--runs-dir wins over the YAML's runs_dir)
    # --tracking-uri, the YAML's, $MLFLOW_TRACKING_URI: checked before anything is written (a resumed sweep keeps its store)
    resume = getattr(args, "resume", False)
    uri = choose_store(getattr(args, "tracking_uri", None), spec.tracking_uri, Path(spec.runs_dir), {} if resume else None)
    from .sweep.layout import ExperimentDir
    from .sweep.preflight import check_data, check_places, check_store

    # checked before anything is written: runs_dir writable, teacher files, the cluster, the tracking store (no
    # tensors: a bad one is refused before torch is imported), then the data and the machine
    address = getattr(args, "address", None)
    check_places(spec, address)
    exp = ExperimentDir(Path(spec.runs_dir).resolve() / spec.experiment)
    if resume and exp.sweep_file.is_file() and exp._ours():  # a resumed sweep keeps its own store
        uri = resolve_store(exp.recorded_tracking_uri, Path(spec.runs_dir))
    check_store(uri, "--tracking-uri" if getattr(args, "tracking_uri", None) else "tracking URI")
    if resume:  # the folder, its manifest and its checkpoints' digests: no torch yet
        from .sweep.tuning import check_resumable

        check_resumable(spec)
    warnings = check_data(spec, address, args.verb)
    for line in warnings:
        print(f"rslad-tune: warning: {line}", file=sys.stderr, flush=True)
    return spec


def cmd_tune(args) -> int:
    if args.resume and args.set:  # refused before the YAML is read or checked
        from .trial.errors import SpecError

        raise SpecError("--set", args.set[0], "cannot be combined with --resume: a sweep resumes with its own values")
    spec = _load(args)  # (with --resume, checks the folder to resume: tuning.check_resumable)
    from .sweep.tuning import experiment_dir

    exp = experiment_dir(spec)
    if not args.resume:
        exp.check_replaceable()  # only an earlier sweep of ours is moved aside
    from .trial.errors import Interrupted

    with exp.lock(" ".join(["rslad-tune", *sys.argv[1:]])):  # one command per experiment at a time
        try:
            return _tune_locked(args, spec)
        except Interrupted as e:  # no export, no report: the resume command, when there is a sweep to resume
            from .sweep.tuning import fit_started

            if e.resume or args.resume or fit_started():  # (a second Ctrl-C raises without it: the hint stays)
                e.resume = _shown(exp.path)
            raise


def _tune_locked(args, spec) -> int:
    from .sweep.export import export_best
    from .sweep.interrupts import received
    from .trial.errors import Interrupted
    from .sweep.tuning import format_summary, run_sweep

    t0 = time.time()
    rows, exp_dir = run_sweep(spec, tracking_uri=args.tracking_uri, address=args.address, log=_log, resume=args.resume)
    from .sweep.layout import ExperimentDir

    store = ExperimentDir.open(exp_dir).recorded_tracking_uri  # export, report and the UI lines use the sweep's store
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
    if not args.no_export:  # a resumed sweep replaces its own export and report
        out = export_best(exp_dir, log=_log, force=args.resume, tracking_uri=store)
        m = json.loads((out / "metrics.json").read_text())
        _log(f"best student: {out}  (test clean {m['test_clean_acc']:.4f}, PGD-{m['eval_steps']} {m['test_pgd_acc']:.4f})")
    searched = spec.search.get("teacher")
    if searched and len(searched.args) > 1 and spec.report.enabled and not args.no_report:
        from .sweep.report import selection_report

        md, path = selection_report(exp_dir, n_examples=spec.report.n_examples, n_aa=spec.report.n_aa,
                                    device=spec.trial.device, log=_log, tracking_uri=store)
        print("\n" + md + "\n", flush=True)
        _log(f"teacher selection report: {path}, {path.with_suffix('.png')} and {path.with_name('selection_curves.png')}")
    _open_lines(exp_dir, store)
    return 0


def _open_lines(exp_dir: str | Path, tracking_uri: str | None) -> None:  # the last lines of sweep, export, report
    from .sweep.mlflow_ui import open_lines
    for line in open_lines(exp_dir, _shown(exp_dir), tracking_uri):
        _log(line)


def cmd_resume(args) -> int:
    """`resume runs/<exp>` = `--space <the sweep's YAML> --runs-dir runs --resume`."""
    from .sweep.layout import ExperimentDir

    exp = ExperimentDir.open(args.experiment_dir)
    name = exp.sweep.get("experiment")
    if isinstance(name, str) and name != exp.path.resolve().name:  # Tune and the lock would take runs/<name>
        from .trial.errors import SpecError

        raise SpecError("experiment", str(exp.path), f"holds the sweep of experiment {name!r} (its sweep.json), which "
                        f"resumes only in a folder of that name: move it to {exp.path.resolve().parent / name} first")
    original = exp.sweep.get("space") or ""
    space = original if original and Path(original).is_file() else str(exp.space_file)
    ns = argparse.Namespace(verb="tune", space=space, set=[], data_dir=None, runs_dir=str(exp.path.resolve().parent),
                            tracking_uri=None, address=args.address, no_export=args.no_export,
                            no_report=args.no_report, resume=True)
    return cmd_tune(ns)


def cmd_train(args) -> int:
    """One trial without Ray: the YAML's fixed values, each searched key at its domain's centre unless --set."""
    spec = _load(args)  # a bad YAML is refused before the imports below (torch)
    import dataclasses

    from .sweep.layout import check_free, replace_folder
    from .sweep.preflight import check_writable
    from .sweep.spec import set_path
    from .sweep.stores import choose_store
    from .sweep.tracking import TrainRun, trial_run_name
    from .teachers.sources import prepare_teachers
    from .teachers.resolved import train_student
    from .trial.files import write_json
    from .trial.methods import METHODS
    from .trial.metrics import accuracy_line
    from .trial.trainer import score_test_split

    for key in parse_set_keys(args.set):
        section, *rest = set_path(key)
        if section in ("trial", "data") and len(rest) == 1:
            _log(f"{key} = {getattr(spec.trial, rest[0])!r} (--set)")
    centres = {k: d.center() for k, d in spec.search.items()}
    for key, value in centres.items():
        _log(f"{key} = {value!r} (centre of the searched {spec.search[key].kind} {spec.search[key].args}; --set {key}=... to choose)")
    cfg = dataclasses.replace(spec.trial, **centres)
    runs_dir = Path(spec.runs_dir).resolve()
    out = Path(args.out) if args.out else runs_dir / f"{spec.experiment}-train"
    check_free(out, args.force)  # before any teacher is built: an export or earlier checkpoints are not overwritten
    check_writable(out, "--out")
    uri = choose_store(args.tracking_uri, spec.tracking_uri, runs_dir)
    teachers = prepare_teachers(spec.teachers, cfg, runs_dir, {cfg.teacher}, _log) if METHODS[cfg.method].needs_teacher else {}
    run = TrainRun(uri, spec.experiment, runs_dir, "train-" + trial_run_name(time.strftime("%H%M%S"), cfg.to_dict()), cfg.to_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # written whole, then put in place at once
    try:  # the same path as a sweep's trial: the teacher's soft-label cache is read (built first if missing)
        result = train_student(cfg, teachers, checkpoint_dir=tmp, log=_log, report=lambda m, _: run.epoch(m))
        model = result["model"]  # scored once trained (scoring.score, as export): the weights are final by now
        final = {"last": score_test_split(model, cfg, result["splits"], weights=tmp / "model.safetensors")}
        model.load_state_dict(result["best_state"])
        final["best"] = score_test_split(model, cfg, result["splits"], weights=tmp / "best.safetensors")
        write_json(final, tmp / "test_metrics.json")
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        run.finish("KILLED" if not isinstance(sys.exc_info()[1], Exception) else "FAILED")
        raise
    for which, m in final.items():
        _log(f"{which} checkpoint: {accuracy_line(m, 'test_', f'PGD-{cfg.eval_steps}', '({n} images)')}")
    run.finish("FINISHED", {f"{which}_{k}": v for which, m in final.items() for k, v in m.items()}, out)
    _log(f"checkpoints in {out}; MLflow run {run.run_id} ({uri})")
    return 0


def parse_set_keys(pairs: list[str]) -> list[str]:
    return [p.split("=", 1)[0].strip() for p in pairs if "=" in p]


def cmd_export(args) -> int:
    from .sweep.export import export_best

    export_best(Path(args.experiment_dir), log=_log, force=args.force, tracking_uri=args.tracking_uri)
    _open_lines(args.experiment_dir, args.tracking_uri)
    return 0


def cmd_compare(args) -> int:
    from .sweep.compare import compare_experiment

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
    from .sweep.spec import ReportSpec, load_sweep
    from .trial.errors import SpecError

    if args.n_aa is not None and args.n_aa < 0:
        raise SpecError("--n-aa", args.n_aa, "must be a non-negative integer")
    space = Path(args.experiment_dir) / "space.yaml"
    try:  # the sweep's own report: section, unless a flag says otherwise
        settings = load_sweep(space).report if space.is_file() else ReportSpec()
    except SpecError as e:
        _log(f"{space}: {e}; using the report defaults")
        settings = ReportSpec()
    n_examples = args.n_examples if args.n_examples is not None else settings.n_examples
    n_aa = args.n_aa if args.n_aa is not None else settings.n_aa
    md, path = selection_report(Path(args.experiment_dir), n_examples=n_examples, n_aa=n_aa,
                                device=args.device, log=_log, tracking_uri=args.tracking_uri)
    print("\n" + md + "\n", flush=True)
    _log(f"wrote {path}, {path.with_suffix('.png')} and {path.with_name('selection_curves.png')}")
    _open_lines(args.experiment_dir, args.tracking_uri)
    return 0


def cmd_evaluate(args) -> int:
    from .sweep.evaluate import evaluate_folder, format_table, log_eval_to_mlflow
    from .trial.errors import SpecError
    from .trial.files import write_json

    n_aa = None if args.n_aa.strip().lower() == "all" else (int(args.n_aa) if args.n_aa.strip().isdigit() else -1)
    if n_aa is not None and n_aa < 0:
        raise SpecError("--n-aa", args.n_aa, "must be a non-negative integer or 'all'")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if args.out:  # before the scoring, which can take hours
        from .sweep.preflight import check_writable

        check_writable(Path(args.out), "--out")
        if Path(args.out).is_dir():
            raise SpecError("--out", args.out, "is a folder; give a JSON file name for the numbers")
    report = evaluate_folder(args.path, n_examples=args.n_examples, n_aa=n_aa, attacks=attacks, device=args.device,
                             seed=args.seed, batch_size=args.batch_size, log=_log)
    print("\n" + format_table(report) + "\n", flush=True)
    out = Path(args.out) if args.out else Path(report["path"]) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, out)  # temporary file + os.replace
    _log(f"wrote {out} ({report['seconds']:.0f}s)")
    log_eval_to_mlflow(report, out, log=_log, tracking_uri=args.tracking_uri)
    return 0


def cmd_ui(args) -> int:
    from .sweep.mlflow_ui import cmd_ui
    return cmd_ui(args, _log)


def cmd_teachers(args) -> int:
    from .sweep.rank import cmd_rank

    return cmd_rank(args, _log)


def cmd_zoo(args) -> int:
    from .teachers import zoo
    from .trial.errors import SpecError

    if args.action == "list":
        print(json.dumps(zoo.zoo_records(), indent=2) if args.json else zoo.zoo_table(markdown=args.markdown))
        return 0
    if args.action == "proxies":
        from .teachers.zoo_build import store_zoo_proxies

        return store_zoo_proxies([args.name] if args.name else None, log=_log) or 0
    if not args.name:
        raise SpecError("zoo build", None, f"needs a teacher name, one of {', '.join(zoo.zoo_names())}")
    from .teachers.zoo_build import build_zoo_teacher

    build_zoo_teacher(args.name, threads=args.threads, work_dir=args.work_dir, log=_log)
    return 0


def cmd_completion(args) -> int:
    """A completion script for `args.shell`, written by shtab from the same parser (nothing heavy is imported)."""
    try:
        import shtab
    except ImportError:
        print("rslad-tune: error: completion: shtab is not installed; pip install shtab", file=sys.stderr)
        return 2
    print(shtab.complete(_parser(), args.shell))
    return 0


if __name__ == "__main__":
    sys.exit(main())
