"""What a person reads first in the MLflow UI: Markdown descriptions (MLflow's tag `mlflow.note.content`, which the UI
renders) of the experiment (one line: what its space searches), of the sweep's parent run (the report's answer to
"should I distil?", the recommended teacher, the exported student's test numbers, the command that reproduces it)
and of the registered student's version (method, teacher, α, ε, test clean and PGD with n and the attack); and the
report's per-teacher table as an MLflow table (MlflowClient.log_table).

The parent run's description is composed from the sweep folder's files (best/, selection.json), so each command
that adds one of them (the sweep, export, report) rewrites it whole, whatever the order.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

NOTE = "mlflow.note.content"  # MLflow's own tag: the description of an experiment, a run or a model version
TABLE_FILE = "selection/selection_table.json"  # the per-teacher table, beside the report's files


def _span(key: str, d) -> str:
    if d.kind in ("choice", "grid"):
        return f"{key} ∈ {{{', '.join(map(str, d.args))}}}"
    return f"{key} {d.args[0]:g}–{d.args[1]:g}" + (" (log scale)" if d.kind == "loguniform" else "")


def experiment_line(spec) -> str:
    """One line: the students, what the space searches, how trials are chosen and what is exported."""
    t = spec.trial
    searched = "; ".join(_span(k, d) for k, d in sorted(spec.search.items())) or "nothing (fixed values)"
    chooser = "ASHA early stopping" if spec.tune.scheduler == "asha" else "no early stopping"
    model = spec.registered_model or f"{spec.experiment}-student"
    return (f"rslad-tune sweep: {t.method.upper()} students ({t.arch}, width {t.width}, {t.epochs} epochs, {t.dataset}) "
            f"searched over {searched}; {spec.tune.num_samples} trials chosen on validation PGD-{t.eval_steps} "
            f"({chooser}); the best exported and registered as `{model}`.")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


def how_trained(trial, teacher_dirs: dict[str, str]) -> str:
    """Method, teacher and α of a TrialConfig: distilled from a teacher, or trained alone (a baseline's method).
    `teacher_dirs`: a sweep's name -> folder (sweep.json); a folder that is gone reads as no teacher."""
    from ..teachers.sources import read_teacher

    folder = teacher_dirs.get(trial.teacher) if trial.teacher else None
    teacher = read_teacher(trial.teacher, folder) if folder and (Path(folder) / "config.json").is_file() else None
    if teacher and teacher.distils:
        return f"{trial.method.upper()} from teacher `{trial.teacher}`, α {trial.alpha:.2f}"
    method = teacher.method(trial) if teacher else trial.method
    return f"{method.upper()} alone" + (f" (the no-teacher arm `{trial.teacher}`)" if trial.teacher else " (no teacher)")


def student_line(m: dict, trial, teacher_dirs: dict[str, str]) -> str:
    """One exported student (best/metrics.json and its TrialConfig) in words: method, teacher, α, ε, the test
    numbers with n and the attack."""
    attack = (f"PGD-{m['eval_steps']} (cross-entropy, L∞ ε {m['eval_epsilon']:g}, step {m['eval_step_size']:g}, uniform "
              "start)")
    return (f"{how_trained(trial, teacher_dirs)}, training ε {trial.epsilon:.3f} (PGD-{trial.attack_steps}): test "
            f"clean {_pct(m['test_clean_acc'])}, {attack} {_pct(m['test_pgd_acc'])} on the first {m['test_n']:,} test "
            f"images (trial {m['trial_id']}, chosen on validation PGD-{m['eval_steps']}).")


def _recommended(v: dict) -> str:
    sd = v.get("should_distill") or {}
    if sd.get("case") in ("helps", "trade"):
        return f"**{sd['teacher']}**" + (" (a trade: see the answer above)" if sd["case"] == "trade" else "")
    if sd.get("case") == "hurts":
        return f"none: train the student alone (**{v['reference']}**)"
    if v.get("ranking"):
        return (f"**{v['ranking'][0]}**, the best teacher on the test split by the objective "
                f"({v.get('objective', 'pgd')}), not shown better than training alone")
    return "none can be named: no teacher has a student that trained every epoch"


def sweep_note(exp, run_tags: dict[str, str], headline: str | None = None) -> str:
    """The parent run's description from the sweep folder `exp` (layout.ExperimentDir) and the run's source tags."""
    from ..trial import saved
    from ..trial.files import read_json

    lines = []  # the answer first: the run page shows the description's first lines until "Show more"
    if (exp.path / "selection.json").is_file():
        v = read_json(exp.path / "selection.json", "selection.json").get("verdict") or {}
        if v.get("should_distill"):
            lines += [f"**Should I distil?** {v['should_distill']['text']}", f"**Recommended teacher:** {_recommended(v)}"]
    if (exp.best_dir / "metrics.json").is_file():
        m = read_json(exp.best_dir / "metrics.json", "metrics.json")
        cfg = exp.best_dir / "config.json"
        trial = saved.trial_config(read_json(cfg, "config.json").get("trial"), cfg)
        model = exp.sweep.get("registered_model") or f"{exp.sweep.get('experiment', exp.name)}-student"
        lines.append(f"**Exported student** (`models:/{model}@champion`, files in `{exp.best_dir}`): "
                     + student_line(m, trial, exp.teacher_dirs))
    else:
        b = exp.best_trial()
        lines.append(f"**Best trial** (not exported): {b.trial_id}, teacher {b.config.get('teacher')}, validation "
                     f"PGD {_pct(b.result.get('best_pgd_acc'))}.")
    commit = run_tags.get("mlflow.source.git.commit", "")
    at = f" at commit `{commit[:10]}`" if commit else ""
    dirty = " (with uncommitted changes)" if run_tags.get("rslad_tune.git_dirty") == "true" else ""
    command = run_tags.get("rslad_tune.command") or f"rslad-tune --space {exp.space_file}"
    lines.append(f"**Reproduce:** `{command}`{at}{dirty}. The report and the per-teacher table: `selection/` under "
                 "Artifacts; the trials: this run's child runs.")
    if headline:
        lines.append(f"**The space:** {headline}")
    return "\n\n".join(lines)


def describe_sweep(uri: str | None, exp, log: Callable[[str], None] | None = print) -> bool:
    """Set the parent run's description (sweep_note) in the store `uri`; a store that refuses is one line."""
    if not uri or not exp.parent_run_id:
        return False
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        run = client.get_run(exp.parent_run_id)
        headline = client.get_experiment(run.info.experiment_id).tags.get(NOTE)
        client.set_tag(exp.parent_run_id, NOTE, sweep_note(exp, run.data.tags, headline))
    except Exception as e:  # the store or a file of the folder: the files stand; the next command writes it again
        if log:
            log(f"the sweep's MLflow run description was not written: {type(e).__name__}: {str(e)[:150]}")
        return False
    return True


def selection_table(rows: list[dict], v: dict) -> dict[str, list[Any]]:
    """The report's per-teacher table as columns: rank, class against the baseline, the teacher's card numbers and
    its compared students' mean, std and count per measure (accuracy in %, as selection.md)."""
    classes = {b["teacher"]: b["class"] for b in v.get("both_axes", [])}
    ranking = v.get("ranking", [])
    order = [v.get("reference")] * bool(v.get("reference")) + ranking + v.get("undecided", [])
    cols: dict[str, list[Any]] = {"rank": [], "teacher": [], "class": []}
    for r in sorted(rows, key=lambda r: order.index(r["teacher"]) if r["teacher"] in order else len(order)):
        cols["rank"].append("reference" if r["teacher"] == v.get("reference") else
                            str(ranking.index(r["teacher"]) + 1) if r["teacher"] in ranking else "undecided")
        cols["teacher"].append(r["teacher"])
        cols["class"].append(classes.get(r["teacher"], ""))
        for k in ("params", "teacher_clean", "teacher_pgd20", "trials", "full_length"):
            cols.setdefault(k, []).append(r.get(k))
        for k in ("val_pgd", "clean", "pgd20", "aa"):
            for stat in ("mean", "std", "count"):
                cols.setdefault(f"student_{k}_{stat}", []).append(r.get(f"student_{k}_{stat}"))
    return cols


def log_selection_table(uri: str | None, run_id: str | None, rows: list[dict], v: dict,
                        log: Callable[[str], None] | None = print) -> bool:
    """The per-teacher table on the parent run as an MLflow table; a store that refuses is one line."""
    if not uri or not run_id:
        return False
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).log_table(run_id, selection_table(rows, v), TABLE_FILE)
    except Exception as e:  # the store refused: selection.json and selection.md hold the same table
        if log:
            log(f"the selection table was not logged to MLflow: {type(e).__name__}: {str(e)[:150]}")
        return False
    return True
