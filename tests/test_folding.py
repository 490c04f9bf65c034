"""The attack's folded view of the student (folding.py) and the float32 islands of CPU bf16 autocast (precision.py)."""
import copy

import pytest
import torch

from rslad_tune.trial import folding
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.models import build_model
from rslad_tune.trial.precision import autocast, autocast_enabled, cpu_has_bf16, fp32_grouped_convs


def _trained_stats(model, shape):
    """Batch-norm running statistics and affine parameters away from their initial 0/1."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, *shape) * 2)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("arch,shape,width,pairs", [("small_cnn", (1, 28, 28), 8, 4), ("mobilenet_v2", (3, 32, 32), None, 57),
                                                    ("resnet18", (3, 32, 32), None, 20)])
def test_the_folded_view_is_the_eval_model_and_follows_its_weights(arch, shape, width, pairs):
    torch.manual_seed(0)
    model = _trained_stats(build_model(arch, shape[0], 10, width), shape)
    view = folding.attack_view(model)
    assert len(view.pairs) == pairs  # every convolution followed by a batch-norm
    x = torch.rand(4, *shape)
    with torch.no_grad():
        assert torch.allclose(view()(x), model(x), rtol=1e-4, atol=1e-5)
        assert not torch.equal(view()(x), model(x)) or arch == "small_cnn"  # rounding differs: it is another graph
        for p in model.parameters():  # an optimizer step: the view reads the new weights at its next call
            p.add_(0.01 * torch.randn_like(p))
        model.train()
        model(torch.rand(8, *shape))  # and new running statistics
        model.eval()
        assert torch.allclose(view()(x), model(x), rtol=1e-4, atol=1e-5)
    assert folding.attack_view(model) is view  # traced once per model
    # the input gradient the attack uses agrees too
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    w = torch.randn(4, 10)
    (ga,) = torch.autograd.grad((view()(xa) * w).sum(), xa)
    (gb,) = torch.autograd.grad((model(xb) * w).sum(), xb)
    assert (ga - gb).norm() <= 1e-3 * gb.norm()


def test_a_model_fx_cannot_trace_or_without_batch_norm_is_attacked_as_it_is():
    class Branchy(torch.nn.Module):  # data-dependent control flow: symbolic tracing fails
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    m = Branchy().eval()
    assert folding.attack_model(m) is m
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()).eval()
    assert folding.attack_model(plain) is plain
    compiled_like = copy.deepcopy(plain)
    compiled_like._orig_mod = plain  # what torch.compile returns: left to compile's own fusion
    assert folding.attack_model(compiled_like) is compiled_like


def test_precision_auto_follows_the_device_and_the_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_enabled(TrialConfig(precision="auto"), cuda)
    assert autocast_enabled(TrialConfig(precision="auto"), cpu) == cpu_has_bf16()
    assert not autocast_enabled(TrialConfig(precision="fp32"), cuda)
    assert autocast_enabled(TrialConfig(precision="bf16"), cpu)


def test_grouped_convolutions_run_in_float32_inside_cpu_bf16_autocast():
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 3, 10).eval()
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, a, out, name=name: seen.__setitem__(name, (mod.groups, out.dtype)))
    cpu = torch.device("cpu")
    with autocast(TrialConfig(precision="bf16"), cpu) as on, fp32_grouped_convs(model, cpu, on), torch.no_grad():
        assert on and len(model.layers[0].conv2._forward_pre_hooks) == 1
        out = model(torch.rand(2, 3, 32, 32))
        assert torch.is_autocast_enabled("cpu")  # restored after each grouped convolution
    assert out.dtype == torch.bfloat16
    conv = model.layers[0].conv2
    assert not conv._forward_pre_hooks and len(conv._forward_hooks) == 1  # ours removed; the test's own stays
    grouped = {n: d for n, (g, d) in seen.items() if g > 1}
    dense = {n: d for n, (g, d) in seen.items() if g == 1}
    assert grouped and set(grouped.values()) == {torch.float32}
    assert dense and set(dense.values()) == {torch.bfloat16}
