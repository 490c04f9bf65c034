"""Ray Tune adapter: SweepSpec -> Tuner(ASHA on validation PGD accuracy, Optuna TPE, MLflow callback).

The trainable is `run_trial`, a thin wrapper over `trainer.train_model`; it lives in this
importable module (not __main__) so that `Tuner.restore` can find it again.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..trial.config import TrialConfig
from ..trial.errors import SweepFailed
from ..trial.methods import METHODS
from . import quiet
from .spec import Domain, SweepSpec
from .stores import choose_store


def tune_domain(d: Domain):
    from ray import tune

    if d.kind == "uniform":
        return tune.uniform(*d.args)
    if d.kind == "loguniform":
        return tune.loguniform(*d.args)
    if d.kind == "randint":  # YAML bounds are inclusive, tune.randint's upper bound is not
        return tune.randint(d.args[0], d.args[1] + 1)
    if d.kind == "choice":
        return tune.choice(d.args)
    return tune.grid_search(d.args)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    space = spec.trial.to_dict()
    space["num_threads"] = max(1, int(spec.tune.cpus_per_trial))
    for key, d in spec.search.items():
        space[key] = tune_domain(d)
    return space


def run_trial(config: dict, teachers: dict, work_root: str | None = None) -> None:
    """One Ray Tune trial: teachers.resolved.train_student with the sweep's ResolvedTeacher records (the same path as
    `rslad-tune train`), reporting every epoch to Tune. Its scratch folder lies in `work_root` (the sweep's, removed
    by the driver however it ends)."""
    import ray
    from ray import tune

    from ..teachers.resolved import train_student

    restored = tune.get_checkpoint()
    resume_dir = restored.to_directory() if restored else None
    # the checkpoints Ray kept before it (num_to_keep=2), newest first: resume falls back to one if the latest is damaged
    here = Path(restored.path) if restored and Path(restored.path).is_dir() else None
    fallbacks = sorted((p for p in here.parent.glob("checkpoint_*") if p.name < here.name), reverse=True) if here else []
    workdir = Path(tempfile.mkdtemp(prefix="rslad-trial-", dir=work_root))
    node = ray.get_runtime_context().get_node_id()  # which cluster node ran the trial (node_ip is shared on one host)

    def report(metrics: dict, ckpt_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
        tune.report({**metrics, "node_id": node}, checkpoint=checkpoint)

    try:
        train_student(TrialConfig(**config), teachers, report=report, checkpoint_dir=workdir, resume_dir=resume_dir,
                      fallbacks=fallbacks)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def trial_name(trial) -> str:
    """Short names: Ray's default folder name repeats every config value and overflows paths."""
    return f"trial_{trial.trial_id}"


@dataclass
class TrialRow:
    trial_id: str
    config: dict
    metrics: dict
    status: str  # TERMINATED | ERROR
    error: str | None
    checkpoint: str | None
    epochs: int
    early_stopped: bool = False


