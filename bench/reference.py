"""The paper's RSLAD training loop as its authors wrote it (github.com/zibojia/RSLAD, rslad_train.py), kept
as the baseline of the speed benchmark and the reference of the correctness guard (tests/test_speed_guard.py).

What makes it the *reference*: fp32 and NCHW throughout; a torch DataLoader over a dataset whose
per-sample torchvision transforms run on the CPU (uint8 -> float, random crop with padding 4 and a
flip for CIFAR-shaped images); the teacher run on every batch; PGD with the student in eval mode
and a start at x + 0.001 N(0, 1); `loss.item()` every step, as the authors' loop prints it. The
losses are the project's (KL per sample averaged over the batch): the authors' code averages over
batch x classes, a constant factor that does not change the cost.
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


def rslad_inner_loss(model: nn.Module, teacher_logits: Tensor, x_natural: Tensor, step_size: float, epsilon: float,
                     perturb_steps: int) -> Tensor:
    """The authors' attack: maximise KL(S(x'), T(x)) from x + 0.001 N(0, 1), student in eval mode."""
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    target = F.softmax(teacher_logits, dim=1)
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), target, reduction="sum")
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    return torch.clamp(x_adv, 0.0, 1.0).detach()


def rslad_step(student: nn.Module, teacher: nn.Module, x: Tensor, y: Tensor, opt: torch.optim.Optimizer, *,
               alpha: float, epsilon: float, step_size: float, steps: int) -> float:
    """One training step of the authors' loop; returns loss.item() (a host sync, as they print it)."""
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(x)
    x_adv = rslad_inner_loss(student, teacher_logits, x, step_size, epsilon, steps)
    student.train()
    opt.zero_grad()
    adv_logits = student(x_adv)
    nat_logits = student(x)
    t = F.softmax(teacher_logits.detach(), dim=1)
    kl_adv = F.kl_div(F.log_softmax(adv_logits, dim=1), t, reduction="batchmean")
    kl_nat = F.kl_div(F.log_softmax(nat_logits, dim=1), t, reduction="batchmean")
    loss = alpha * kl_adv + (1 - alpha) * kl_nat
    loss.backward()
    opt.step()
    return loss.item()
