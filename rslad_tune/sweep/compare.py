"""A comparison: the evaluation suite on every finished trial of a sweep, mean ± std over seeds.

    rslad-tune compare runs/paper_fmnist --n-aa 500 [--last]

Trials are grouped by every trial key that differs between them except the seed (method, teacher,
kl_reduction, lr, ...). Each trial's best checkpoint (by validation PGD accuracy; for a method
without attacks its last epoch) is evaluated on the test split, with `--last` also its last
checkpoint (the paper's best-versus-last), and the numbers are written beside the trial
(`suite.json`), so an interrupted comparison continues where it stopped. AutoAttack runs only for
the trials whose seed is `aa_seed`, on the first `n_aa` images, best checkpoint, with PGD-20 on the
same images beside it (`PGD_SAT_aa`).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

from ..trial.config import TrialConfig
from ..trial.data import load_data, resolve_device
from ..trial.files import write_json, write_text
from ..trial.methods import METHODS, unread_knobs
from ..trial.robustness import COLUMNS, resolve_columns
from .layout import ExperimentDir, TrialDir

NOT_COMPARED = {"seed", "num_threads", "device", "data_dir", "precision", "compile"}  # keys that never make a group
SUITE = COLUMNS[:-1]  # every column but AutoAttack


def _best_row_name(cfg: TrialConfig) -> str:
    return "best" if METHODS[cfg.method].adversarial else "last"


def _scored(row: dict | None, trial: TrialDir, cols: list[str], want_aa: int, n_examples: int | None, last: bool) -> bool:
    """A cached suite.json row that already holds what is asked for now, of the checkpoint the trial has now
    (a trial scored while it was still training is scored again once it has trained on)."""
    return bool(row) and row.get("n_requested", -1) == n_examples and row.get("n_aa", 0) >= want_aa \
        and all(c in row for c in cols) and (not last or all(c in row.get("last", {}) for c in cols)) \
        and (not row.get("n_aa") or "PGD_SAT_aa" in row) and (not last or "last" in row) \
        and row.get("last_epoch") == trial.result.get("epoch") and row.get("best_epoch") == trial.result.get("best_epoch")


def evaluate_trials(exp_dir: Path, *, n_aa: int = 500, aa_seed: int = 0, n_examples: int | None = None,
                    device: str = "auto", last: bool = False, log: Callable[[str], None] = print,
                    only: Callable[[TrialDir], bool] | None = None, attacks: Sequence[str] = COLUMNS) -> list[dict]:
    """The suite's `attacks` (default: every column) on every finished trial (or those `only` accepts), each
    cached in its suite.json."""
    columns = resolve_columns(attacks)
    cols = [c for c in SUITE if c in columns] or ["Clean"]  # every row has its clean accuracy
    trials = [t for t in ExperimentDir.open(exp_dir).finished_trials("to compare") if only is None or only(t)]
    configs = {t.path: t.check_saved() for t in trials}  # every trial's saved JSON checked before torch is imported
    dev = resolve_device(device)
    rows = []
    for i, t in enumerate(sorted(trials, key=lambda t: (t.config["method"], str(t.config.get("teacher")), t.config["seed"])), 1):
        cfg = configs[t.path]
        want_aa = n_aa if cfg.seed == aa_seed and "AA" in columns else 0
        row = t.cached("suite.json")
        if _scored(row, t, cols, want_aa, n_examples, last):
            log(f"[{i}/{len(trials)}] {t.trial_id} ({cfg.method}, seed {cfg.seed}): done before")
            rows.append(row | {"config": t.config})
            continue
        splits = load_data(cfg, dev)
        x = splits.test_x[:n_examples]
        log(f"[{i}/{len(trials)}] {t.trial_id} ({cfg.method}, teacher {cfg.teacher}, seed {cfg.seed}): {len(x)} test images"
            + (f", AutoAttack on {min(want_aa, len(x))}" if want_aa else "") + (", best and last checkpoints" if last else ""))
        t0 = time.perf_counter()
        which = _best_row_name(cfg)
        res = t.score(which, splits, cols + ["AA"] * bool(want_aa), n=n_examples, n_aa=want_aa, device=dev, log=log)
        if want_aa:  # PGD-20 on AutoAttack's images, so that AA <= PGD-20 can be checked like for like
            res["PGD_SAT_aa"] = t.score(which, splits, ["PGD_SAT"], n=min(want_aa, len(x)), device=dev)["PGD_SAT"]
        row = {"trial_id": t.trial_id, "method": cfg.method, "arch": cfg.arch, "width": cfg.width, "seed": cfg.seed,
               "teacher": cfg.teacher, "eps": cfg.eval_epsilon, "n": len(x), "n_requested": n_examples, "n_aa": min(want_aa, len(x)),
               "checkpoint": which, "best_epoch": t.result.get("best_epoch"),
               "last_epoch": t.result.get("epoch"), **res}
        if last and row["best_epoch"] == row["last_epoch"]:  # the same weights (the best was kept at the last epoch)
            row["last"] = {c: res[c] for c in cols}
            log(f"last checkpoint = best (epoch {row['last_epoch']}): the same numbers")
        elif last:
            row["last"] = t.score("last", splits, cols, n=n_examples, device=dev, log=log)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        t.store("suite.json", row)
        rows.append(row | {"config": t.config})
    return rows


def _value(config: dict, key: str):
    """A trial key's value as far as its method is concerned: a knob the method does not read is None."""
    return None if key in unread_knobs(config.get("method", "rslad")) else config.get(key)


