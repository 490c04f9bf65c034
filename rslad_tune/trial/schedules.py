"""Learning-rate schedules: one name -> one multiplier of `lr` at a fraction of the training.

`SCHEDULES` is the one list of schedule names: the YAML's `schedule:` is checked against its keys
(config.py) and the trainer runs the chosen one through `lr_factor`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .errors import SpecError


def cosine(t: float, cfg: Any) -> float:
    return 0.5 * (1 + math.cos(math.pi * t))


def onecycle(t: float, cfg: Any) -> float:
    """Linear warm-up over the first 20 %, then linear decay to 0."""
    return t / 0.2 if t < 0.2 else max(0.0, (1 - t) / 0.8)


def piecewise(t: float, cfg: Any) -> float:
    """x0.1 at each of `cfg.milestones` (fractions of the training; the paper: 215/260/285 of 300 epochs)."""
    return 0.1 ** sum(t >= m for m in cfg.milestones)


def constant(t: float, cfg: Any) -> float:
    return 1.0


# name -> factor(t, cfg), t = the fraction of the optimizer steps done, in [0, 1]
SCHEDULES: dict[str, Callable[[float, Any], float]] = {
    "cosine": cosine, "onecycle": onecycle, "piecewise": piecewise, "constant": constant,
}


def lr_factor(cfg: Any, step: int, total: int) -> float:
    """Multiplier of cfg.lr at optimizer step `step` of `total` (per-step schedules, finishing at the last epoch)."""
    if cfg.schedule not in SCHEDULES:
        raise SpecError("schedule", cfg.schedule, f"one of {', '.join(SCHEDULES)}")
    return SCHEDULES[cfg.schedule](step / max(total, 1), cfg)
