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
`selection.json` and `selection.png` under the experiment folder and logs them, with per-teacher metrics,
to the sweep's MLflow parent run.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Callable

from ..teachers.folders import read_card
from ..trial.data import load_data, resolve_device
from ..trial.errors import SpecError
from ..trial.files import write_json, write_text
from .compare import NOT_COMPARED
from .layout import ExperimentDir, TrialDir
from .plots import plot_selection
from .tracking import log_to_run

ATTACKS = ("Clean", "PGD_SAT", "AA")
Z = 2.0  # a difference is "larger than the noise" beyond 2 standard errors (about 95 % two-sided)


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


def comparison_set(trials: list[TrialDir]) -> set[str]:
    """The full-length trials that compare teachers at equal hyper-parameters: grouped by every trial key that
    differs between them (the teacher and the seed aside), the group with the most teachers (then the most
    trials). A teacher search gives every teacher one trial at the same point first (tuning.teacher_points)."""
    keys = sorted({k for t in trials for k in t.config} - NOT_HYPER)
    varying = [k for k in keys if len({repr(t.config.get(k)) for t in trials}) > 1]
    groups: dict[str, list[TrialDir]] = {}
    for t in trials:
        groups.setdefault(repr([t.config.get(k) for k in varying]), []).append(t)
    best = max(groups.values(), key=lambda g: (len({t.config.get("teacher") for t in g}), len(g)), default=[])
    return {t.trial_id for t in best}


