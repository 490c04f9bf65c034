"""The student as the attack sees it: eval mode, frozen weights, so each BatchNorm that follows a convolution is an
affine map that can be folded into that convolution's weights.

    view = attack_view(model)   # once per model object (an fx trace), cached
    x_adv = pgd(view(), x, ...) # view() refreshes the folded weights from the live model, then is the model to call

Why: PGD runs the student forward and backward (to the input) `attack_steps` times per training step; a
BatchNorm there is one more pass over every activation each way (MobileNetV2 spends ~19 % of a step in
batch-norm forward and backward on this CPU). Folded, the convolution does that work in its own pass. The
result equals the eval-mode model up to float rounding (tests/test_folding.py).

Everything but the folded convolutions is the live model's own modules (a GraphModule holds references, not
copies), so a module that is not folded (a linear layer, a BatchNorm after an addition) is always current. A model
fx cannot trace, or one with nothing to fold, is attacked as it is.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .lazy import LazyModule

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")
fx = LazyModule("torch.fx")


class FoldedView:
    """A GraphModule of `model` in which each Conv2d -> BatchNorm2d pair is one Conv2d with bias."""

    def __init__(self, model: nn.Module):
        self.model = weakref.ref(model)
        self.pairs: list[tuple[nn.Module, nn.Module, nn.Module]] = []  # (live conv, live bn, folded conv)
        self.graph_module = None
        try:
            gm = fx.symbolic_trace(model)
        except Exception:  # noqa: BLE001 - data-dependent control flow etc.: the model is attacked as it is
            return
        modules = dict(gm.named_modules())
        for node in list(gm.graph.nodes):
            bn = modules.get(node.target) if node.op == "call_module" else None
            if not isinstance(bn, torch.nn.BatchNorm2d) or bn.running_mean is None:
                continue
            src = node.args[0]
            conv = modules.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
            if type(conv) is not torch.nn.Conv2d or len(src.users) != 1 or conv.padding_mode != "zeros":
                continue
            # skip_init: no draw from the global RNG (a trial's batches and PGD starts must not depend on when the
            # view is made, e.g. after a resume); the weights are written at each call
            folded = torch.nn.utils.skip_init(torch.nn.Conv2d, conv.in_channels, conv.out_channels, conv.kernel_size,
                                              conv.stride, conv.padding, conv.dilation, conv.groups, bias=True,
                                              device=conv.weight.device)
            folded.requires_grad_(False)
            name = f"folded_{len(self.pairs)}"
            gm.add_submodule(name, folded)
            src.target = name
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
            self.pairs.append((conv, bn, folded))
        if self.pairs:
            gm.graph.lint()
            gm.recompile()
            self.graph_module = gm

    def __call__(self) -> nn.Module:
        """The model to attack: the folded GraphModule with its weights refreshed from the live model's current
        weights and running statistics, or the model itself when nothing was folded."""
        model = self.model()
        if self.graph_module is None:
            return model
        with torch.no_grad():
            for conv, bn, folded in self.pairs:
                scale = (bn.running_var + bn.eps).rsqrt()
                if bn.weight is not None:
                    scale = scale * bn.weight
                w = conv.weight * scale.reshape(-1, 1, 1, 1)
                folded.weight.data = w.contiguous(memory_format=_format(conv.weight))
                bias = -bn.running_mean * scale if conv.bias is None else (conv.bias - bn.running_mean) * scale
                folded.bias.data = bias + bn.bias if bn.bias is not None else bias
        self.graph_module.train(model.training)
        return self.graph_module


def _format(t):
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
FOLD = True  # False: attack the model as it is (the benchmarks' ablation)


def attack_model(model: nn.Module) -> nn.Module:
    """The model the attack runs: attack_view(model)(), or the model itself when folding is off or it is a
    torch.compile'd module (compile does its own fusion)."""
    if not FOLD or hasattr(model, "_orig_mod"):
        return model
    return attack_view(model)()


def attack_view(model: nn.Module) -> FoldedView:
    """The FoldedView of `model`, traced on first use and kept while the model lives."""
    view = _VIEWS.get(model)
    if view is None:
        view = _VIEWS[model] = FoldedView(model)
    return view
