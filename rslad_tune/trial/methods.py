"""Training methods, each one small unit: its inner (attack) loss and its outer (training) loss.

Adding a method = one Method subclass, registered: `@METHODS.register()` on a class here, or in its own module
with one line here, `METHODS.register("name", "package.module:Class")` (imported at its first use). METHODS keeps
the order of registration (the order users see).
Losses follow Table 1 of Zi et al. (ICCV 2021). "KL(S(x'), T(x))" there is KL(T(x) || S(x')): the second
argument is the reference distribution. KL terms are per-sample KL averaged over the batch ("batchmean"); RSLAD and
ARD take `kl_reduction: paper` for the authors' average over batch x classes (KL_REDUCTIONS). Inner losses are summed over
the batch (PGD maximises them), outer losses are batch means.

A method declares what the trainer computes for it (class attributes) and nothing else is computed:
`needs_labels` (reads y: with `data.labelled` it trains on the labelled images only), `needs_teacher` (teacher on
x), `uses_clean` (student on x, train mode, with gradient), `attack_needs_clean` (student on x, eval mode,
detached, before the attack), `needs_teacher_on_adv` (teacher on x', detached).
It also declares the trial keys it reads (`knobs`): the trainer passes only those, and everything that asks
"does this key matter for this method" (the teacher cache key, compare's groups, the paper verdict) reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .attacks import LossFn, ce_loss, kl_loss
from .lazy import LazyModule
from .registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


@dataclass
class Batch:
    x: Tensor  # clean (augmented) view, in [0, 1]
    y: Tensor
    teacher_logits: Tensor | None = None  # the teacher on the clean view, eval mode
    student_clean_logits: Tensor | None = None  # the student on the clean view, eval mode, before the attack, detached
    teacher_adv_logits: Tensor | None = None  # the teacher on the adversarial view x', eval mode, detached


def kl_batchmean(student_logits: Tensor, target_probs: Tensor) -> Tensor:
    return F.kl_div(F.log_softmax(student_logits.float(), dim=1), target_probs, reduction="batchmean")


# How RSLAD's and ARD's KL terms are reduced: "batchmean" sums over classes and averages over the batch (the KL
# as defined); "paper" averages over batch x classes as the authors' code does (RSLAD: torch.mean of
# -a*b + log(b + 1e-5)*b; ARD: nn.KLDivLoss() with its default mean), i.e. 1/num_classes of it. With SGD and
# momentum, "paper" at (lr, wd) trains like "batchmean" at (lr/num_classes, wd*num_classes).
KL_REDUCTIONS = ("batchmean", "paper")


def kl_per_sample(student_logits: Tensor, target_probs: Tensor) -> Tensor:
    """KL(target || softmax(student_logits)) for each sample, shape (batch,)."""
    return F.kl_div(F.log_softmax(student_logits.float(), dim=1), target_probs, reduction="none").sum(dim=1)


# the one place of the knobs' defaults: TrialConfig's fields take theirs from here, and a method built outside a
# trial (tests) gets them; a trial passes its TrialConfig values
KNOB_DEFAULTS = {"alpha": 5 / 6, "temperature": 1.0, "lam": 6.0, "iad_beta": 0.1, "kl_reduction": "batchmean"}


class Method:
    name: ClassVar[str]
    needs_labels: ClassVar[bool] = True  # False: the loss and the attack read only the teacher (RSLAD), no label
    needs_teacher: ClassVar[bool] = False
    adversarial: ClassVar[bool] = True  # False: no inner attack at all
    uses_clean: ClassVar[bool] = False  # outer loss needs the student on the clean view
    attack_needs_clean: ClassVar[bool] = False  # inner loss needs the student's clean logits (Batch.student_clean_logits)
    needs_teacher_on_adv: ClassVar[bool] = False  # outer loss needs the teacher on x' (Batch.teacher_adv_logits)

    knobs: ClassVar[tuple[str, ...]] = ()  # the trial keys (TrialConfig fields) this method reads

    def __init__(self, **knobs):
        unread = set(knobs) - set(self.knobs)
        if unread:
            raise TypeError(f"{self.name} reads none of {sorted(unread)}; its knobs: {self.knobs}")
        for k in self.knobs:
            setattr(self, k, knobs.get(k, KNOB_DEFAULTS[k]))

    def inner_loss(self, batch: Batch) -> LossFn:
        raise NotImplementedError

    def outer_loss(self, clean_logits: Tensor | None, adv_logits: Tensor | None, batch: Batch) -> Tensor:
        raise NotImplementedError


METHODS: Registry = Registry("method")  # name -> Method subclass, in the order users see


@METHODS.register()
class Natural(Method):
    name = "natural"
    adversarial = False
    uses_clean = True

    def outer_loss(self, clean_logits, adv_logits, batch):
        return F.cross_entropy(clean_logits.float(), batch.y)


@METHODS.register()
class SAT(Method):
    """Madry et al.: min CE(f(x'), y), x' = argmax CE(f(x'), y)."""

    name = "sat"

    def inner_loss(self, batch):
        return ce_loss(batch.y)

    def outer_loss(self, clean_logits, adv_logits, batch):
        return F.cross_entropy(adv_logits.float(), batch.y)


@METHODS.register()
class TRADES(Method):
    """Zhang et al. 2019: min CE(f(x), y) + lam KL(f(x'), f(x)), x' = argmax KL(f(x'), f(x)).

    As in the official code: the attack's target f(x) is the student's clean softmax in eval mode, fixed during the
    attack; in the outer loss softmax(f(x)) keeps its gradient (both views are trained through the KL).
    """

    name = "trades"
    knobs = ("lam",)
    uses_clean = True
    attack_needs_clean = True

    def inner_loss(self, batch):
        return kl_loss(F.softmax(batch.student_clean_logits.float(), dim=1))

    def outer_loss(self, clean_logits, adv_logits, batch):
        clean = clean_logits.float()
        return F.cross_entropy(clean, batch.y) + self.lam * kl_batchmean(adv_logits, F.softmax(clean, dim=1))


@METHODS.register()
class MART(Method):
    """Wang et al. 2020: min BCE(f(x'), y) + lam (1 - f_y(x)) KL(f(x'), f(x)), x' = argmax CE(f(x'), y).

    Written as the official MART code, which differs from the table only by its guard constants:
    BCE = CE(f(x'), y) - log(1.0001 - max_{k!=y} f_k(x') + 1e-12), the KL uses log(f(x') + 1e-12) and the weight is
    (1.0000001 - f_y(x)). f(x) keeps its gradient in both the KL target and the weight, as in that code.
    """

    name = "mart"
    knobs = ("lam",)
    uses_clean = True

    def inner_loss(self, batch):
        return ce_loss(batch.y)

    def outer_loss(self, clean_logits, adv_logits, batch):
        y = batch.y[:, None]
        adv_probs, nat_probs = F.softmax(adv_logits.float(), dim=1), F.softmax(clean_logits.float(), dim=1)
        top_wrong = adv_probs.scatter(1, y, 0.0).amax(dim=1)  # max_{k != y} f_k(x')
        bce = F.cross_entropy(adv_logits.float(), batch.y) - torch.log(1.0001 - top_wrong + 1e-12).mean()
        kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(dim=1)  # KL(f(x) || f(x'))
        true_probs = nat_probs.gather(1, y).squeeze(1)
        return bce + self.lam * (kl * (1.0000001 - true_probs)).mean()


@METHODS.register()
class ARD(Method):
    """Goldblum et al. 2020: min (1-a) CE(S^tau(x), y) + a tau^2 KL(S^tau(x'), T^tau(x)), x' = argmax CE(S(x'), y).

    As the table: the CE term uses S^tau(x). The ARD code uses CE(S(x), y) at temperature 1 (identical at the default
    tau = 1) and averages its KL over batch x classes (nn.KLDivLoss()): kl_reduction "paper".
    """

    name = "ard"
    knobs = ("alpha", "temperature", "kl_reduction")
    needs_teacher = True
    uses_clean = True

    def inner_loss(self, batch):
        return ce_loss(batch.y)

    def outer_loss(self, clean_logits, adv_logits, batch):
        tau = self.temperature
        t = F.softmax(batch.teacher_logits.float() / tau, dim=1)
        s_adv = adv_logits.float() / tau
        kl = (F.kl_div(F.log_softmax(s_adv, dim=1), t, reduction="mean") if self.kl_reduction == "paper"
              else kl_batchmean(s_adv, t))
        return (1 - self.alpha) * F.cross_entropy(clean_logits.float() / tau, batch.y) + self.alpha * tau ** 2 * kl


@METHODS.register()
class IAD(Method):
    """Zhu et al. 2022 (IAD-I): min w KL(S^tau(x'), T^tau(x)) + (1-w) KL(S^tau(x'), S^tau(x)), w = T_y(x')^beta,
    x' = argmax CE(S(x'), y).

    w is the teacher's probability (temperature 1) of the true label on the adversarial view, detached, per sample.
    S^tau(x) keeps its gradient, as in the official code. This class follows the table; the official IAD-I code
    differs: a tau^2 KL(S^tau(x'), T^tau(x)) (teacher term not weighted by w) + a (1-w) KL(S(x'), S(x)) (temperature
    1) + (1-a) CE(S(x), y), and plain ARD for the first 60 epochs.
    """

    name = "iad"
    knobs = ("temperature", "iad_beta")
    needs_teacher = True
    uses_clean = True
    needs_teacher_on_adv = True

    def inner_loss(self, batch):
        return ce_loss(batch.y)

    def outer_loss(self, clean_logits, adv_logits, batch):
        tau = self.temperature
        trust = F.softmax(batch.teacher_adv_logits.float(), dim=1).gather(1, batch.y[:, None]).squeeze(1)
        w = trust.detach().pow(self.iad_beta)
        s_adv = adv_logits.float() / tau
        to_teacher = kl_per_sample(s_adv, F.softmax(batch.teacher_logits.float() / tau, dim=1))
        to_self = kl_per_sample(s_adv, F.softmax(clean_logits.float() / tau, dim=1))
        return (w * to_teacher + (1 - w) * to_self).mean()


@METHODS.register()
class RSLAD(Method):
    """Eq. (3): (1-a) KL(S(x), T(x)) + a KL(S(x'), T(x)), x' = argmax KL(S(x'), T(x)); T(x) = softmax(teacher/tau)."""

    name = "rslad"
    knobs = ("alpha", "temperature", "kl_reduction")
    needs_labels = False  # eq. 3 and its attack use the teacher's soft labels only: unlabelled images train it too
    needs_teacher = True
    uses_clean = True

    def soft_labels(self, batch: Batch) -> Tensor:
        return F.softmax(batch.teacher_logits.float() / self.temperature, dim=1)

    def inner_loss(self, batch):
        return kl_loss(self.soft_labels(batch))

    def kl(self, student_logits: Tensor, t: Tensor) -> Tensor:
        if self.kl_reduction == "paper":  # the authors' line: mean over batch x classes of -a*b + log(b + 1e-5)*b
            return (t * (torch.log(t + 1e-5) - F.log_softmax(student_logits.float(), dim=1))).mean()
        return kl_batchmean(student_logits, t)

    def outer_loss(self, clean_logits, adv_logits, batch):
        t = self.soft_labels(batch)
        return (1 - self.alpha) * self.kl(clean_logits, t) + self.alpha * self.kl(adv_logits, t)


KNOBS: tuple[str, ...] = tuple(KNOB_DEFAULTS)  # every method knob (each a TrialConfig field)


def unread_knobs(method: str) -> set[str]:
    """The knobs `method` does not read: keys that cannot change what it trains."""
    return set(KNOBS) - set(METHODS[method].knobs)
