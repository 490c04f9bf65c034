"""One trial: epochs of a method on a student, validation each epoch, checkpoints. Plain PyTorch.

    result = train_model(cfg, teacher=teacher_model)

knows nothing of Ray or MLflow: a caller passes `report(metrics, checkpoint_dir)` to see each
epoch (the Ray adapter forwards it to `tune.report`).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .attacks import pgd
from .config import TrialConfig
from .data import Splits, apply_views, load_data, resolve_device, sample_views, view_ids
from .errors import SpecError, TrialDiverged
from .files import file_digest, load_torch_weights, load_weights, read_state_dict, save_atomic, save_weights, write_json
from .folding import attack_model
from .lazy import LazyModule
from .methods import METHODS, Batch, Method
from .metrics import as_metrics
from .precision import autocast, fp32_grouped_convs
from .models import build_from_config, model_config
from .robustness import clean_and_pgd
from .schedules import lr_factor
from .scoring import pgd_column, score

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")


Report = Callable[[dict, Path | None], None]


def student_config(cfg: TrialConfig, splits: Splits) -> dict:
    """The config.json of the model a trial trains (models.build_from_config rebuilds it)."""
    return model_config(cfg.arch, cfg.width, splits.in_channels, splits.num_classes, splits.image_size)


def make_student(cfg: TrialConfig, splits: Splits) -> nn.Module:
    return build_from_config(student_config(cfg, splits))


def make_method(cfg: TrialConfig) -> Method:
    cls = METHODS[cfg.method]
    return cls(**{k: getattr(cfg, k) for k in cls.knobs})  # only the knobs it declares


def train_step(model: nn.Module, method: Method, cfg: TrialConfig, x: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, teacher: nn.Module | None = None,
               teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step of `method` on the batch (x, y); returns the loss (a device tensor, no host sync).

    `teacher_logits`: the teacher on x, from the soft-label cache; otherwise the live teacher is run.
    Computes exactly what the method declares it needs (see methods.py)."""
    batch = Batch(x, y, teacher_logits=teacher_logits)
    phase = torch.profiler.record_function  # named ranges for torch.profiler (bench.profile_step); ~1 us each
    with autocast(cfg, x.device) as bf16:
        if method.needs_teacher and batch.teacher_logits is None:
            with phase("teacher"), torch.no_grad(), fp32_grouped_convs(teacher, x.device, bf16):
                batch.teacher_logits = teacher(x).float()
        x_adv = None
        if method.adversarial:
            model.eval()  # the paper attacks the student in eval mode
            attacked = attack_model(model)  # batch-norm folded into the convolutions (eval mode, weights frozen)
            # the attack needs input gradients only: without weight gradients autograd records and runs less
            model.requires_grad_(False)
            try:
                with phase("attack"), fp32_grouped_convs(attacked, x.device, bf16):
                    if method.attack_needs_clean:  # TRADES: the attack's target is the student's own clean prediction
                        with torch.no_grad():
                            batch.student_clean_logits = attacked(x).float()
                    x_adv = pgd(attacked, x, method.inner_loss(batch), cfg.epsilon, cfg.resolved_step_size,
                                cfg.attack_steps, cfg.attack_start)
            finally:
                model.requires_grad_(True)
            if method.needs_teacher_on_adv:  # IAD: how far to trust the teacher on x'
                with phase("teacher"), torch.no_grad(), fp32_grouped_convs(teacher, x.device, bf16):
                    batch.teacher_adv_logits = teacher(x_adv).float()
        model.train()
        with phase("forward"), fp32_grouped_convs(model, x.device, bf16):
            # separate forwards of the two views, as in the RSLAD code (batch-norm statistics per view)
            adv_logits = model(x_adv) if x_adv is not None else None
            clean_logits = model(x) if method.uses_clean else None
            loss = method.outer_loss(clean_logits, adv_logits, batch)
    with phase("backward"):
        opt.zero_grad(set_to_none=True)
        loss.backward()
    with phase("optimizer"):
        opt.step()
    return loss.detach()


