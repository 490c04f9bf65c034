"""The best trial of a sweep -> runs/<experiment>/best/{model.safetensors, config.json, metrics.json}.

The best trial is the one with the highest validation PGD accuracy at its best epoch (the
weights exported are that epoch's). Test-split numbers are computed here, on the exported
weights, and only reported.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .spec import SpecError, TrialConfig
from .teachers import build_from_config, load_weights, model_config
from .trainer import load_data, resolve_device, test_metrics, write_json


def load_student(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported student from its folder (config.json + model.safetensors), in eval mode.

    >>> model = rslad_tune.load_student("runs/quickstart/best")
    >>> logits = model(images)  # images: float tensor in [0, 1], N x C x H x W
    """
    folder = Path(path)
    if not (folder / "config.json").is_file() and (folder / "best" / "config.json").is_file():
        folder = folder / "best"
    if not (folder / "config.json").is_file():
        raise SpecError("path", str(path), "is not an exported student (no config.json; expected runs/<experiment>/best)")
    cfg = json.loads((folder / "config.json").read_text())
    model = load_weights(build_from_config(cfg), folder / "model.safetensors", "model.safetensors")
    return model.to(device).eval()


def finished_trials(experiment_dir: Path) -> list[dict]:
    """Every trial of a Tune experiment folder with a checkpoint: config, last result, checkpoint path."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(experiment_dir.resolve()))
    except Exception as e:  # not a Tune experiment folder
        raise SpecError("experiment", str(experiment_dir), f"is not a finished sweep folder ({type(e).__name__})") from None
    out = []
    for trial in analysis.trials:
        ckpt = trial.checkpoint
        result = trial.last_result or {}
        if ckpt is None or "best_pgd_acc" not in result or trial.status == "ERROR":
            continue
        out.append({"trial_id": trial.trial_id, "config": trial.config, "result": result, "checkpoint": ckpt.path})
    return out


def export_best(experiment_dir: str | Path, log: Callable[[str], None] = print) -> Path:
    exp = Path(experiment_dir)
    if not (exp / "sweep.json").is_file():
        raise SpecError("experiment", str(experiment_dir), "is not a sweep folder of rslad-tune (no sweep.json); expected runs/<experiment>")
    sweep = json.loads((exp / "sweep.json").read_text())
    trials = finished_trials(exp)
    if not trials:
        raise SpecError("experiment", str(experiment_dir), "has no finished trial with a checkpoint to export")
    best = max(trials, key=lambda t: (t["result"]["best_pgd_acc"], t["result"].get("clean_acc", 0)))
    cfg = TrialConfig(**best["config"])
    ckpt = Path(best["checkpoint"])
    device = resolve_device(cfg.device)
    splits = load_data(cfg, device)
    mcfg = model_config(cfg.arch, cfg.width, splits.in_channels, splits.num_classes, splits.image_size)
    weights = ckpt / "best.safetensors"
    model = load_weights(build_from_config(mcfg), weights, "checkpoint").to(device)
    t0 = time.perf_counter()
    test = test_metrics(model, cfg, splits)
    log(f"best trial {best['trial_id']}: test clean {test['test_clean_acc']:.4f}, PGD-{cfg.eval_steps} "
        f"{test['test_pgd_acc']:.4f} on {test['test_n']} test images ({time.perf_counter() - t0:.0f}s)")
    hist = json.loads((ckpt / "trial.json").read_text())["history"]
    best_epoch = best["result"]["best_epoch"]
    val = next(h for h in hist if h["epoch"] == best_epoch)
    run_id = _trial_run(sweep, best["trial_id"])
    metrics = {"trial_id": best["trial_id"], "epoch": best_epoch, "epochs_run": best["result"]["epoch"],
               "val_clean_acc": val["clean_acc"], "val_pgd_acc": val["pgd_acc"], **test,
               "eval_epsilon": cfg.eval_epsilon, "eval_steps": cfg.eval_steps, "eval_step_size": cfg.resolved_eval_step_size,
               "mlflow_run_id": run_id, "teacher": cfg.teacher}
    out, tmp = exp / "best", exp / f".best.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copyfile(weights, tmp / "model.safetensors")
    write_json({**mcfg, "trial": cfg.to_dict(), "source": str(ckpt)}, tmp / "config.json")
    write_json(metrics, tmp / "metrics.json")
    if out.exists():  # replace the previous export only once the new one is complete
        old = exp / f".best.old.{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    _log_to_mlflow(sweep, run_id, test, out)
    log(f"exported the best student to {out}")
    return out


def _trial_run(sweep: dict, trial_id: str) -> str | None:
    """The trial's MLflow run id: a lookup only (nothing is created in the tracking store)."""
    from mlflow.tracking import MlflowClient

    from .tracking import find_child_run

    try:
        client = MlflowClient(sweep["tracking_uri"])
        exp = client.get_experiment_by_name(sweep["experiment"])
        return find_child_run(client, exp.experiment_id, sweep["parent_run_id"], trial_id) if exp else None
    except Exception:  # tracking store gone or unreachable: the export itself still stands
        return None


def _log_to_mlflow(sweep: dict, run_id: str | None, test: dict, out: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sweep["tracking_uri"])
    for rid in filter(None, [run_id, sweep.get("parent_run_id")]):
        for k in ("test_clean_acc", "test_pgd_acc"):
            client.log_metric(rid, k, test[k])
    if run_id:
        client.set_tag(run_id, "exported", str(out))
