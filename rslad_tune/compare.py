"""A method comparison: the evaluation suite on every finished trial of a sweep, mean ± std over seeds.

    rslad-tune compare runs/paper_fmnist --n-aa 500

Each trial's best checkpoint (by validation PGD accuracy) is evaluated on the test split and the
result written beside the trial (`suite.json`), so an interrupted comparison continues where it
stopped; the natural (no-attack) baseline is evaluated at its last checkpoint, since its PGD
accuracy only falls as it trains and "best by PGD" would pick an under-trained epoch.
AutoAttack runs only for the trials whose seed is `aa_seed`, on the first `n_aa` images.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

from .data import load_data, resolve_device
from .files import load_weights, write_json
from .layout import ExperimentDir, TrialDir
from .methods import METHODS
from .robustness import COLUMNS, evaluate_suite
from .spec import TrialConfig
from .trainer import make_student


def evaluate_trials(exp_dir: Path, *, n_aa: int = 500, aa_seed: int = 0, n_examples: int | None = None,
                    device: str = "auto", log: Callable[[str], None] = print) -> list[dict]:
    trials = ExperimentDir.open(exp_dir).finished_trials("to compare")
    dev = resolve_device(device)
    rows = []
    for i, t in enumerate(sorted(trials, key=lambda t: (t.config["method"], t.config["seed"])), 1):
        cfg = t.trial_config
        want_aa = n_aa if cfg.seed == aa_seed else 0
        row = t.cached("suite.json")
        if (row and row.get("n_aa", 0) >= want_aa and (n_examples is None or row["n"] <= n_examples)
                and row.get("checkpoint", "best") == _checkpoint(cfg)):
            if row.get("n_aa") and "PGD_SAT_aa" not in row:  # a row from before the like-for-like column
                splits = load_data(cfg, dev)
                row["PGD_SAT_aa"] = _pgd_on_aa_images(_load(t, cfg, splits, dev), cfg, splits, row["n_aa"])
                t.store("suite.json", row)
            log(f"[{i}/{len(trials)}] {t.trial_id} ({row['method']}, seed {row['seed']}): done before")
            rows.append(row)
            continue
        splits = load_data(cfg, dev)
        model, x, y = _load(t, cfg, splits, dev), splits.test_x[:n_examples], splits.test_y[:n_examples]
        log(f"[{i}/{len(trials)}] {t.trial_id} ({cfg.method}, seed {cfg.seed}): {len(x)} test images"
            + (f", AutoAttack on {min(want_aa, len(x))}" if want_aa else ""))
        t0 = time.perf_counter()
        attacks = COLUMNS if want_aa else COLUMNS[:-1]
        res = evaluate_suite(model, x, y, cfg.eval_epsilon, n_aa=want_aa, attacks=attacks, progress=log)
        if want_aa:  # PGD-20 on AutoAttack's images, so that AA <= PGD-20 can be checked like for like
            res["PGD_SAT_aa"] = _pgd_on_aa_images(model, cfg, splits, min(want_aa, len(x)))
        row = {"trial_id": t.trial_id, "method": cfg.method, "arch": cfg.arch, "width": cfg.width, "seed": cfg.seed,
               "teacher": cfg.teacher, "eps": cfg.eval_epsilon, "n": len(x), "n_aa": min(want_aa, len(x)),
               "checkpoint": _checkpoint(cfg), "best_epoch": t.result.get("best_epoch"),
               "seconds": round(time.perf_counter() - t0, 1), **res}
        t.store("suite.json", row)
        rows.append(row)
    return rows


def _checkpoint(cfg: TrialConfig) -> str:
    return "best" if METHODS[cfg.method].adversarial else "last"


def _load(trial: TrialDir, cfg: TrialConfig, splits, dev):
    which = _checkpoint(cfg)
    return load_weights(make_student(cfg, splits), trial.weights(which), f"{which} checkpoint").to(dev)


def _pgd_on_aa_images(model, cfg: TrialConfig, splits, n_aa: int) -> float:
    x, y = splits.test_x[:n_aa], splits.test_y[:n_aa]
    return evaluate_suite(model, x, y, cfg.eval_epsilon, attacks=["PGD_SAT"], progress=None)["PGD_SAT"]


def aggregate(rows: list[dict]) -> list[dict]:
    """One line per (method, student): mean and sample std over seeds; AA from the rows that have it."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["arch"], r.get("width")), []).append(r)
    out = []
    for (method, arch, width), rs in groups.items():
        line = {"method": method, "student": arch + (f"-w{width}" if width else ""), "seeds": sorted(r["seed"] for r in rs)}
        for c in COLUMNS[:-1]:
            vals = [100 * r[c] for r in rs if c in r]
            line[c] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None
        aa = [r for r in rs if "AA" in r]
        line["AA"] = (100 * aa[0]["AA"], aa[0]["n_aa"], aa[0]["seed"], 100 * aa[0]["PGD_SAT_aa"]
                      if "PGD_SAT_aa" in aa[0] else None) if aa else None
        out.append(line)
    return out


def format_markdown(lines: list[dict], rows: list[dict]) -> str:
    n = rows[0]["n"] if rows else 0
    aa_n = next((r["n_aa"] for r in rows if r.get("n_aa")), 0)
    head = ["method", "student", "seeds"] + list(COLUMNS[:-1]) + [f"AA ({aa_n} images, one seed)" if aa_n else "AA (not run)"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ln in lines:
        cells = [ln["method"], ln["student"], str(len(ln["seeds"]))]
        for c in COLUMNS[:-1]:
            cells.append(f"{ln[c][0]:.2f} ± {ln[c][1]:.2f}" if ln[c] else "–")
        aa = ln["AA"]
        cells.append(f"{aa[0]:.2f} (seed {aa[2]}; PGD-20 there {aa[3]:.2f})" if aa and aa[3] is not None
                     else f"{aa[0]:.2f} (seed {aa[2]})" if aa else "–")
        md.append("| " + " | ".join(cells) + " |")
    md.append(f"\nAccuracy (%) on {n} test images, mean ± std over seeds; best checkpoint by validation PGD-20 "
              "(natural: last checkpoint).")
    return "\n".join(md)


def compare_experiment(exp_dir: str | Path, **kw) -> tuple[str, Path]:
    exp = Path(exp_dir)
    rows = evaluate_trials(exp, **kw)
    lines = aggregate(rows)
    md = format_markdown(lines, rows)
    write_json({"rows": rows, "table": lines}, exp / "comparison.json")
    (exp / "comparison.md").write_text(md + "\n")
    return md, exp / "comparison.md"