def varying_keys(rows: list[dict]) -> list[str]:
    """The trial keys whose value differs between the compared trials (the seed aside, and knobs their methods do
    not read): they make the groups."""
    keys = sorted({k for r in rows for k in r["config"]} - NOT_COMPARED)
    read = lambda k: [r for r in rows if k not in unread_knobs(r["config"].get("method", "rslad"))]  # noqa: E731
    return [k for k in keys if len({json.dumps(r["config"].get(k), sort_keys=True) for r in read(k)}) > 1]


def _mean_std(vals: list[float]) -> tuple[float, float] | None:
    return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None


def aggregate(rows: list[dict]) -> list[dict]:
    """One line per group: mean and sample std over seeds (best, and last where scored); AA from the rows that have it."""
    keys = varying_keys(rows)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps({k: _value(r["config"], k) for k in keys}, sort_keys=True), []).append(r)
    out = []
    for group, rs in groups.items():
        first = rs[0]
        line = {"group": json.loads(group), "method": first["method"],
                "student": first["arch"] + (f"-w{first['width']}" if first.get("width") else ""),
                "seeds": sorted(r["seed"] for r in rs), "best_epochs": [r.get("best_epoch") for r in rs],
                "last_epochs": [r.get("last_epoch") for r in rs]}
        for c in SUITE:
            line[c] = _mean_std([100 * r[c] for r in rs if c in r])
            line[f"last_{c}"] = _mean_std([100 * r["last"][c] for r in rs if c in r.get("last", {})])
        aa = [r for r in rs if "AA" in r]
        line["AA"] = (100 * aa[0]["AA"], aa[0]["n_aa"], aa[0]["seed"], 100 * aa[0]["PGD_SAT_aa"]
                      if "PGD_SAT_aa" in aa[0] else None) if aa else None
        out.append(line)
    return sorted(out, key=lambda ln: json.dumps(ln["group"], sort_keys=True))


def _cell(v) -> str:
    return f"{v[0]:.2f} ± {v[1]:.2f}" if v else "–"


def format_markdown(lines: list[dict], rows: list[dict]) -> str:
    n = rows[0]["n"] if rows else 0
    aa_n = next((r["n_aa"] for r in rows if r.get("n_aa")), 0)
    keys = [k for k in (lines[0]["group"] if lines else {}) if k not in ("method",)]
    shown = [c for c in SUITE if any(c in r for r in rows)]  # the columns that were asked for (compare --attacks)
    has_last = any(ln[f"last_{c}"] for ln in lines for c in shown)
    head = (["method"] + keys + ["student", "seeds", "checkpoint"] + shown
            + [f"AA ({aa_n} images, one seed)" if aa_n else "AA (not run)"])
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ln in lines:
        ident = [ln["method"]] + [str(ln["group"][k]) for k in keys] + [ln["student"], str(len(ln["seeds"]))]
        aa = ln["AA"]
        aa_cell = (f"{aa[0]:.2f} (seed {aa[2]}; PGD-20 there {aa[3]:.2f})" if aa and aa[3] is not None
                   else f"{aa[0]:.2f} (seed {aa[2]})" if aa else "–")
        md.append("| " + " | ".join(ident + ["best"] + [_cell(ln[c]) for c in shown] + [aa_cell]) + " |")
        if has_last:
            md.append("| " + " | ".join(ident + ["last"] + [_cell(ln[f"last_{c}"]) for c in shown] + ["–"]) + " |")
    md.append(f"\nAccuracy (%) on {n} test images, mean ± std over seeds; best: the epoch with the highest validation "
              "PGD-20 (a method without attacks: its last epoch); last: the final epoch.")
    return "\n".join(md)


def compare_experiment(exp_dir: str | Path, **kw) -> tuple[str, Path]:
    exp = Path(exp_dir)
    rows = evaluate_trials(exp, **kw)
    lines = aggregate(rows)
    md = format_markdown(lines, rows)
    write_json({"rows": rows, "table": lines, "groups_by": varying_keys(rows)}, exp / "comparison.json")
    write_text(md + "\n", exp / "comparison.md")
    return md, exp / "comparison.md"