def run_sweep(spec: SweepSpec, *, tracking_uri: str | None = None, address: str | None = None,
              log: Callable[[str], None] = print, resume: bool = False) -> tuple[list[TrialRow], Path]:
    """Teachers, then the Tune sweep, then the summary rows. Returns (rows, experiment folder).

    resume=True continues an interrupted sweep of the same YAML in runs/<experiment>: Tune restores
    finished trials (not re-run) and unfinished ones from their last checkpoint, the Optuna study
    continues from `optuna.db` beside them, and MLflow keeps the same parent and child runs."""
    from ..teachers.folders import read_card
    from ..teachers.proxies import all_proxies
    from ..teachers.sources import prepare_teachers
    from ..teachers.resolved import build_soft_label_caches
    from ..trial.errors import Interrupted
    from .interrupts import received, tune_stops_on_signal
    from .manifest import write_manifest
    from .mlflow_data import start_system_metrics, stop_system_metrics
    from .parent_run import record_answer, record_inputs
    from .prescreen import prescreen
    from .relocation import resuming
    from .scheduling import rungs
    from .tracking import MLflowTrialCallback, replay_pending

    exp = experiment_dir(spec)
    runs_dir, exp_dir = exp.path.parent, exp.path
    runs_dir.mkdir(parents=True, exist_ok=True)
    _FIT["started"] = False
    # --tracking-uri, the YAML's, $MLFLOW_TRACKING_URI, the default (a resumed sweep keeps its own: sweep.json)
    uri = choose_store(tracking_uri, spec.tracking_uri, runs_dir, {} if resume else None)

    # the store opened (created, the experiment found) before any folder moves or any teacher is built: a server
    # that answers but is no MLflow store, or a file that is no database, is one line with nothing done
    tracker = _tracker(exp, exp.recorded_tracking_uri if resume else uri, spec.experiment, log,
                       exp.parent_run_id if resume else None)
    needed = set(spec.search["teacher"].args) if "teacher" in spec.search else (
        {spec.trial.teacher} if spec.trial.teacher else set())
    if not any(METHODS[m].needs_teacher for m in _methods(spec)):
        needed = set()
    teachers = prepare_teachers(spec.teachers, spec.trial, runs_dir, needed, log)  # resolved once, here
    # every teacher's proxies on the students' data, into its card (cached there); then the prescreen, if asked,
    # narrows the searched teachers (and `teachers`) before any trial or soft-label cache
    screened = prescreen(spec, teachers, all_proxies(teachers, spec.trial, log), log)
    cards = {name: read_card(t.folder) for name, t in teachers.items()}
    if teachers and spec.trial.soft_label_cache:
        build_soft_label_caches(spec.trial, teachers, log)

    status = "FAILED"
    teacher_models = None  # a resumed sweep's callback comes back from Tune's experiment state, with its own
    monitor = None
    try:  # from the parent run's creation on: however the command ends, no run is left RUNNING
        if resume:
            replay_pending(exp.pending_file, tracker.uri, spec.experiment, exp.parent_run_id, log)
            tracker.do("reopen the sweep's run", "status", tracker.parent_id, status="RUNNING")
            log(f"resuming {exp_dir} (MLflow parent run {tracker.parent_id})")
        else:
            exp.archive_previous(log)
            parent = tracker.start_parent(f"{spec.experiment}-{time.strftime('%Y%m%d-%H%M%S')}",
                                          _parent_params(spec), spec.source, {"rslad_tune.experiment_dir": str(exp_dir)})
            exp.write_sweep({"experiment": spec.experiment, "tracking_uri": uri, "parent_run_id": parent,
                             "teacher_dirs": {n: str(t.folder) for n, t in teachers.items()}, "space": spec.path, "epochs": spec.trial.epochs,
                             "metric": spec.tune.metric, "registered_model": spec.registered_model,
                             "report_noise_std": spec.report.noise_std, "report_noise_dof": spec.report.noise_dof,
                             "report_clean_noise_std": spec.report.clean_noise_std,
                             "report_clean_noise_dof": spec.report.clean_noise_dof,
                             "report_objective": spec.report.objective,
                             "report_clean_weight": 0.5 if spec.report.clean_weight is None else spec.report.clean_weight,
                             "prescreen": screened, "rungs": rungs(spec), "references": sorted(spec.references),
                             "reference_in_rungs": spec.tune.reference_in_rungs}, spec.source)
            for name, card in cards.items():
                tracker.do("log a teacher's card", "dict", parent, obj=card, file=f"teachers/{name}.json")
            if screened:
                tracker.do("log the prescreen", "dict", parent, obj=screened, file="prescreen.json")
            teacher_models = record_inputs(tracker, spec, teachers, cards, log)

        monitor = start_system_metrics(tracker.uri, tracker.parent_id, log, resume=resume)  # CPU, memory, GPU
        write_manifest(exp.path)  # the sweep's own files, signed: resume trusts nothing else (manifest.py)
        callback = MLflowTrialCallback(tracker, spec.trial.epochs, cards, teacher_models)
        # a resumed sweep: Ray's pickles name where it first ran; what they hold is read as this folder's
        with resuming(exp_dir, tracker) if resume else nullcontext():
            tuner = _tuner(spec, exp, teachers, callback, address, resume)
            _FIT["started"] = True  # from here on the folder holds a sweep to resume, however the command ends
            with tune_stops_on_signal():  # the first Ctrl-C / SIGTERM: Tune stops the trials and fit() returns
                try:
                    grid = tuner.fit()
                except RuntimeError as e:  # Tune's controller lost an actor it cannot retry (Ray's OOM killer took it)
                    raise SweepFailed(ray_failure(e), resume=str(exp_dir) if _restorable(exp_dir) else None) from e
        if received():  # unfinished trials are neither finished nor "stopped by ASHA"; their runs end KILLED
            status = "KILLED"
            rows = result_rows(grid, spec.trial.epochs, unfinished=tracker.end_interrupted())
            return rows, exp_dir
        rows = result_rows(grid, spec.trial.epochs)
        status = "FINISHED" if any(r.status == "TERMINATED" for r in rows) else "FAILED"
        png = _plot_curves(grid, rows, spec, exp_dir)
        if png:
            tracker.do("log the curves", "artifact", tracker.parent_id, path=str(png))
            log(f"PGD accuracy per epoch of every trial: {png}")
        try:  # the trials' results stand whatever happens to the summary of them
            record_answer(tracker, spec, exp_dir, log)
        except Exception as e:
            log(f"warning: the sweep's answer and plots were not recorded: {type(e).__name__}: {str(e)[:150]}")
    except KeyboardInterrupt as e:  # a signal outside fit(), or a second one
        status = "KILLED"
        if tracker.parent_id:
            tracker.end_interrupted()
        if isinstance(e, Interrupted) and _restorable(exp_dir):
            e.resume = str(exp_dir)
        raise
    except Exception as e:  # a full disk, a read-only place: the trials' runs end too, the reason on the sweep's run
        if tracker.parent_id:
            tracker.do("tag the sweep's error", "log_batch", tracker.parent_id, tags=[["error", f"{type(e).__name__}: {e}"[:500]]])
            tracker.end_interrupted()
        raise
    finally:
        if monitor is not None:
            stop_system_metrics(monitor, log)
        tracker.finish_parent(status)
        shutil.rmtree(exp.work_dir, ignore_errors=True)  # the trials' scratch folders, however the sweep ended
        if exp.sweep_file.is_file():
            write_manifest(exp.path)
    if status != "KILLED":
        replay_pending(exp.pending_file, tracker.uri, spec.experiment, tracker.parent_id, log)  # the store may be back
    return rows, exp_dir


