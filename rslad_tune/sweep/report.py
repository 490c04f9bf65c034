"""Teacher selection report: which teacher makes the most robust student, and is the difference real?

    rslad-tune report runs/teacher

Teachers are compared at equal hyper-parameters (`comparison_set`): every student that trained every epoch
(a *full-length* trial; ASHA stopped the others, whose numbers would compare fewer epochs) at the point most
teachers share is evaluated on the test split: clean and PGD-20 (SAT protocol) on `n_examples` images,
AutoAttack standard on the first `n_aa`. Full-length students at other alpha/epsilon are listed with their
validation numbers, not ranked (the ranking would compare hyper-parameters). A
teacher's row gives the mean and sample std over its compared students and how many there are; a teacher
with none is *undecided* and never ranked. The verdict weighs differences against the noise -- the spread
of one teacher's students (pooled over teachers with two or more, else the YAML's `report.noise_std`
measured by a ground-truth sweep), scaled to the two means compared -- and answers whether a larger teacher
made a better student. Numbers are cached beside each checkpoint
(`selection.json`), so a second call only computes what is missing. Writes `selection.md`,
`selection.json`, `selection.png` and `selection_curves.png` (every arm's validation curve, the ASHA rungs marked)
under the experiment folder and logs them to the sweep's MLflow parent run, with the per-teacher table as an MLflow
table (no per-teacher metrics: the run's charts keep the few numbers compared across sweeps) and the report's answer
in the run's description (mlflow_notes.py).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

from ..teachers.folders import read_card
from ..teachers.proxies import PROXIES
from ..teachers.sources import read_teachers
from ..trial.data import load_data, resolve_device
from ..trial.errors import SpecError
from ..trial.files import write_json, write_text
from ..trial.methods import unread_knobs
from ..trial.metrics import CARD, PGD, metric_key, short_name
from .compare import NOT_COMPARED
from .layout import ExperimentDir, TrialDir
from .mlflow_notes import describe_sweep, log_selection_table
from .plots import plot_selection, plot_selection_curves
from .selection_verdict import verdict, verdict_words
from .tracking import log_to_run

ATTACKS = ("Clean", "PGD_SAT", "AA")
NAMES = {col: short_name(col, "PGD_SAT") for col in ATTACKS}  # the rows' clean, pgd20, aa: a card's keys without _acc


def _evaluate_student(trial: TrialDir, n_examples: int | None, n_aa: int, device, log: Callable[[str], None]) -> dict:
    cfg = trial.trial_config
    splits = load_data(cfg, device)
    n = len(splits.test_x[:n_examples])
    want_aa = min(n_aa, n)
    row = trial.cached("selection.json")
    if row and row["n"] == n and row["n_aa"] == want_aa:
        return row
    log(f"teacher {cfg.teacher}: student {trial.trial_id} on {n} test images, AutoAttack on {want_aa}")
    t0 = time.perf_counter()
    res = trial.score("best", splits, ATTACKS if want_aa else ATTACKS[:-1], n=n, n_aa=want_aa, seed=cfg.seed,
                      device=device, log=log)
    row = {"trial_id": trial.trial_id, "n": n, "n_aa": want_aa, "eps": cfg.eval_epsilon,
           "seconds": round(time.perf_counter() - t0, 1), **res}
    trial.store("selection.json", row)
    return row


def _spread(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


NOT_HYPER = NOT_COMPARED | {"teacher"}  # compare's keys that never make a group, and the teacher compared here


def comparison_set(trials: list[TrialDir], baselines: set[str] = frozenset()) -> set[str]:
    """The full-length trials that compare teachers at equal hyper-parameters: grouped by every trial key that
    differs between them (the teacher and the seed aside, and keys a trial's method does not read), the group with
    the most teachers (then the most trials). A teacher search gives every teacher one trial at the same point
    first (tuning.teacher_points). A no-teacher baseline's students train with their own method: it is not compared."""
    def value(t, k):
        if t.config.get("teacher") in baselines and k == "method":
            return None
        return None if k in unread_knobs(t.config.get("method", "rslad")) else t.config.get(k)

    keys = sorted({k for t in trials for k in t.config} - NOT_HYPER)
    varying = [k for k in keys if len({repr(value(t, k)) for t in trials if value(t, k) is not None}) > 1]

    def point(t) -> list[str | None]:
        return [None if value(t, k) is None else repr(value(t, k)) for k in varying]

    def fits(t, p: list) -> bool:  # a knob the trial's method does not read (None) matches any value
        return all(v is None or v == q for v, q in zip(point(t), p))

    # the candidate points: those of trials that read every varying knob (a distilling trial), else all
    full = [point(t) for t in trials if None not in point(t)] or [point(t) for t in trials]
    best = max(full, key=lambda p: (len({t.config.get("teacher") for t in trials if fits(t, p)}),
                                    sum(fits(t, p) for t in trials)), default=None)
    return {t.trial_id for t in trials if best is not None and fits(t, best)}


def selection_rows(exp_dir: Path, *, n_examples: int | None = None, n_aa: int = 200, device: str = "auto",
                   log: Callable[[str], None] = print) -> list[dict]:
    exp = ExperimentDir.open(exp_dir)
    if not exp.teacher_dirs:
        raise SpecError("experiment", str(exp_dir), "used no teacher: the selection report compares teachers")
    trials = exp.finished_trials("to report on")
    for t in trials:  # every trial's saved JSON checked before torch is imported
        t.check_saved()
    full = sorted((t for t in trials if t.result.get("epoch") == t.config.get("epochs")), key=lambda t: t.trial_id)
    dev = resolve_device(device)
    rows = []
    teachers = read_teachers(exp.teacher_dirs)
    baselines = {name for name, teacher in teachers.items() if not teacher.distils}
    compared = comparison_set(full, baselines)
    for name, teacher in teachers.items():
        card = read_card(teacher.folder)
        mine = [t for t in trials if t.config.get("teacher") == name]
        # a pseudo-label baseline uses the teacher (its argmax labels): compared against the plain baseline
        row = {"teacher": name, "baseline": name in baselines, "pseudo": card.get("pseudo"), "params": card.get("params"),
               "macs": card.get("macs"), "teacher_method": card.get("recipe", {}).get("method"),
               **{f"teacher_{NAMES[c]}": card.get(metric_key(c, CARD, "PGD_SAT")) for c in ATTACKS},
               "teacher_n": card.get("eval_n"), "teacher_aa_n": card.get("aa_n"), "source": card.get("source"),
               "trials": len(mine), "full_length": sum(t in full for t in mine), "students": [], "other_students": []}
        for t in (t for t in full if t.config.get("teacher") == name):
            student = {"trial_id": t.trial_id, "alpha": t.config.get("alpha"), "epsilon": t.config.get("epsilon"),
                       "seed": t.config.get("seed"), "val_pgd": t.result["best_pgd_acc"]}
            if t.trial_id not in compared:  # context only: its validation numbers, no test-split evaluation
                row["other_students"].append(student | dict.fromkeys(NAMES.values()))
                continue
            ev = _evaluate_student(t, n_examples, n_aa, dev, log)
            row["students"].append(student | {NAMES[c]: ev.get(c) for c in ATTACKS} | {"n": ev["n"], "n_aa": ev["n_aa"]})
        row["decided"] = bool(row["students"])
        # validation PGD-20 per epoch: of the students ASHA stopped, and of the compared ones (the rung evidence)
        val_pgd = metric_key(PGD)  # a trial's validation PGD per epoch
        row["stopped_curves"] = [[h[val_pgd] for h in t.history] for t in mine if t not in full and t.history]
        row["curves"] = [[h[val_pgd] for h in t.history] for t in full
                         if t.config.get("teacher") == name and t.trial_id in compared]
        row["other_curves"] = [[h[val_pgd] for h in t.history] for t in full
                               if t.config.get("teacher") == name and t.trial_id not in compared]
        for key in ("val_pgd", *NAMES.values()):
            vals = [100 * s[key] for s in row["students"] if s.get(key) is not None]
            row[f"student_{key}_mean"], row[f"student_{key}_std"] = _spread(vals)
            row[f"student_{key}_count"] = len(vals)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ writing


def _pm(m, s) -> str:
    return "–" if m is None else f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")


def _num(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def format_markdown(rows: list[dict], noise_std: float | None = None, v: dict | None = None,
                    noise_dof: int | None = None, prescreen: dict | None = None) -> str:
    v = v or verdict(rows, noise_std, noise_dof)
    head = ["rank", "teacher", "params", "T clean", "T PGD-20", "T AA", "trials (full-length)", "S val PGD-20", "S clean",
            "S PGD-20", "S AA"]
    md = [v["should_distill"]["text"], "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = [v["reference"]] * bool(v["reference"]) + v["ranking"] + v["undecided"]
    for r in sorted(rows, key=lambda r: order.index(r["teacher"])):
        rank = "reference" if r["teacher"] == v["reference"] else str(v["ranking"].index(r["teacher"]) + 1) if r["decided"] else "undecided"
        md.append("| " + " | ".join([
            rank, r["teacher"], "–" if not r["params"] else f"{r['params'] / 1e3:.0f}k", _pct(r["teacher_clean"]), _pct(r["teacher_pgd20"]),
            _pct(r["teacher_aa"]), f"{r['trials']} ({r['full_length']})", _pm(r["student_val_pgd_mean"], r["student_val_pgd_std"]),
            _pm(r["student_clean_mean"], r["student_clean_std"]), _pm(r["student_pgd20_mean"], r["student_pgd20_std"]),
            _pm(r["student_aa_mean"], r["student_aa_std"])]) + " |")
    students = [s for r in rows for s in r["students"]]
    if students:
        n, n_aa = students[0]["n"], students[0]["n_aa"]
        t_n = next((r["teacher_n"] for r in rows if r.get("teacher_n")), None)
        t_aa = next((r["teacher_aa_n"] for r in rows if r.get("teacher_aa_n")), None)
        md.append(f"\nT = teacher, from its card: clean / PGD-20 on the first {t_n or 'all'} test images (the students' "
                  f"{n} are {'the same' if t_n == n else 'the first ' + str(n)}), AutoAttack on the first {t_aa or '–'}. "
                  f"S = the teacher's compared students (trained every epoch, at the hyper-parameters that the most "
                  f"teachers share): mean ± sample std over them of clean and PGD-20 on {n} test images and AutoAttack "
                  f"standard on the first {n_aa} (± only with two or more students). Trials ASHA stopped early count in "
                  "`trials` but not in the numbers; full-length students at other hyper-parameters are listed below, "
                  "not ranked and not evaluated on the test split (they would compare hyper-parameters, not teachers). Accuracy in %.")
    md += [""] + verdict_words(v, rows)
    every = [(r, s, "yes") for r in rows for s in r["students"]] + [(r, s, "no: other α/ε") for r in rows
                                                                     for s in r.get("other_students", [])]
    if every:
        md += ["", "| teacher | student trial | compared | α | ε | val PGD-20 (best epoch) | clean | PGD-20 | AA |",
               "|---|---|---|---|---|---|---|---|---|"]
        md += [f"| {r['teacher']} | {s['trial_id']} | {c} | {_num(s['alpha'])} | {_num(s['epsilon'])} | {_pct(s['val_pgd'])} | "
               f"{_pct(s['clean'])} | {_pct(s['pgd20'])} | {_pct(s['aa'])} |" for r, s, c in every]
    return "\n".join(md + _prescreened(prescreen))


def _prescreened(p: dict | None) -> list[str]:
    """The teachers the sweep's prescreen dropped before any trial (no student, no row above), with their proxies."""
    if not p or not p.get("dropped"):
        return []
    md = ["", (f"Prescreened out before any trial (tune.prescreen: by {p['by']}, keep {p['keep']}; proxies on the "
               "students' training images, docs/teacher-proxies/predictions.md): no student trained."), "",
          "| teacher | " + " | ".join(PROXIES) + " |", "|---|" + "---|" * len(PROXIES)]
    return md + ["| " + " | ".join([n] + ["–" if (v := p["teachers"][n][k]) is None else f"{v:.4f}" for k in PROXIES])
                 + " |" for n in p["dropped"]]


def selection_report(exp_dir: str | Path, tracking_uri: str | None = None, **kw) -> tuple[str, Path]:
    exp = Path(exp_dir)
    log = kw.get("log", print)
    rows = selection_rows(exp, **kw)
    sweep = ExperimentDir.open(exp, tracking_flag=tracking_uri)
    noise_std = sweep.sweep.get("report_noise_std")  # the YAML's report.noise_std
    v = verdict(rows, noise_std, sweep.sweep.get("report_noise_dof"), sweep.sweep.get("report_objective") or "pgd",
                sweep.sweep.get("report_clean_weight", 0.5), sweep.sweep.get("report_clean_noise_std"),
                sweep.sweep.get("report_clean_noise_dof"))
    md = format_markdown(rows, v=v, prescreen=sweep.sweep.get("prescreen"))
    write_json({"rows": rows, "verdict": v, "prescreen": sweep.sweep.get("prescreen")}, exp / "selection.json")
    write_text(md + "\n", exp / "selection.md")
    png = plot_selection(rows, exp / "selection.png", f"{exp.name}: each teacher's students at equal hyper-parameters",
                         noise=v["noise_std"])
    curves = plot_selection_curves(rows, sweep.sweep.get("rungs"), exp / "selection_curves.png",
                                   f"{exp.name}: validation PGD-20 per epoch of every arm",
                                   references=sweep.sweep.get("references", []))
    files = [(f, "selection") for f in (exp / "selection.md", exp / "selection.json", png, curves)]
    if log_to_run(sweep.tracking_uri, sweep.parent_run_id, artifacts=files, log=log):
        log_selection_table(sweep.tracking_uri, sweep.parent_run_id, rows, v, log)
        describe_sweep(sweep.tracking_uri, sweep, log)  # the parent run's description opens with this report's answer
        log("selection report logged to the sweep's MLflow parent run (its files, the table, the run's description)")
    return md, exp / "selection.md"
