"""L-inf attacks. Every attack keeps its perturbation in float32, inside the eps-ball and [0, 1].

The caller sets the model's mode (the paper attacks with the student in eval mode).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .errors import SpecError
from .lazy import LazyModule

if TYPE_CHECKING:
    from torch import Tensor, nn

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


LossFn = Callable[["Tensor"], "Tensor"]  # logits -> scalar loss (summed over the batch) to maximise


def ce_loss(y: Tensor) -> LossFn:
    return lambda logits: F.cross_entropy(logits.float(), y, reduction="sum")


def kl_loss(target_probs: Tensor) -> LossFn:
    """KL(target || softmax(logits)) summed over the batch: RSLAD's inner loss KL(S(x'), T(x))."""
    return lambda logits: F.kl_div(F.log_softmax(logits.float(), dim=1), target_probs, reduction="sum")


# start name -> x0(x, eps): where PGD starts from
STARTS: dict[str, Callable[[Tensor, float], Tensor]] = {
    # the TRADES/RSLAD start x + 0.001 N(0, 1), unclipped as in the authors' code
    "normal": lambda x, eps: x + 0.001 * torch.randn_like(x),
    "uniform": lambda x, eps: (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1),
    "none": lambda x, eps: x.clone(),
}


def random_start(x: Tensor, eps: float, start: str) -> Tensor:
    if start not in STARTS:
        raise SpecError("start", start, f"one of {', '.join(STARTS)}")
    return STARTS[start](x, eps)


def pgd(model: nn.Module, x: Tensor, loss_fn: LossFn, eps: float, step_size: float, steps: int,
        start: str = "uniform") -> Tensor:
    """Projected gradient ascent with signed steps (Madry et al.); returns x' with |x'-x|_inf <= eps, x' in [0,1]."""
    x = x.detach().float()
    x_adv = random_start(x, eps, start)
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv))
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + step_size * grad.sign(), lo), hi)
    return x_adv.detach().clamp(0, 1) if steps == 0 else x_adv.detach()


def cw_loss(y: Tensor) -> LossFn:
    """The CW-inf margin loss, summed over the batch: sum_i max_{k != y_i} z_ik - z_i,y_i.

    Positive for a misclassified image; maximise it with `pgd` (the paper's CW-inf column).
    """
    def loss(logits: Tensor) -> Tensor:
        logits = logits.float()
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
        return (other - true).sum()

    return loss


def fgsm(model: nn.Module, x: Tensor, loss_fn: LossFn, eps: float) -> Tensor:
    """FGSM (Goodfellow et al.): one step of eps from x along the sign of the loss gradient, clipped to [0, 1]."""
    x = x.detach().float()
    x_in = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model(x_in)), x_in)
    return (x + eps * grad.sign()).clamp(0, 1).detach()