_FIT = {"started": False}  # Tuner.fit() was entered by this command (cli: the resume hint after a second Ctrl-C)


def fit_started() -> bool:
    return _FIT["started"]


def _tuner(spec: SweepSpec, exp, teachers: dict, callback, address: str | None, resume: bool):
    """Ray (started here unless it runs already) and the Tuner: new, or restored from the experiment folder."""
    import optuna
    import ray
    from ray import tune

    from .manifest import ManifestCallback
    from .optuna_study import PruningOptunaSearch, storage
    from .scheduling import make_scheduler

    runs_dir, exp_dir = exp.path.parent, exp.path
    t = spec.tune
    scheduler = make_scheduler(spec)  # ASHA; reference arms (the baseline) run to the end
    searcher = None
    if t.searcher == "optuna" and spec.search:  # the study lives in optuna.db: a resumed sweep continues it
        # ASHA's stops are told PRUNED (not COMPLETE): optuna-dashboard and optuna.importance read them right
        searcher = PruningOptunaSearch(sampler=optuna.samplers.TPESampler(seed=t.seed), study_name=spec.experiment,
                                       storage=storage(exp.optuna_db), points_to_evaluate=teacher_points(spec),
                                       max_t=spec.trial.epochs)
    exp.work_dir.mkdir(exist_ok=True)
    trainable = tune.with_resources(tune.with_parameters(run_trial, teachers=teachers, work_root=str(exp.work_dir)),
                                    {"cpu": t.cpus_per_trial, "gpu": t.gpus_per_trial})
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # 1 checkpoint/epoch is by design
    if not ray.is_initialized():
        with quiet.default_token_auth_notice():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [
                         str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}})
    # restored: Tune's pickled param space, run config and searcher state (the Optuna study itself is in optuna.db)
    return tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, resume_errored=True) if resume else tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, scheduler=scheduler, search_alg=searcher,
                                    num_samples=t.num_samples, max_concurrent_trials=t.max_concurrent,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=spec.experiment, storage_path=str(runs_dir),
                                  callbacks=[callback, ManifestCallback(exp_dir)],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  failure_config=tune.FailureConfig(max_failures=t.max_failures), verbose=1),
    )


