"""The authors' RSLAD training loop (github.com/zibojia/RSLAD, mobilenet_v2_rslad_cifar10.py and
rslad_loss.py, MIT), reconstructed line for line as the baseline of the speed benchmarks
(bench.vs_authors, bench.trainer) and the reference of the correctness guard (tests/test_speed_guard.py,
which checks it computes the project's RSLAD loss with `kl_reduction: paper`).

Their loop body, per batch: `optimizer.zero_grad()`; the teacher on x under no_grad (every batch, fp32,
NCHW); `rslad_inner_loss`: the student in eval mode, x + 0.001 N(0, 1), PGD on the sum of
KLDivLoss(reduction none) with `torch.autograd.grad` (the weights keep requires_grad), projection by
min/max then clamp, the student back in train mode, zero_grad again and the student's logits on x';
the student on x; their `kl_loss(a, b) = -a*b + log(b + 1e-5)*b` averaged over batch x classes for
both views, `alpha * adv + (1 - alpha) * nat` (5/6 and 1/6 in their scripts); backward; step. They
print `loss.item()` every 100 steps, so the body has no host sync.

bench.trainer adds their data pipeline: a torch DataLoader over per-sample CPU transforms
(uint8 -> float, random crop with padding 4 and a flip for CIFAR-shaped images).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2


class ImageTensors(Dataset):
    """uint8 images (N, C, H, W) with per-sample CPU transforms, like a torchvision dataset."""

    def __init__(self, images_u8: Tensor, labels: Tensor, augment: bool):
        self.images, self.labels = images_u8, labels
        steps = [v2.RandomCrop(images_u8.shape[-1], padding=4), v2.RandomHorizontalFlip()] if augment else []
        self.transform = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def loader(images: Tensor, labels: Tensor, batch_size: int, augment: bool, workers: int, pin: bool) -> DataLoader:
    """float images in [0, 1] are stored as uint8, as the dataset files hold them."""
    u8 = (images * 255).round().to(torch.uint8).cpu()
    return DataLoader(ImageTensors(u8, labels.cpu(), augment), batch_size=batch_size, shuffle=True, drop_last=True,
                      num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)


def kl_loss(a: Tensor, b: Tensor) -> Tensor:
    """The authors' element-wise KL term (a: student log-probabilities, b: teacher probabilities)."""
    return -a * b + torch.log(b + 1e-5) * b


def rslad_inner_loss(model: nn.Module, teacher_logits: Tensor, x_natural: Tensor, optimizer: torch.optim.Optimizer,
                     step_size: float, epsilon: float, perturb_steps: int) -> Tensor:
    """The authors' attack and the student's logits on x' (their function returns the logits)."""
    criterion_kl = nn.KLDivLoss(reduction="none")  # their size_average=False, reduce=False
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(teacher_logits, dim=1))
            loss_kl = torch.sum(loss_kl)
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()  # their Variable(..., requires_grad=False)
    optimizer.zero_grad()
    return model(x_adv)


def rslad_step(student: nn.Module, teacher: nn.Module, x: Tensor, y: Tensor, opt: torch.optim.Optimizer, *,
               alpha: float, epsilon: float, step_size: float, steps: int) -> Tensor:
    """One step of the authors' loop body; returns the loss (a tensor: their loop syncs every 100 steps only)."""
    student.train()
    opt.zero_grad()
    with torch.no_grad():
        teacher_logits = teacher(x)
    adv_logits = rslad_inner_loss(student, teacher_logits, x, opt, step_size=step_size, epsilon=epsilon,
                                  perturb_steps=steps)
    student.train()
    nat_logits = student(x)
    kl_loss1 = torch.mean(kl_loss(F.log_softmax(adv_logits, dim=1), F.softmax(teacher_logits.detach(), dim=1)))
    kl_loss2 = torch.mean(kl_loss(F.log_softmax(nat_logits, dim=1), F.softmax(teacher_logits.detach(), dim=1)))
    loss = alpha * kl_loss1 + (1 - alpha) * kl_loss2
    loss.backward()
    opt.step()
    return loss.detach()