def selection_rows(exp_dir: Path, *, n_examples: int | None = None, n_aa: int = 200, device: str = "auto",
                   log: Callable[[str], None] = print) -> list[dict]:
    exp = ExperimentDir.open(exp_dir)
    if not exp.teacher_dirs:
        raise SpecError("experiment", str(exp_dir), "used no teacher: the selection report compares teachers")
    trials = exp.finished_trials("to report on")
    full = sorted((t for t in trials if t.result.get("epoch") == t.config.get("epochs")), key=lambda t: t.trial_id)
    compared = comparison_set(full)
    dev = resolve_device(device)
    rows = []
    for name, folder in exp.teacher_dirs.items():
        card = read_card(folder)
        mine = [t for t in trials if t.config.get("teacher") == name]
        row = {"teacher": name, "params": card["params"], "macs": card["macs"], "teacher_method": card.get("recipe", {}).get("method"),
               "teacher_clean": card["clean_acc"], "teacher_pgd20": card["pgd20_acc"], "teacher_n": card.get("eval_n"),
               "teacher_aa": card.get("aa_acc"), "teacher_aa_n": card.get("aa_n"), "source": card["source"],
               "trials": len(mine), "full_length": sum(t in full for t in mine), "students": [], "other_students": []}
        for t in (t for t in full if t.config.get("teacher") == name):
            student = {"trial_id": t.trial_id, "alpha": t.config.get("alpha"), "epsilon": t.config.get("epsilon"),
                       "seed": t.config.get("seed"), "val_pgd": t.result["best_pgd_acc"]}
            if t.trial_id not in compared:  # context only: its validation numbers, no test-split evaluation
                row["other_students"].append(student | {"clean": None, "pgd20": None, "aa": None})
                continue
            ev = _evaluate_student(t, n_examples, n_aa, dev, log)
            row["students"].append(student | {"clean": ev["Clean"], "pgd20": ev["PGD_SAT"], "aa": ev.get("AA"),
                                              "n": ev["n"], "n_aa": ev["n_aa"]})
        row["decided"] = bool(row["students"])
        for key in ("val_pgd", "clean", "pgd20", "aa"):
            vals = [100 * s[key] for s in row["students"] if s.get(key) is not None]
            row[f"student_{key}_mean"], row[f"student_{key}_std"] = _spread(vals)
            row[f"student_{key}_count"] = len(vals)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ the verdict


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties averaged (for Spearman's correlation)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    if len(set(ra)) == 1 or len(set(rb)) == 1:
        return None
    return statistics.correlation(ra, rb)


def pooled_std(rows: list[dict], key: str = "pgd20") -> tuple[float | None, int]:
    """Sample std of one teacher's students, pooled over teachers with >= 2 (and its degrees of freedom)."""
    ss, dof = 0.0, 0
    for r in rows:
        vals = [100 * s[key] for s in r["students"] if s.get(key) is not None]
        if len(vals) > 1:
            m = statistics.fmean(vals)
            ss += sum((v - m) ** 2 for v in vals)
            dof += len(vals) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


def compare_two(a: dict, b: dict, sd: float | None) -> dict:
    """a's mean student PGD-20 minus b's, its noise (Z standard errors) and whether it is larger."""
    d = a["student_pgd20_mean"] - b["student_pgd20_mean"]
    noise = Z * sd * math.sqrt(1 / a["student_pgd20_count"] + 1 / b["student_pgd20_count"]) if sd is not None else None
    return {"a": a["teacher"], "b": b["teacher"], "diff": d, "noise": noise, "real": noise is not None and abs(d) > noise}


def verdict(rows: list[dict], noise_std: float | None = None) -> dict:
    """Teachers ranked by their compared students' mean test PGD-20; the noise is the pooled spread of one
    teacher's students when the sweep has replicates, else `noise_std` (measured by a ground-truth sweep)."""
    decided = sorted((r for r in rows if r["decided"]), key=lambda r: -r["student_pgd20_mean"])
    undecided = [r["teacher"] for r in rows if not r["decided"]]
    sd, dof = pooled_std(decided)
    source = "this sweep" if sd is not None else "report.noise_std" if noise_std is not None else None
    sd = sd if sd is not None else noise_std
    out = {"ranking": [r["teacher"] for r in decided], "undecided": undecided, "noise_std": sd, "noise_dof": dof,
           "noise_source": source,
           "vs_best": [compare_two(decided[0], r, sd) for r in decided[1:]] if decided else [],
           "size_spearman": spearman([r["params"] for r in decided], [r["student_pgd20_mean"] for r in decided]),
           "largest_vs_smallest": None, "families": []}
    if len({r["params"] for r in decided}) > 1:
        big = max(decided, key=lambda r: (r["params"], r["student_pgd20_mean"]))
        small = min(decided, key=lambda r: (r["params"], -r["student_pgd20_mean"]))
        out["largest_vs_smallest"] = compare_two(big, small, sd)
    by_method: dict[str, list[dict]] = {}
    for r in decided:
        if r.get("teacher_method"):
            by_method.setdefault(r["teacher_method"], []).append(r)
    for method, rs in sorted(by_method.items()):  # the same recipe at different sizes: size alone changes
        if len({r["params"] for r in rs}) > 1:
            rs = sorted(rs, key=lambda r: r["params"])
            out["families"].append(compare_two(rs[-1], rs[0], sd) | {"method": method})
    return out


def _d(c: dict) -> str:
    noise = "noise unknown" if c["noise"] is None else f"noise ± {c['noise']:.2f}"
    return f"{c['a']} − {c['b']} = {c['diff']:+.2f} points ({noise}: {'larger' if c['real'] else 'within the noise'})"


def verdict_words(v: dict, rows: list[dict]) -> list[str]:
    by = {r["teacher"]: r for r in rows}
    if not v["ranking"]:
        return ["**Verdict: undecided.** No teacher has a student that trained every epoch: nothing can be ranked."]
    best = by[v["ranking"][0]]
    by_val = max((by[t] for t in v["ranking"]), key=lambda r: r["student_val_pgd_mean"])
    words = [f"**Best teacher on the test split: {best['teacher']}** — its {best['student_pgd20_count']} compared "
             f"student(s) score {best['student_pgd20_mean']:.2f} % test PGD-20 on average. The sweep's own pick, by "
             f"validation PGD-20 (what ASHA and the export rank by): **{by_val['teacher']}** "
             f"({by_val['student_val_pgd_mean']:.2f} %)."]
    if v["noise_std"] is None:
        words.append("**Noise unknown**: no teacher has two compared students and the YAML gives no `report.noise_std`, "
                     "so no difference below can be called real; run more seeds before trusting the ranking.")
    else:
        tied = [c["b"] for c in v["vs_best"] if not c["real"]]
        beaten = [c["b"] for c in v["vs_best"] if c["real"]]
        where = (f"std pooled over {v['noise_dof']} degrees of freedom of this sweep" if v["noise_source"] == "this sweep"
                 else "`report.noise_std`: measured by a ground-truth sweep, this sweep has one student per teacher")
        words.append(f"Noise: students of one teacher spread by {v['noise_std']:.2f} points ({where}); a difference "
                     f"counts when it exceeds {Z:g} standard errors. "
                     + (f"Within the noise of the best: {', '.join(tied)}. " if tied else "")
                     + (f"Worse than the best beyond the noise: {', '.join(beaten)}." if beaten else
                        "No teacher is worse than the best beyond the noise." if not tied else ""))
    if v["undecided"]:
        words.append(f"Undecided (no student trained every epoch at the compared hyper-parameters; not ranked): "
                     f"{', '.join(v['undecided'])}.")
    lvs = v["largest_vs_smallest"]
    if lvs is None:
        words.append("**Is a larger teacher better?** Cannot tell: the decided teachers all have the same size.")
    else:
        answer = ("Cannot tell without a noise estimate" if lvs["noise"] is None else "Yes" if lvs["real"] and lvs["diff"] > 0
                  else "No — the smaller one is better" if lvs["real"] else "Not measurably")
        rho = "–" if v["size_spearman"] is None else f"{v['size_spearman']:+.2f}"
        words.append(f"**Is a larger teacher better? {answer}.** Largest against smallest: {_d(lvs)}; Spearman "
                     f"correlation of teacher parameters with student PGD-20 over {len(v['ranking'])} teachers: {rho}."
                     + "".join(f" Same recipe ({c['method']}), larger against smaller: {_d(c)}." for c in v["families"]))
    return words


# ------------------------------------------------------------------------------------------ writing


def _pm(m, s) -> str:
    return "–" if m is None else f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")


def _num(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def format_markdown(rows: list[dict], noise_std: float | None = None, v: dict | None = None) -> str:
    v = v or verdict(rows, noise_std)
    head = ["rank", "teacher", "params", "T clean", "T PGD-20", "T AA", "trials (full-length)", "S val PGD-20", "S clean",
            "S PGD-20", "S AA"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = v["ranking"] + v["undecided"]
    for r in sorted(rows, key=lambda r: order.index(r["teacher"])):
        rank = str(v["ranking"].index(r["teacher"]) + 1) if r["decided"] else "undecided"
        md.append("| " + " | ".join([
            rank, r["teacher"], f"{r['params'] / 1e3:.0f}k", _pct(r["teacher_clean"]), _pct(r["teacher_pgd20"]),
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
    return "\n".join(md)


def selection_report(exp_dir: str | Path, **kw) -> tuple[str, Path]:
    exp = Path(exp_dir)
    log = kw.get("log", print)
    rows = selection_rows(exp, **kw)
    sweep = ExperimentDir.open(exp)
    noise_std = sweep.sweep.get("report_noise_std")  # the YAML's report.noise_std
    v = verdict(rows, noise_std)
    md = format_markdown(rows, v=v)
    write_json({"rows": rows, "verdict": v}, exp / "selection.json")
    write_text(md + "\n", exp / "selection.md")
    png = plot_selection(rows, exp / "selection.png", f"{exp.name}: each teacher's students at equal hyper-parameters",
                         noise=v["noise_std"])
    metrics = {f"selection.{r['teacher']}.{k}": r[k] for r in rows
               for k in ("student_pgd20_mean", "student_aa_mean", "student_clean_mean", "full_length") if r.get(k) is not None}
    files = [(f, "selection") for f in (exp / "selection.md", exp / "selection.json", png)]
    if log_to_run(sweep.tracking_uri, sweep.parent_run_id, metrics=metrics, artifacts=files, log=log):
        log("selection report logged to the sweep's MLflow parent run")
    return md, exp / "selection.md"
