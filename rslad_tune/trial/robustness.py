"""Robust accuracy of a model on a split: the metrics the trainer reports every epoch and the paper's suite.

`clean_and_pgd` is the per-epoch pair of every trial; `evaluate_suite` is the paper's full table
(Clean, FGSM, PGD-20 SAT, PGD-20 TRADES, CW-inf, AutoAttack from the official `pyautoattack`).
Counts are accumulated on the device; one host sync per call. Knows nothing above attacks and torch.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Sequence

from .attacks import ce_loss, cw_loss, fgsm, pgd
from .errors import SpecError
from .lazy import LazyModule
from .metrics import PGD, metric_key
from .progress import bar

if TYPE_CHECKING:
    from torch import Tensor, nn

torch = LazyModule("torch")


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    model.eval()
    return _count_correct(model, x, y, batch_size).item() / max(len(x), 1)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
                 start: str = "uniform", batch_size: int = 500, desc: str | None = None) -> float:
    """PGD-`steps` on the CE loss ("SAT" protocol: uniform start), model in eval mode. `desc`: a progress bar
    (images attacked, rate, ETA) under that name; none for the per-epoch validation of a trial."""
    model.eval()
    adv = lambda xb, yb: pgd(model, xb, ce_loss(yb), eps, step_size, steps, start)  # noqa: E731
    return _count_correct(model, x, y, batch_size, adv, desc).item() / max(len(x), 1)


def clean_and_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
                  seed: int = 0) -> dict[str, float]:
    """The pair every trial reports: clean accuracy and PGD accuracy, with a fixed attack seed."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return {metric_key("Clean"): accuracy(model, x, y), metric_key(PGD): pgd_accuracy(model, x, y, eps, step_size, steps)}


# --------------------------------------------------------------------------- the paper's evaluation suite

PAPER_EPS = 8 / 255
COLUMNS = ("Clean", "FGSM", "PGD_SAT", "PGD_TRADES", "CW_inf", "AA")
ATTACK_NAMES = {"clean": "Clean", "fgsm": "FGSM", "pgd_sat": "PGD_SAT", "pgd_trades": "PGD_TRADES",
                "cw_inf": "CW_inf", "aa": "AA"}  # CLI name -> column
AA_CHUNK = 100  # images per AutoAttack call: one progress line each (~4 min for a small CNN on 2 CPU cores)


def resolve_columns(attacks: Sequence[str]) -> list[str]:
    """Column names from column or CLI names (`pgd_sat` -> PGD_SAT); SpecError (a ValueError) for unknown ones."""
    wanted = [ATTACK_NAMES.get(str(a).lower(), a) for a in attacks]
    unknown = [a for a in wanted if a not in COLUMNS]
    if unknown or not wanted:
        raise SpecError("attacks", unknown, f"a non-empty list of {', '.join(ATTACK_NAMES)} (or their column names)")
    return wanted


def suite_protocol(eps: float) -> dict[str, dict]:
    """Attack settings of each column at `eps`. Step sizes are the paper's at 8/255, scaled by eps / (8/255)."""
    scale = eps / PAPER_EPS
    return {
        "Clean": {},
        "FGSM": {"loss": "ce", "steps": 1, "step_size": eps, "start": "none"},
        "PGD_SAT": {"loss": "ce", "steps": 20, "step_size": eps / 4, "start": "uniform"},
        "PGD_TRADES": {"loss": "ce", "steps": 20, "step_size": 0.003 * scale, "start": "uniform"},
        "CW_inf": {"loss": "cw", "steps": 30, "step_size": eps / 4, "start": "uniform"},
        "AA": {"version": "standard", "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "norm": "Linf"},
    }


def _count_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, adv=None, desc: str | None = None) -> Tensor:
    """Correct predictions on x (or on adv(xb, yb) per batch), as a device tensor: no host sync. `desc`: a progress
    bar under that name (an attack on the test split; a clean pass is too quick for one)."""
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    pbar = bar(len(x), desc, "img") if desc and adv is not None else None
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if adv is not None:
            xb = adv(xb, yb)
        with torch.no_grad():
            correct += (model(xb).argmax(1) == yb).sum()
        if pbar:
            pbar.update(len(xb))
    if pbar:
        pbar.close()
    return correct


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _AAProgress(logging.Handler):
    """Forwards pyautoattack's `auto-attack` log to `progress`: the robust accuracy after each attack of a
    chunk, and each distinct warning once (its checks repeat for every chunk)."""

    def __init__(self, progress: Callable[[str], None]):
        super().__init__(logging.DEBUG)
        self.progress, self.prefix, self.seen = progress, "", set()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            if msg not in self.seen:
                self.seen.add(msg)
                self.progress(f"AA warning: {msg}")
        elif msg.startswith("robust accuracy after"):
            self.progress(f"AA   {self.prefix}{msg}")


