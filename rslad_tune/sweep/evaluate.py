"""`rslad-tune evaluate PATH`: the paper's suite (robustness.evaluate_suite) on the test split, for the best
and the last checkpoint of an exported student or of a trial checkpoint folder. Writes eval.json and logs
`eval_*` metrics to the folder's MLflow run when it has one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..trial.config import TrialConfig
from ..trial.data import load_data, resolve_device
from ..trial.errors import SpecError
from ..trial.files import file_digest, load_weights, read_json
from ..trial import saved as saved_json
from ..trial.models import build_from_config
from ..trial.robustness import ATTACK_NAMES, COLUMNS, resolve_columns, suite_protocol
from ..trial.scoring import score
from ..trial.trainer import make_student
from .export import load_student
from .layout import ExperimentDir, find_experiment
from .relocation import read_back
from .tracking import log_to_run

if TYPE_CHECKING:
    import torch


def _folder_error(path, why: str) -> SpecError:
    return SpecError("path", str(path), f"{why}; expected an exported student (runs/<experiment>/best: config.json + "
                                        "model.safetensors) or a trial checkpoint folder (trial.json + model.safetensors "
                                        "+ best.safetensors)")


def _trial_config(trial, where: Path) -> TrialConfig:
    return saved_json.trial_config(trial, where)  # the YAML's rules: bounds checked before anything is built


def read_model_folder(path: str | Path) -> tuple[Path, str, TrialConfig, list[dict]]:
    """Resolve PATH -> (folder, kind, TrialConfig, [{"row", "epoch", "weights", "model": None}]): its JSON files
    checked by the YAML's rules, no model built, torch not imported (load_models builds them).

    An exported student (config.json) gives its weights as "best", plus "last" when the trial
    checkpoint it came from (config.json "source") still holds model.safetensors. A trial
    checkpoint folder gives best.safetensors as "best" and model.safetensors as "last" (built when scored).
    """
    p = Path(path)
    if not p.is_dir():
        raise _folder_error(path, "does not exist" if not p.exists() else "is not a folder")
    p = saved_json.export_folder(p)
    if (p / "config.json").is_file():
        saved = read_json(p / "config.json", "config.json")
        if not isinstance(saved, dict) or "trial" not in saved or not (p / "model.safetensors").is_file():
            raise _folder_error(path, "has a config.json but is not an exported student (no trial section or no model.safetensors)")
        saved_json.model_config(saved, p / "config.json")  # before anything is built from it
        cfg = _trial_config(saved["trial"], p / "config.json")
        metrics = saved_json.numbers(read_json(p / "metrics.json", "metrics.json"), p / "metrics.json",
                                     "the export's numbers") if (p / "metrics.json").is_file() else {}
        rows = [{"row": "best", "epoch": metrics.get("epoch"), "weights": str(p / "model.safetensors"), "model": None}]
        src = _source(p, saved.get("source"))
        if src is not None and (src / "model.safetensors").is_file():
            hist = saved_json.history(saved_json.mapping(read_json(src / "trial.json", "trial.json"), src / "trial.json",
                                      "the trial").get("history"), src / "trial.json") if (src / "trial.json").is_file() else []
            rows.append({"row": "last", "epoch": hist[-1]["epoch"] if hist else None,
                         "weights": str(src / "model.safetensors"), "model": None, "config": saved})
        return p, "export", cfg, rows
    if (p / "trial.json").is_file():
        trial = saved_json.mapping(read_json(p / "trial.json", "trial.json"), p / "trial.json", "the trial and its history")
        trial["history"] = saved_json.history(trial.get("history"), p / "trial.json")
        if "trial" not in trial:
            raise _folder_error(path, "has a trial.json without a trial section")
        cfg = _trial_config(trial["trial"], p / "trial.json")
        hist = trial.get("history") or []
        epochs = {"best": hist[-1].get("best_epoch") if hist else None, "last": hist[-1].get("epoch") if hist else None}
        files = {"best": p / "best.safetensors", "last": p / "model.safetensors"}
        if not any(f.is_file() for f in files.values()):
            raise _folder_error(path, "has a trial.json but no best.safetensors or model.safetensors")
        return p, "checkpoint", cfg, [{"row": r, "epoch": epochs[r], "weights": str(f), "model": None}
                                      for r, f in files.items() if f.is_file()]
    raise _folder_error(path, "is not a model folder (no config.json or trial.json)")


def _source(best: Path, value) -> Path | None:
    """The trial checkpoint an export came from: stored relative to its sweep folder (best/..), or, by an earlier
    version, absolute: re-rooted into this sweep when it holds it, else read where it is (evaluate_folder writes no
    score cache outside the folders it was given)."""
    here = read_back(value, best.parent, "trial_*")
    return here if here is not None or not isinstance(value, str) or not Path(value).is_absolute() else Path(value)


def _cache(weights: Path, folder: Path) -> Path | None:
    """The score cache beside `weights` when they are inside the folder evaluated (or its sweep); elsewhere (the
    original sweep of a copied export) nothing is written."""
    exp = find_experiment(folder)
    root = (exp.path if exp is not None else folder).resolve()
    return weights.with_suffix(".scores.json") if weights.resolve().is_relative_to(root) else None


def load_models(p: Path, kind: str, cfg: TrialConfig, rows: list[dict],
                device: torch.device) -> tuple[Path, str, TrialConfig, list[dict]]:
    """read_model_folder's result with an exported student's models built from its checked config.json."""
    if kind == "export":
        for r in rows:
            r["model"] = load_student(p, device) if r["row"] == "best" else load_weights(
                build_from_config(r.pop("config")), Path(r["weights"]), "last checkpoint").to(device).eval()
    return p, kind, cfg, rows


def evaluate_folder(path: str | Path, *, n_examples: int | None = None, n_aa: int | None = None,
                    attacks: Sequence[str] = COLUMNS, device: str = "auto", seed: int = 0, batch_size: int = 500,
                    log: Callable[[str], None] | None = print) -> dict:
    """The suite on the test split of the model's dataset, for the best and the last checkpoint of a folder.

    Returns the report written to eval.json: settings, protocol and {"rows": {"best": {...}, "last": {...}}}.
    """
    try:
        wanted = resolve_columns(attacks)
    except ValueError:
        raise SpecError("--attacks", ",".join(map(str, attacks)), f"must be a comma-separated subset of {','.join(ATTACK_NAMES)}") from None
    read = read_model_folder(path)  # the folder's JSON files, checked before torch is imported
    try:
        dev = resolve_device(device)
    except (ValueError, RuntimeError) as e:
        raise SpecError("--device", device, str(e).split("; ", 1)[-1]) from None
    folder, kind, cfg, rows = load_models(*read, dev)
    splits = load_data(cfg, dev)
    x, y = splits.test_x, splits.test_y
    if n_examples is not None:
        x, y = x[:n_examples], y[:n_examples]
    eps = cfg.eval_epsilon
    n_aa_eff = (len(x) if n_aa is None else min(n_aa, len(x))) if "AA" in wanted else 0
    proto = suite_protocol(eps)
    report = {"path": str(folder.resolve()), "kind": kind, "dataset": cfg.dataset, "split": "test", "n": len(x),
              "n_aa": n_aa_eff, "eps": eps, "seed": seed, "device": str(dev),
              "protocol": {c: proto[c] for c in COLUMNS if c in wanted}, "rows": {}}
    t0 = time.perf_counter()
    for r in rows:
        weights = Path(r["weights"])

        def load(r=r, weights=weights):
            return r["model"] if r["model"] is not None else load_weights(make_student(cfg, splits), weights,
                                                                          f"{r['row']} checkpoint").to(dev)
        if log:
            log(f"{r['row']} checkpoint (epoch {r['epoch']}): {r['weights']}")
        res = score(load, x, y, eps, wanted, seed=seed, n_aa=n_aa_eff, cache=_cache(weights, folder),
                    digest=file_digest(weights), batch_size=batch_size, log=log)
        report["rows"][r["row"]] = {"epoch": r["epoch"], "weights": r["weights"], **res}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def format_table(report: dict) -> str:
    """The paper's Table 2 layout: one row per checkpoint (best, last), accuracies in percent."""
    cols = [c for c in COLUMNS if any(c in row for row in report["rows"].values())]
    aa = f"; AA on the first {report['n_aa']}" if "AA" in cols and report["n_aa"] < report["n"] else ""
    lines = [f"test split of {report['dataset']}, {report['n']} images{aa}, L-inf eps = {report['eps']:.5g}",
             f"{'checkpoint':<11} {'epoch':>5} " + " ".join(f"{c:>10}" for c in cols)]
    for name, row in report["rows"].items():
        ep = "-" if row.get("epoch") is None else str(row["epoch"])
        lines.append(f"{name:<11} {ep:>5} " + " ".join(f"{100 * row[c]:>10.2f}" for c in cols))
    return "\n".join(lines)


