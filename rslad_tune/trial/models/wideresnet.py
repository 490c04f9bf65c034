"""WideResNet teachers whose state dicts match RobustBench's CIFAR-10 checkpoints key for key.

Two layouts, mirrored from the RobustBench sources (github.com/RobustBench/robustbench):

* `WideResNet` -- robustbench/model_zoo/architectures/wide_resnet.py (itself from the TRADES code
  base, github.com/yaodongyu/TRADES). Keys: conv1, block{1,2,3}.layer.N.{bn1,conv1,bn2,conv2,
  convShortcut}, [sub_block1.*], bn1, fc. No input normalisation. Used for WRN-34-10 by
  Zhang2019Theoretically (TRADES, the RSLAD teacher), Wu2020Adversarial, Sehwag2021Proxy, ...
  (robustbench/model_zoo/cifar10.py).
* `DMWideResNet` -- robustbench/model_zoo/architectures/dm_wide_resnet.py (from DeepMind's
  adversarial_robustness/pytorch/model_zoo.py). Keys: mean, std, init_conv,
  layer.G.block.N.{batchnorm_0,conv_0,batchnorm_1,conv_1,shortcut}, batchnorm, logits.
  Normalises inside the model with the CIFAR-10 mean/std buffers; Swish activation. Used for
  WRN-70-16 by Gowal2020Uncovering_70_16(_extra), Rebuffi2021Fixing_70_16_*, Gowal2021Improving_70_16_*,
  Pang2022Robustness_WRN70_16 (and with nn.SiLU, numerically the same, Wang2023Better_WRN-70-16).

Differences from the originals, none of which changes a key, a shape or the maths on 32x32 inputs:
  - the final `F.avg_pool2d(out, 8)` is `F.adaptive_avg_pool2d(out, 1)` (identical on the 8x8 map a
    32x32 input gives; also works for other sizes);
  - Swish is `x * sigmoid(x)` via `F.silu` instead of RobustBench's custom autograd Function (which
    uses the removed `ctx.saved_variables`); the gradient is the same;
  - `in_channels` / `num_classes` follow this package's constructor convention.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


# --------------------------------------------------------------------------------------------
# robustbench/model_zoo/architectures/wide_resnet.py
# --------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (None if self.equalInOut else
                             nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False))

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(nb_layers)
        ])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """TRADES/RobustBench WideResNet (pre-activation blocks, no input normalisation).

    `sub_block1=True` adds RobustBench's `sub_block1` (a second copy of block1 that `forward` never
    uses; Zhang2019Theoretically and other TRADES-code checkpoints carry it). With the default
    `sub_block1=False` the model is the plain WRN, and any `sub_block1.*` keys in a loaded state
    dict are dropped (they cannot affect the output), so both kinds of checkpoint load with
    `strict=True`.
    """

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3,
                 sub_block1: bool = False, drop_rate: float = 0.0, bias_last: bool = True):
        super().__init__()
        n_ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        if (depth - 4) % 6:
            raise SpecError("depth", depth, "a WideResNet's depth must be 6n+4")
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, n_ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, n_ch[0], n_ch[1], 1, drop_rate)
        if sub_block1:
            self.sub_block1 = NetworkBlock(n, n_ch[0], n_ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, n_ch[1], n_ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, n_ch[2], n_ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(n_ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(n_ch[3], num_classes, bias=bias_last)
        self.nChannels = n_ch[3]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.data.zero_()

        if not sub_block1:
            self._register_load_state_dict_pre_hook(_drop_unused_sub_block1)

    def forward(self, x):
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # == avg_pool2d(out, 8) on 32x32 inputs
        return self.fc(out)


def _drop_unused_sub_block1(state_dict, prefix, *_args):
    # load_state_dict hands pre-hooks its own copy of the dict, so this never touches the caller's
    for k in [k for k in state_dict if k.startswith(prefix + "sub_block1.")]:
        del state_dict[k]


# --------------------------------------------------------------------------------------------
# robustbench/model_zoo/architectures/dm_wide_resnet.py
# --------------------------------------------------------------------------------------------
class Swish(nn.Module):
    def forward(self, x):
        return F.silu(x)


class _Block(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, activation_fn: type[nn.Module] = Swish):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = activation_fn()
        # padding done by hand in forward, to get TensorFlow's 'SAME' with stride 2
        self.conv_0 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = activation_fn()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = (nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
                         if self.has_shortcut else None)
        self._stride = stride

    def forward(self, x):
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
        else:
            out = self.relu_0(self.batchnorm_0(x))
        v = x if self.has_shortcut else out
        if self._stride == 1:
            v = F.pad(v, (1, 1, 1, 1))
        elif self._stride == 2:
            v = F.pad(v, (0, 1, 0, 1))
        else:
            raise SpecError("stride", self._stride, "must be 1 or 2")
        out = self.conv_0(v)
        out = self.relu_1(self.batchnorm_1(out))
        out = self.conv_1(out)
        return torch.add(self.shortcut(x) if self.has_shortcut else x, out)


class _BlockGroup(nn.Module):
    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int,
                 activation_fn: type[nn.Module] = Swish):
        super().__init__()
        self.block = nn.Sequential(*[
            _Block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation_fn)
            for i in range(num_blocks)
        ])

    def forward(self, x):
        return self.block(x)


class DMWideResNet(nn.Module):
    """DeepMind WideResNet as in RobustBench: inputs in [0, 1], normalised inside by `mean`/`std`."""

    def __init__(self, depth: int = 70, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 activation_fn: type[nn.Module] = Swish,
                 mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD, padding: int = 0):
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            raise SpecError("in_channels", in_channels, f"DMWideResNet normalises with one mean/std per input channel: "
                            f"{len(mean)} means and {len(std)} stds here (the RobustBench checkpoints are 3-channel "
                            "CIFAR models)")
        self.register_buffer("mean", torch.tensor(mean).view(in_channels, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(in_channels, 1, 1))
        self.padding = padding
        num_channels = [16, 16 * width, 32 * width, 64 * width]
        if (depth - 4) % 6:
            raise SpecError("depth", depth, "a DMWideResNet's depth must be 6n+4")
        num_blocks = (depth - 4) // 6
        self.init_conv = nn.Conv2d(in_channels, num_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            _BlockGroup(num_blocks, num_channels[0], num_channels[1], 1, activation_fn),
            _BlockGroup(num_blocks, num_channels[1], num_channels[2], 2, activation_fn),
            _BlockGroup(num_blocks, num_channels[2], num_channels[3], 2, activation_fn),
        )
        self.batchnorm = nn.BatchNorm2d(num_channels[3])
        self.relu = activation_fn()
        self.logits = nn.Linear(num_channels[3], num_classes)
        self.num_channels = num_channels[3]

    def forward(self, x):
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        out = (x - self.mean) / self.std
        out = self.init_conv(out)
        out = self.layer(out)
        out = self.relu(self.batchnorm(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # == avg_pool2d(out, 8) on 32x32 inputs
        return self.logits(out)


# --------------------------------------------------------------------------------------------
# registry constructors (in_channels, num_classes), the configurations RobustBench uses
# --------------------------------------------------------------------------------------------
def WRN34_10(in_channels: int = 3, num_classes: int = 10) -> WideResNet:
    """WideResNet(depth=34, widen_factor=10): ~46.2 M parameters."""
    return WideResNet(depth=34, widen_factor=10, num_classes=num_classes, in_channels=in_channels)


def WRN70_16(in_channels: int = 3, num_classes: int = 10) -> DMWideResNet:
    """DMWideResNet(depth=70, width=16, Swish, CIFAR-10 mean/std): ~266.8 M parameters. 3-channel only."""
    return DMWideResNet(depth=70, width=16, num_classes=num_classes, in_channels=in_channels)