def train_epoch(model: nn.Module, method: Method, cfg: TrialConfig, splits: Splits, opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler, teacher: nn.Module | None,
                soft_labels: torch.Tensor | None = None, max_batches: int | None = None,
                on_batch: Callable[[int], object] | None = None) -> tuple[float, int]:
    """One pass over the training split; returns (mean loss, images seen). One host sync, at the end.

    Data and augmentation stay on the device. `soft_labels` (num_train x num_views x classes): the
    teacher's cached logits on clean views (soft_labels.py). `max_batches`: stop early (benchmarks)."""
    n, bs = len(splits.train_x), cfg.batch_size
    n_batches = max(splits.images_per_epoch // bs, 1)  # drop the last partial batch (batch-norm on a handful of images is noise)
    # an epoch longer than the images (few labels: Splits.only_labelled) takes as many shuffled passes as it needs
    passes = 1 if splits.epoch_images is None else -(-n_batches * bs // n)
    perm = torch.cat([torch.randperm(n, device=splits.train_x.device) for _ in range(passes)])
    n_batches = min(n_batches, max_batches or n_batches)
    loss_sum = torch.zeros((), device=splits.train_x.device)
    for b in range(n_batches):
        with torch.profiler.record_function("data"):
            idx = perm[b * bs:(b + 1) * bs]
            x, y = splits.train_x[idx], splits.train_y[idx]
            view = 0  # the only view without augmentation
            if splits.augment != "none":
                views = sample_views(len(x), splits.augment, splits.pad, x.device)
                x = apply_views(x, *views, splits.pad)
                view = view_ids(*views, splits.augment, splits.pad)
            cached = soft_labels[idx, view].float() if method.needs_teacher and soft_labels is not None else None
        loss_sum += train_step(model, method, cfg, x, y, opt, teacher, cached)
        sched.step()
        if on_batch:
            on_batch(1)
    return (loss_sum / n_batches).item(), n_batches * bs


def train_model(cfg: TrialConfig, teacher: nn.Module | None = None, *, splits: Splits | None = None,
                  report: Report | None = None, checkpoint_dir: str | Path | None = None,
                  resume_dir: str | Path | None = None, log: Callable[[str], None] | None = None,
                  soft_labels: torch.Tensor | None = None, on_batch: Callable[[int], object] | None = None,
                  fallbacks: list[Path] = ()) -> dict:
    """Train one model (a trial's student, or a teacher from its recipe). Each epoch: train, validate (clean + PGD), checkpoint, report.

    Returns {"history": [per-epoch metrics], "best_epoch", "best_pgd_acc", "model": the last student,
    "best_state": the best state dict (by validation PGD accuracy; the last epoch for a method without attacks)}.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    splits = splits or load_data(cfg, device)
    method = make_method(cfg)
    if method.needs_labels:  # few labels: a method that reads labels never sees the unlabelled images
        splits = splits.only_labelled()
    if method.needs_teacher and teacher is None and (soft_labels is None or method.needs_teacher_on_adv):
        raise SpecError("teacher", None, f"method {cfg.method!r} needs a teacher model (or its soft labels, for a method that "
                        "does not run the teacher on attacked images)")
    if teacher is not None:
        teacher = teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    # channels_last: 1.5-1.7x faster convolutions on CPU (oneDNN) and the layout tensor cores want on GPU
    model = make_student(cfg, splits).to(device, memory_format=torch.channels_last)
    # the compiled module shares the student's parameters; checkpoints and validation use the plain one
    trained = torch.compile(model) if cfg.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(splits.images_per_epoch // cfg.batch_size, 1)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, total))
    history: list[dict] = []
    start_epoch, best_pgd, best_epoch, best_state = 0, -1.0, 0, None
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt:
        ckpt.mkdir(parents=True, exist_ok=True)

    if resume_dir and (Path(resume_dir) / "state.pt").is_file():
        rd, state, best_state = verified_resume([Path(resume_dir), *map(Path, fallbacks)], model, device, log)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, best_pgd, best_epoch = state["epoch"], state["best_pgd_acc"], state["best_epoch"]
        history = json.loads(state["history"])
        if best_state is not None and ckpt and ckpt.resolve() != rd.resolve():  # the new folder carries the best on
            shutil.copyfile(rd / "best.safetensors", ckpt / "best.safetensors")
        if log:
            log(f"resumed from {rd} at epoch {start_epoch}")

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss, seen = train_epoch(trained, method, cfg, splits, opt, sched, teacher, soft_labels, on_batch=on_batch)
        train_time = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise TrialDiverged(f"training loss became {train_loss} in epoch {epoch} (lr={cfg.lr})")
        val = clean_and_pgd(model, splits.val_x, splits.val_y, cfg.eval_epsilon, cfg.resolved_eval_step_size,
                            cfg.eval_steps, seed=cfg.seed)
        # a model trained without attacks is kept at its last epoch: its PGD accuracy only falls as it
        # learns, so "best by validation PGD" would pick an under-trained early epoch
        if val["pgd_acc"] > best_pgd or not method.adversarial:
            best_pgd, best_epoch = val["pgd_acc"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        metrics = {"epoch": epoch, "train_loss": train_loss, **val, "lr": opt.param_groups[0]["lr"],
                   "epoch_time_s": time.perf_counter() - t0, "train_images_per_s": seen / train_time,
                   "best_pgd_acc": best_pgd, "best_epoch": best_epoch}
        history.append(metrics)
        if ckpt:
            save_weights(model, ckpt / "model.safetensors")
            if best_epoch == epoch:
                save_weights(model, ckpt / "best.safetensors")
            write_json({"trial": cfg.to_dict(), "history": history}, ckpt / "trial.json")
            # written last: its presence marks a complete checkpoint
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                     "epoch": epoch, "best_pgd_acc": best_pgd, "best_epoch": best_epoch, "history": json.dumps(history)}
            save_atomic(lambda p: torch.save(state, p), ckpt / "state.pt")
        if log:
            log(f"epoch {epoch}/{cfg.epochs} loss {train_loss:.4f} val clean {val['clean_acc']:.4f} "
                f"pgd {val['pgd_acc']:.4f} ({metrics['epoch_time_s']:.1f}s)")
        if report:
            report(metrics, ckpt)
    return {"history": history, "best_epoch": best_epoch, "best_pgd_acc": best_pgd, "model": model,
            "best_state": best_state, "splits": splits}


def verified_resume(folders: list[Path], model: nn.Module, device, log=None) -> tuple[Path, dict, dict | None]:
    """Load the first checkpoint folder of `folders` whose files all verify (weights: digest, shapes, finite;
    state.pt: plain tensors only) into `model`; returns (folder, its state.pt, its best weights or None). A damaged
    one is passed over in one line naming it (resume falls back to the previous good one); none good: the
    first's SpecError, one line naming its damaged file."""
    first = None
    for rd in folders:
        if not (rd / "state.pt").is_file():
            continue
        try:
            state = load_torch_weights(rd / "state.pt", "checkpoint")
            load_weights(model, rd / "model.safetensors", "checkpoint", finite=True)
            best = (read_state_dict(rd / "best.safetensors", "checkpoint", str(device), finite=True)
                    if (rd / "best.safetensors").is_file() else None)
            shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            if best is not None and {k: tuple(v.shape) for k, v in best.items()} != shapes:
                raise SpecError("checkpoint", str(rd / "best.safetensors"), "does not match the architecture of model.safetensors")
        except SpecError as e:
            first = first or e
            if log:
                log(f"warning: {e}; trying the previous checkpoint")
            continue
        if first is not None and log:
            log(f"resuming from the previous good checkpoint {rd} (the latest one is damaged: {first.value})")
        return rd, state, best
    raise first or SpecError("checkpoint", str(folders[0]), "holds no state.pt to resume from")


def score_test_split(model: nn.Module, cfg: TrialConfig, splits: Splits, n: int | None = None,
                     prefix: str = "test_", weights: Path | None = None) -> dict[str, float]:
    """Numbers on the first `n` test images (None: all), reported, never used to choose anything: clean and the
    trial's own PGD through scoring.score, as export scores them. `weights`: the file that holds the model's weights
    (its numbers are then cached beside it, as for a sweep's checkpoint). Call it after training: it reseeds the RNG
    inside a fork, but a finished model's numbers have no business in its training."""
    x, y = splits.test_x[:n], splits.test_y[:n]
    col = pgd_column(cfg.eval_epsilon, cfg.eval_steps, cfg.resolved_eval_step_size)
    cached = {} if weights is None else {"cache": Path(weights).with_suffix(".scores.json"), "digest": file_digest(weights)}
    m = score(model, x, y, cfg.eval_epsilon, ["Clean", col], seed=cfg.seed, **cached)
    return as_metrics(m, col, prefix=prefix, n=len(x))
