"""Robust accuracy of a model on a split. Counts are accumulated on the device; one sync per call."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .attacks import ce_loss, pgd


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum()
    return correct.item() / max(len(x), 1)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
                 start: str = "uniform", batch_size: int = 500) -> float:
    """PGD-`steps` on the CE loss ("SAT" protocol: uniform start), model in eval mode."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = pgd(model, xb, ce_loss(yb), eps, step_size, steps, start)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == yb).sum()
    return correct.item() / max(len(x), 1)


def clean_and_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
                  seed: int = 0) -> dict[str, float]:
    """The pair every trial reports: clean accuracy and PGD accuracy, with a fixed attack seed."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return {"clean_acc": accuracy(model, x, y), "pgd_acc": pgd_accuracy(model, x, y, eps, step_size, steps)}