def ray_failure(e: BaseException) -> str:
    """The first line of Ray's error, without its node ids: '2 worker(s) were killed due to the node running low
    on memory. Memory on the node was 22.71GB used / 23.54GB limit (0.96)'."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    first = re.sub(r"\s*\((?:IP|ID): [^)]*\)", "", first.replace("Caught unexpected exception: ", ""))
    return f"Ray Tune stopped the sweep: {first[:300]}"


def _restorable(exp_dir: Path) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(str(exp_dir))


def _tracker(exp, uri: str, experiment: str, log: Callable[[str], None], parent_id: str | None = None):
    from .tracking import SweepTracker

    return SweepTracker.open(uri, experiment, exp.path.parent, parent_id, exp.pending_file, log)


def teacher_points(spec: SweepSpec) -> list[dict] | None:
    """A search over `teacher: {choice: [...]}` first tries every teacher once (the other searched keys at
    their domain's centre), then TPE proposes: every teacher gets a student and a row in the selection
    report. With fewer samples than teachers, only the reference arms (spec.references: the baseline) are tried
    first: a reference student at the compared point always trains (and, never stopped, every epoch)."""
    d = spec.search.get("teacher")
    if d is None or d.kind != "choice":
        return None
    names = d.args if spec.tune.num_samples >= len(d.args) else [n for n in d.args if n in spec.references]
    center = {k: dom.center() for k, dom in spec.search.items() if k != "teacher"}
    return [{**center, "teacher": name} for name in names[:spec.tune.num_samples]] or None


def experiment_dir(spec: SweepSpec):
    """runs/<experiment> of this sweep (layout.ExperimentDir)."""
    from .layout import ExperimentDir

    return ExperimentDir(Path(spec.runs_dir).resolve() / spec.experiment)


def check_resumable(spec: SweepSpec) -> None:
    """--resume: an interrupted sweep of the same YAML must be in runs/<experiment> (checked before anything runs)."""
    from ray import tune

    from ..trial.errors import SpecError
    from .manifest import checkpoint_damage

    exp = experiment_dir(spec)
    if exp.sweep_file.is_file():
        from .manifest import check_manifest
        from .relocation import check_contained
        from .stores import check_resume_stores

        exp.check_owned()  # before anything of Ray's is unpickled
        check_manifest(exp.path)  # and only what this machine's sweep wrote (root owns every file it reads)
        check_contained(exp.path, "--resume")  # Tune writes all over the folder: no link may lead out of it
        check_resume_stores(exp.recorded_tracking_uri, exp.parent_run_id, exp.optuna_db)  # before its run is reopened
    for trial in exp.trials():  # every weights file is read verified: a damaged one with nothing to fall back to stops here
        ckpts = sorted(p for p in trial.path.glob("checkpoint_*") if (p / "state.pt").is_file())
        errors = [checkpoint_damage(c) for c in ckpts]
        if errors and errors[-1] and all(errors):
            raise SpecError("--resume", errors[-1].value, f"{errors[-1].allowed}; trial "
                            f"{trial.trial_id} has no earlier good checkpoint: move {trial.path} away to rerun it")
    if not exp.sweep_file.is_file() or not tune.Tuner.can_restore(str(exp.path)):
        raise SpecError("--resume", str(exp.path), "holds no sweep to resume; run without --resume to start one")
    if exp.space_file.read_text() != spec.source:
        raise SpecError("--resume", str(exp.space_file), f"differs from {spec.path}: a sweep resumes only with "
                        "the YAML it started with (no --set either)")


def _plot_curves(grid, rows: list[TrialRow], spec: SweepSpec, exp_dir: Path) -> Path | None:
    from .plots import plot_pgd_curves
    from .provenance import trial_run_name

    stopped = {r.trial_id: r.early_stopped for r in rows}
    names = {r.trial_id: trial_run_name(r.trial_id, r.config) for r in rows}  # id, teacher, alpha, epsilon
    curves = {}
    for r in grid:
        df = r.metrics_dataframe
        if df is None or "pgd_acc" not in df or "epoch" not in df:
            continue
        tid = str(df["trial_id"].iloc[-1]) if "trial_id" in df else Path(r.path).name
        curves[names.get(tid, tid)] = (df["epoch"].astype(int).tolist(), df["pgd_acc"].astype(float).tolist(), stopped.get(tid, False))
    if not curves:
        return None
    return plot_pgd_curves(curves, spec.trial.epochs, exp_dir / "pgd_per_epoch.png", f"{spec.experiment}: "
                           "validation PGD accuracy per trial (x: stopped early by ASHA)")


def _methods(spec: SweepSpec) -> list[str]:
    return list(spec.search["method"].args) if "method" in spec.search else [spec.trial.method]


def _parent_params(spec: SweepSpec) -> dict[str, Any]:
    params = {k: v for k, v in spec.trial.to_dict().items() if k not in spec.search}
    params.update({f"search.{k}": f"{d.kind}{d.args}" for k, d in spec.search.items()})
    params.update({f"tune.{k}": v for k, v in vars(spec.tune).items() if not k.startswith("prescreen_")})
    if spec.tune.prescreen_keep is not None and "teacher" in spec.search:
        params.update(prescreen_by=spec.tune.prescreen_by, prescreen_keep=spec.tune.prescreen_keep)
    return params


def result_rows(grid, max_epochs: int, unfinished: set[str] | None | bool = False) -> list[TrialRow]:
    """One row per trial. After an interruption (`unfinished`: the trial ids whose MLflow runs did not end, or None
    when MLflow could not say), a trial that did not end is INTERRUPTED, not finished or stopped by ASHA: Ray
    reports it TERMINATED without an error."""
    rows = []
    for r in grid:
        m = r.metrics or {}
        epochs = int(m.get("epoch", 0))
        tid = m.get("trial_id", Path(r.path).name)
        err = None
        if r.error is not None:
            err = str(r.error).strip().splitlines()[-1] if str(r.error).strip() else type(r.error).__name__
        cut = unfinished is not False and r.error is None and (
            not m or (tid in unfinished if unfinished is not None else epochs < max_epochs))
        status = "ERROR" if r.error else ("INTERRUPTED" if cut else "TERMINATED")
        rows.append(TrialRow(trial_id=tid, config=r.config or {}, metrics=m, status=status, error=err,
                             checkpoint=r.checkpoint.path if r.checkpoint else None, epochs=epochs,
                             early_stopped=(status == "TERMINATED" and epochs < max_epochs)))
    return rows


def format_summary(rows: list[TrialRow]) -> str:
    head = f"{'trial':<11} {'method':<7} {'teacher':<12} {'alpha':>6} {'eps':>6} {'steps':>5} {'epochs':>6} {'stopped':>8} {'clean':>6} {'PGD-20':>6}"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: -r.metrics.get("best_pgd_acc", -1)):
        c = r.config
        stopped = {"ERROR": "ERROR", "INTERRUPTED": "killed"}.get(r.status, "ASHA" if r.early_stopped else "no")
        lines.append(f"{r.trial_id:<11} {str(c.get('method'))[:7]:<7} {str(c.get('teacher'))[:12]:<12} {c.get('alpha', 0):>6.3f} "
                     f"{c.get('epsilon', 0):>6.3f} {c.get('attack_steps', 0):>5} {r.epochs:>6} {stopped:>8} "
                     f"{r.metrics.get('clean_acc', float('nan')):>6.3f} {r.metrics.get('pgd_acc', float('nan')):>6.3f}")
        if r.error:
            lines.append(f"{'':<11} failed: {r.error[:150]}")
    lines.append("clean / PGD-20: validation split, last epoch run; ASHA = stopped early by the scheduler, "
                 "killed = interrupted (resume continues it)")
    return "\n".join(lines)