def autoattack_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, batch_size: int = 500, seed: int = 0,
                        chunk: int | None = None, progress: Callable[[str], None] | None = print) -> float:
    """AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; Croce & Hein 2020) from the `pyautoattack` package.

    pyautoattack has no verbose switch; it logs to the `auto-attack` logger at debug level. It is
    called on chunks of `chunk` images (default AA_CHUNK): after each chunk a line gives images
    done/total, rate, ETA and the running robust accuracy, and within a chunk its log gives the
    robust accuracy after each attack (warnings once each). progress=None: no lines, log untouched.
    """
    from pyautoattack import AutoAttack

    model.eval()
    chunk = chunk or AA_CHUNK
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", device=x.device, seed=seed)
    n = len(x)
    robust = torch.zeros((), dtype=torch.long, device=x.device)
    aa_logger = logging.getLogger("auto-attack")
    saved = aa_logger.level, aa_logger.propagate
    handler = _AAProgress(progress) if progress else None
    if handler:
        aa_logger.addHandler(handler)
        aa_logger.setLevel(logging.DEBUG)
        aa_logger.propagate = False
    t0 = time.perf_counter()
    pbar = bar(n, "AutoAttack", "img") if progress else None
    try:
        for i in range(0, n, chunk):
            xb, yb = x[i:i + chunk].float(), y[i:i + chunk]
            if handler:
                handler.prefix = f"images {i + 1}-{i + len(xb)}: "
            _, y_adv = adversary.run_standard_evaluation(xb, yb, batch_size=min(batch_size, len(xb)))
            robust += (y_adv == yb).sum()
            if pbar:
                pbar.update(len(xb))
                pbar.set_postfix(robust=f"{robust.item() / (i + len(xb)):.2%}")
            if progress:
                done, dt = i + len(xb), time.perf_counter() - t0
                rate = done / dt
                progress(f"AA {done}/{n} images, {rate:.2f} img/s ({dt / done:.2f} s/img), ETA {_fmt_time((n - done) / rate)}, "
                         f"robust accuracy so far {robust.item() / done:.2%}")
    finally:
        if pbar:
            pbar.close()
        if handler:
            aa_logger.removeHandler(handler)
            aa_logger.setLevel(saved[0])
            aa_logger.propagate = saved[1]
    return robust.item() / max(n, 1)


def evaluate_suite(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, n_aa: int | None = None,
                   attacks: Sequence[str] = COLUMNS, batch_size: int = 500, seed: int = 0,
                   progress: Callable[[str], None] | None = print) -> dict[str, float]:
    """The paper's robustness table (RSLAD, Zi et al. 2021, Table 2) for one model: accuracy per column, in [0, 1].

    Columns (L-inf, radius eps, model in eval mode):
      Clean       no attack
      FGSM        one step of eps from x along the sign of the CE gradient
      PGD_SAT     PGD-20 on CE, step eps/4, uniform start in the eps-ball
      PGD_TRADES  PGD-20 on CE, step 0.003 * eps/(8/255), uniform start in the eps-ball (TRADES' own evaluation,
                  pgd_attack_cifar10.py, and the RSLAD authors' attack_pgd)
      CW_inf      PGD-30 on the CW margin loss max_{k!=y} z_k - z_y, step eps/4, uniform start
      AA          AutoAttack standard (pyautoattack) on the first `n_aa` images (None: all; 0: skipped)

    Step sizes follow the paper at eps = 8/255 (2/255 for SAT and CW, 0.003 for TRADES) and scale
    with eps / (8/255) at other radii, so every attack reaches the same fraction of the ball.
    `attacks` lists the columns to run (column names or their lower-case CLI names). Each column
    reseeds the RNG with `seed`, so its number does not depend on which other columns ran.
    Counts stay on the device; one host sync per column (AutoAttack: one per chunk).
    """
    wanted = resolve_columns(attacks)
    proto = suite_protocol(eps)
    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)  # attacks need input gradients only (FAB would fill .grad otherwise)
    if x.dim() == 4:
        model.to(memory_format=torch.channels_last)  # 1.5-1.7x faster convolutions on CPU (bench/RESULTS.md)
    cuda = [x.device] if x.device.type == "cuda" else []
    out: dict[str, float] = {}
    try:
        for col in (c for c in COLUMNS if c in wanted):
            p = proto[col]
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                if col == "AA":
                    n = len(x) if n_aa is None else min(n_aa, len(x))
                    if n <= 0:
                        continue
                    if progress:
                        progress(f"AA: AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), eps={eps:.5f}, "
                                 f"{n} images in chunks of {AA_CHUNK}")
                    out[col] = autoattack_accuracy(model, x[:n], y[:n], eps, batch_size=batch_size, seed=seed,
                                                   progress=progress)
                else:
                    n = len(x)
                    if col == "Clean":
                        adv = None
                    elif col == "FGSM":
                        adv = lambda xb, yb: fgsm(model, xb, ce_loss(yb), eps)  # noqa: E731
                    else:
                        loss = cw_loss if p["loss"] == "cw" else ce_loss
                        adv = lambda xb, yb, p=p, loss=loss: pgd(model, xb, loss(yb), eps, p["step_size"],  # noqa: E731
                                                                 p["steps"], p["start"])
                    out[col] = _count_correct(model, x, y, batch_size, adv, col if progress else None).item() / max(n, 1)
            if progress:
                progress(f"{col}: {out[col]:.2%} on {n} images ({time.perf_counter() - t0:.1f}s)")
    finally:
        for prm, flag in zip(model.parameters(), grad_flags):
            prm.requires_grad_(flag)
        model.train(was_training)
    return out
