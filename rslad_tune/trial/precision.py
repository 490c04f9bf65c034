"""Mixed precision of the training forwards: when bf16 autocast is on, and what stays float32.

`precision` (a trial key): fp32; bf16; auto = bf16 on CUDA and on a CPU that computes bf16 natively
(AVX512-BF16 or AMX, where oneDNN's bf16 convolutions beat fp32), fp32 elsewhere. Inputs, perturbations and
their sign-gradient updates stay float32 (attacks.pgd); every loss is computed on float32 logits; the
optimizer steps float32 weights.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .lazy import LazyModule

if TYPE_CHECKING:
    from torch import nn

    from .config import TrialConfig

torch = LazyModule("torch")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively; without it oneDNN emulates bf16, slower than fp32."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_enabled(cfg: TrialConfig, device) -> bool:
    if cfg.precision != "auto":
        return cfg.precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


@contextlib.contextmanager
def autocast(cfg: TrialConfig, device):
    """bf16 autocast for the forwards when autocast_enabled; yields whether it is on."""
    on = autocast_enabled(cfg, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on):
        yield on


def _fp32_pre(module, args):
    module._autocast_was = torch.is_autocast_enabled("cpu")
    torch.set_autocast_enabled("cpu", False)
    return tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)


def _fp32_post(module, args, out):
    torch.set_autocast_enabled("cpu", module._autocast_was)


GROUPED_FP32 = True  # False: grouped convolutions follow autocast too (the benchmarks' ablation)


@contextlib.contextmanager
def fp32_grouped_convs(model: nn.Module, device, on: bool = True):
    """Inside CPU bf16 autocast (`on`), every grouped (depthwise) convolution of `model` runs in float32: oneDNN's
    bf16 depthwise kernels are 1.5-50x slower than float32 on this CPU (strided ones the most; docs/speed.md), and
    these layers are cheap in float32. Forward hooks for the duration of the block, removed after it: the model
    keeps nothing (an exported or scripted student carries no hook)."""
    handles = []
    if on and device.type == "cpu" and GROUPED_FP32:
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
                handles += [m.register_forward_pre_hook(_fp32_pre), m.register_forward_hook(_fp32_post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
