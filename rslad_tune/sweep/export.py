"""The best trial of a sweep -> runs/<experiment>/best/{model.safetensors, config.json, metrics.json,
model.pt, model.onnx}, and a new version of its MLflow registered model (alias `champion`).

The best trial is the one with the highest validation PGD accuracy at its best epoch (the
weights exported are that epoch's). Test-split numbers are computed here, on the exported
weights, and only reported. model.pt (TorchScript) and model.onnx are formats.py's; the MLflow
model is logged to the trial's run and registered by mlflow_models.register_student, after best/ is in
place: a tracking store that fails then costs one line, and the files stay.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..trial import saved
from ..trial.data import load_data, resolve_device
from ..trial.errors import SpecError
from ..trial.files import load_weights, read_json, write_json
from ..trial.metrics import PGD, accuracy_line, as_metrics, metric_key
from ..trial.models import build_from_config
from ..trial.scoring import pgd_column
from ..trial.trainer import student_config
from .formats import write_formats
from .layout import ExperimentDir
from .mlflow_models import CHAMPION, register_student
from .mlflow_notes import describe_sweep, student_line
from .relocation import stored
from .tracking import find_trial_run, log_to_run

if TYPE_CHECKING:
    import torch
    from torch import nn


def load_student(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported student from its folder (config.json + model.safetensors), in eval mode.

    >>> model = rslad_tune.load_student("runs/quickstart/best")
    >>> logits = model(images)  # images: float tensor in [0, 1], N x C x H x W
    """
    folder = saved.export_folder(path)
    if not (folder / "config.json").is_file():
        raise SpecError("path", str(path), "is not an exported student (no config.json; expected runs/<experiment>/best)")
    cfg = saved.model_config(read_json(folder / "config.json"), folder / "config.json")  # before any allocation
    model = load_weights(build_from_config(cfg), folder / "model.safetensors", "model.safetensors")
    return model.to(device).eval()


def export_best(experiment_dir: str | Path, log: Callable[[str], None] = print, force: bool = False,
                tracking_uri: str | None = None) -> Path:
    exp = ExperimentDir.open(experiment_dir, tracking_flag=tracking_uri)  # the command's --tracking-uri, if given
    exp.check_free(exp.best_dir, force)  # an existing export is replaced only when asked, before any work
    best = exp.best_trial()
    cfg = best.trial_config
    best_epoch = best.result.get("best_epoch")
    val = best.best_entry()
    device = resolve_device(cfg.device)
    splits = load_data(cfg, device)
    mcfg = student_config(cfg, splits)
    weights = best.weights("best")
    model = load_weights(build_from_config(mcfg), weights, "checkpoint").to(device)
    t0 = time.perf_counter()
    col = pgd_column(cfg.eval_epsilon, cfg.eval_steps, cfg.resolved_eval_step_size)  # the trial's own validation PGD
    log(f"best trial {best.trial_id}: scoring its best epoch on the {len(splits.test_x)} test images (clean, "
        f"PGD-{cfg.eval_steps}; a progress bar while it runs, nothing to do if it was scored before)")
    m = best.score("best", splits, ["Clean", col], seed=cfg.seed, device=device, log=log)
    scores = as_metrics(m, col, prefix="test_")  # test_clean_acc, test_pgd_acc
    test = as_metrics(m, col, prefix="test_", n=len(splits.test_x))  # and test_n
    log(f"best trial {best.trial_id}: {accuracy_line(test, 'test_', f'PGD-{cfg.eval_steps}', 'on {n} test images')} "
        f"({time.perf_counter() - t0:.0f}s)")
    experiment = exp.sweep.get("experiment", exp.name)
    run_id = find_trial_run(exp.tracking_uri, experiment, exp.parent_run_id, best.trial_id)
    metrics = {"trial_id": best.trial_id, "epoch": best_epoch, "epochs_run": best.result["epoch"],
               **{f"val_{k}": val[k] for k in (metric_key("Clean"), metric_key(PGD))}, **test,
               "eval_epsilon": cfg.eval_epsilon, "eval_steps": cfg.eval_steps, "eval_step_size": cfg.resolved_eval_step_size,
               "mlflow_run_id": run_id, "teacher": cfg.teacher}
    tmp = exp.scratch("best")
    shutil.copyfile(weights, tmp / "model.safetensors")
    shutil.copyfile(weights.with_suffix(".scores.json"), tmp / "model.scores.json")  # the same weights' numbers
    # the trial checkpoint it came from, relative to the sweep folder: a copy of the folder reads its own (relocation.py)
    write_json({**mcfg, "trial": cfg.to_dict(), "source": stored(best.checkpoint, exp.path)}, tmp / "config.json")
    write_json(metrics, tmp / "metrics.json")
    # two images (repeated if the test split has one): torch.export keeps the batch axis dynamic only for a batch > 1
    student, example = model.cpu().eval(), splits.test_x[:2].detach().cpu().float().repeat(2, 1, 1, 1)[:2]
    t0 = time.perf_counter()
    formats = write_formats(student, example, tmp, log)
    out = exp.publish_best(tmp)
    log_to_run(exp.tracking_uri, run_id, metrics=scores, tags={"exported": str(out)}, log=log)
    log_to_run(exp.tracking_uri, exp.parent_run_id, metrics=scores, log=log)
    log(f"exported the best student to {out}: model.safetensors, {', '.join(formats)} ({time.perf_counter() - t0:.0f}s)")
    name = exp.sweep.get("registered_model") or f"{experiment}-student"
    tags = {k: metrics[k] for k in (*test, "eval_epsilon", "eval_steps", "teacher", "trial_id") if metrics.get(k) is not None}
    if run_id is None:  # said with where it looked: the store this command used, or why it used none
        log(f"the student was not registered in MLflow: no run of trial {best.trial_id} was found "
            + (f"in {exp.tracking_uri} (parent run {exp.parent_run_id})" if exp.tracking_uri
               else f"({exp.store_note or 'the sweep names no MLflow store'})"))
    about = f"The best student of the sweep `{experiment}`: {student_line(metrics, cfg, exp.teacher_dirs)}"
    version = register_student(exp.tracking_uri, run_id, student, example, name, {**tags, "experiment": experiment},
                               log, description=about) if run_id else None
    if version:
        log(f"registered MLflow model {name} version {version} (alias {CHAMPION}): models:/{name}@{CHAMPION}")
    # the sweep's run holds the answer: which trial was exported, its test numbers (above) and its model version
    log_to_run(exp.tracking_uri, exp.parent_run_id, tags={"exported_trial_id": best.trial_id, "registered_model": name,
                                                          **({"registered_model_version": version} if version else {})}, log=log)
    describe_sweep(exp.tracking_uri, exp, log)  # the parent run's description, now with the exported student
    return out
