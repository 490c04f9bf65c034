"""Teacher selection report: each teacher's best student against the teacher's size and robustness.

    rslad-tune report runs/teacher

The question it answers is the one a plain sweep does not: does a larger or more robust teacher
make a more robust student? For every teacher the sweep could use, its best finished student (by
validation PGD accuracy, the number ASHA and the searcher ranked trials by) is evaluated on the
test split with the suite's PGD-20 (SAT protocol) on `n_examples` images and AutoAttack standard
on the first `n_aa`. Numbers are cached beside the checkpoint (`selection.json`), so a second
call only computes what is missing. Writes `selection.md`, `selection.json` and `selection.png`
under the experiment folder and logs them, with one metric per teacher, to the sweep's MLflow
parent run.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .data import load_data, resolve_device
from .files import load_weights, write_json, write_text
from .layout import ExperimentDir, TrialDir
from .plots import plot_selection
from .robustness import evaluate_suite
from .spec import SpecError
from .teachers import read_card
from .tracking import log_to_run
from .trainer import make_student

ATTACKS = ("Clean", "PGD_SAT", "AA")


def _evaluate_student(trial: TrialDir, n_examples: int | None, n_aa: int, device, log: Callable[[str], None]) -> dict:
    cfg = trial.trial_config
    splits = load_data(cfg, device)
    n = len(splits.test_x[:n_examples])
    want_aa = min(n_aa, n)
    row = trial.cached("selection.json")
    if row and row["n"] == n and row["n_aa"] == want_aa:
        return row
    model = load_weights(make_student(cfg, splits), trial.weights("best"), "best checkpoint").to(device)
    log(f"teacher {cfg.teacher}: best student {trial.trial_id} on {n} test images, AutoAttack on {want_aa}")
    t0 = time.perf_counter()
    res = evaluate_suite(model, splits.test_x[:n], splits.test_y[:n], cfg.eval_epsilon, n_aa=want_aa,
                         attacks=ATTACKS if want_aa else ATTACKS[:-1], seed=cfg.seed, progress=log)
    row = {"trial_id": trial.trial_id, "n": n, "n_aa": want_aa, "eps": cfg.eval_epsilon,
           "seconds": round(time.perf_counter() - t0, 1), **res}
    trial.store("selection.json", row)
    return row


def selection_rows(exp_dir: Path, *, n_examples: int | None = None, n_aa: int = 200, device: str = "auto",
                   log: Callable[[str], None] = print) -> list[dict]:
    exp = ExperimentDir.open(exp_dir)
    if not exp.teacher_dirs:
        raise SpecError("experiment", str(exp_dir), "used no teacher: the selection report compares teachers")
    trials = exp.finished_trials("to report on")
    dev = resolve_device(device)
    rows = []
    for name, folder in exp.teacher_dirs.items():
        card = read_card(folder)
        mine = [t for t in trials if t.config.get("teacher") == name]
        row = {"teacher": name, "params": card["params"], "macs": card["macs"], "teacher_clean": card["clean_acc"],
               "teacher_pgd20": card["pgd20_acc"], "teacher_aa": card.get("aa_acc"), "teacher_aa_n": card.get("aa_n"),
               "source": card["source"], "trials": len(mine)}
        if mine:
            best = max(mine, key=lambda t: t.result["best_pgd_acc"])
            ev = _evaluate_student(best, n_examples, n_aa, dev, log)
            c = best.config
            row.update({"best_trial": best.trial_id, "alpha": c.get("alpha"), "epsilon": c.get("epsilon"),
                        "epochs": best.result.get("epoch"), "max_epochs": c.get("epochs"),
                        "student_val_pgd": best.result["best_pgd_acc"], "student_clean": ev["Clean"],
                        "student_pgd20": ev["PGD_SAT"], "student_aa": ev.get("AA"), "n": ev["n"], "n_aa": ev["n_aa"]})
        rows.append(row)
    return rows


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def format_markdown(rows: list[dict]) -> str:
    head = ["teacher", "params", "MACs", "T clean", "T PGD-20", "T AA", "trials", "best student", "epochs", "α", "ε",
            "S val PGD-20", "S clean", "S PGD-20", "S AA"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r["params"]):
        has = "best_trial" in r
        md.append("| " + " | ".join([
            r["teacher"], f"{r['params'] / 1e3:.0f}k", f"{r['macs'] / 1e6:.1f}M", _pct(r["teacher_clean"]),
            _pct(r["teacher_pgd20"]), _pct(r["teacher_aa"]), str(r["trials"]),
            r.get("best_trial", "–"), f"{r.get('epochs')}/{r.get('max_epochs')}" if has else "–", f"{r['alpha']:.3f}" if has and r.get("alpha") is not None else "–",
            f"{r['epsilon']:.3f}" if has and r.get("epsilon") is not None else "–",
            _pct(r.get("student_val_pgd")), _pct(r.get("student_clean")), _pct(r.get("student_pgd20")),
            _pct(r.get("student_aa"))]) + " |")
    done = [r for r in rows if "best_trial" in r]
    if done:
        n, n_aa = done[0]["n"], done[0]["n_aa"]
        t_n = next((r["teacher_aa_n"] for r in rows if r.get("teacher_aa_n")), None)
        md.append(f"\nT = teacher (card: clean / PGD-20 on its card's test images, AutoAttack on {t_n or '–'}); "
                  f"S = that teacher's best student by validation PGD-20: clean and PGD-20 on {n} test images, "
                  f"AutoAttack standard on the first {n_aa}; epochs: trained / allowed (fewer: stopped by ASHA). "
                  "Accuracy in %.")
    return "\n".join(md)


def selection_report(exp_dir: str | Path, **kw) -> tuple[str, Path]:
    exp = Path(exp_dir)
    log = kw.get("log", print)
    rows = selection_rows(exp, **kw)
    md = format_markdown(rows)
    write_json({"rows": rows}, exp / "selection.json")
    write_text(md + "\n", exp / "selection.md")
    png = plot_selection(rows, exp / "selection.png", f"{exp.name}: each teacher's best student")
    metrics = {f"selection.{r['teacher']}.{k}": r[k] for r in rows
               for k in ("student_pgd20", "student_aa", "student_clean") if r.get(k) is not None}
    files = [(f, "selection") for f in (exp / "selection.md", exp / "selection.json", png)]
    sweep = ExperimentDir.open(exp)
    if log_to_run(sweep.tracking_uri, sweep.parent_run_id, metrics=metrics, artifacts=files, log=log):
        log("selection report logged to the sweep's MLflow parent run")
    return md, exp / "selection.md"
