"""Training methods, each one small unit: its inner (attack) loss and its outer (training) loss.

Adding a method = adding one class here and one line to METHODS.
Losses follow Table 1 of Zi et al. (ICCV 2021). KL terms are per-sample KL averaged over the batch
("batchmean"); the RSLAD authors' code averages over batch x classes, i.e. 1/num_classes of this.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from .attacks import LossFn, ce_loss, kl_loss


@dataclass
class Batch:
    x: Tensor  # clean (augmented) view, in [0, 1]
    y: Tensor
    teacher_logits: Tensor | None = None  # the teacher on the clean view, eval mode


def kl_batchmean(student_logits: Tensor, target_probs: Tensor) -> Tensor:
    return F.kl_div(F.log_softmax(student_logits.float(), dim=1), target_probs, reduction="batchmean")


class Method:
    name: ClassVar[str]
    needs_teacher: ClassVar[bool] = False
    adversarial: ClassVar[bool] = True  # False: no inner attack at all
    uses_clean: ClassVar[bool] = False  # outer loss needs the student on the clean view

    def __init__(self, alpha: float = 5 / 6, temperature: float = 1.0):
        self.alpha, self.temperature = alpha, temperature

    def inner_loss(self, batch: Batch) -> LossFn:
        raise NotImplementedError

    def outer_loss(self, clean_logits: Tensor | None, adv_logits: Tensor | None, batch: Batch) -> Tensor:
        raise NotImplementedError


class Natural(Method):
    name = "natural"
    adversarial = False
    uses_clean = True

    def outer_loss(self, clean_logits, adv_logits, batch):
        return F.cross_entropy(clean_logits.float(), batch.y)


class SAT(Method):
    """Madry et al.: min CE(f(x'), y), x' = argmax CE(f(x'), y)."""

    name = "sat"

    def inner_loss(self, batch):
        return ce_loss(batch.y)

    def outer_loss(self, clean_logits, adv_logits, batch):
        return F.cross_entropy(adv_logits.float(), batch.y)


class RSLAD(Method):
    """Eq. (3): (1-a) KL(S(x), T(x)) + a KL(S(x'), T(x)), x' = argmax KL(S(x'), T(x)); T(x) = softmax(teacher/tau)."""

    name = "rslad"
    needs_teacher = True
    uses_clean = True

    def soft_labels(self, batch: Batch) -> Tensor:
        return F.softmax(batch.teacher_logits.float() / self.temperature, dim=1)

    def inner_loss(self, batch):
        return kl_loss(self.soft_labels(batch))

    def outer_loss(self, clean_logits, adv_logits, batch):
        t = self.soft_labels(batch)
        return (1 - self.alpha) * kl_batchmean(clean_logits, t) + self.alpha * kl_batchmean(adv_logits, t)


METHODS: dict[str, type[Method]] = {m.name: m for m in (Natural, SAT, RSLAD)}