def log_eval_to_mlflow(report: dict, json_path: str | Path | None = None, log: Callable[[str], None] | None = print,
                       tracking_uri: str | None = None) -> str | None:
    """Log `eval_<column>` (best) and `eval_last_<column>` (last) to the folder's MLflow run, when it has one.

    The run id comes from the folder's metrics.json ("mlflow_run_id"), the store from the sweep folder one level up
    (runs/<experiment>/best -> runs/<experiment>/sweep.json) when it is this command's (`tracking_uri`: --tracking-uri).
    Returns the run id logged to, or None.
    """
    folder = Path(report["path"])
    try:
        run_id = saved_json.mapping(read_json(folder / "metrics.json"), folder / "metrics.json", "").get("mlflow_run_id")
        uri = ExperimentDir.open(folder.parent, tracking_flag=tracking_uri).tracking_uri
    except SpecError:
        return None
    metrics = {f"eval_{'' if name == 'best' else name + '_'}{c}": row[c]
               for name, row in report["rows"].items() for c in COLUMNS if c in row}
    if not log_to_run(uri, run_id, metrics=metrics, tags={"eval_json": str(json_path or folder / "eval.json")}, log=log):
        return None
    if log:
        log(f"logged {len(metrics)} eval metrics to MLflow run {run_id} ({uri})")
    return run_id
