"""Model registry: RobustBench-layout WideResNet teachers, checkpoint loading, parameter and MAC counts.

The expected state-dict layouts below are written out independently of rslad_tune.trial.models, from the
RobustBench sources (github.com/RobustBench/robustbench):
  robustbench/model_zoo/architectures/wide_resnet.py     (WideResNet; TRADES code base)
  robustbench/model_zoo/architectures/dm_wide_resnet.py  (DMWideResNet; DeepMind)
  robustbench/model_zoo/cifar10.py  (Zhang2019Theoretically: WideResNet(34, 10, sub_block1=True);
    Sehwag2021Proxy: WideResNet(34, 10, sub_block1=False); Gowal2020Uncovering_70_16:
    DMWideResNet(depth=70, width=16, activation_fn=Swish, mean=CIFAR10_MEAN, std=CIFAR10_STD))
Both count blocks as (depth - 4) // 6 per group over 3 groups: 5 for WRN-34, 11 for WRN-70.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rslad_tune.trial.models import REGISTRY, build_model, count_macs, count_params, robustbench_state_dict
from rslad_tune.trial.models.wideresnet import DMWideResNet, WideResNet

# dm_wide_resnet.py
RB_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
RB_CIFAR10_STD = (0.2471, 0.2435, 0.2616)
NOT_PARAMS = ("running_mean", "running_var", "num_batches_tracked")


# ----------------------------------------------------------------------------------------------
# independent generators of RobustBench's key names and shapes
# ----------------------------------------------------------------------------------------------
def _bn(prefix: str, c: int, nbt: bool) -> dict[str, tuple]:
    d = {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,)}
    if nbt:
        d[f"{prefix}.num_batches_tracked"] = ()
    return d


def trades_wrn_layout(depth: int, widen: int, sub_block1: bool, num_classes: int = 10, nbt: bool = True):
    """wide_resnet.py: conv1; NetworkBlock(n) .layer.i = BasicBlock(bn1, conv1, bn2, conv2,
    convShortcut iff in != out); block1 [, sub_block1], block2, block3; bn1; fc (bias_last=True)."""
    n = (depth - 4) // 6
    ch = [16, 16 * widen, 32 * widen, 64 * widen]
    lay = {"conv1.weight": (ch[0], 3, 3, 3)}
    groups = [("block1", ch[0], ch[1])] + ([("sub_block1", ch[0], ch[1])] if sub_block1 else [])
    groups += [("block2", ch[1], ch[2]), ("block3", ch[2], ch[3])]
    for name, cin, cout in groups:
        for i in range(n):
            p, c_in = f"{name}.layer.{i}", (cin if i == 0 else cout)
            lay |= _bn(f"{p}.bn1", c_in, nbt)
            lay[f"{p}.conv1.weight"] = (cout, c_in, 3, 3)
            lay |= _bn(f"{p}.bn2", cout, nbt)
            lay[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            if c_in != cout:
                lay[f"{p}.convShortcut.weight"] = (cout, c_in, 1, 1)
    lay |= _bn("bn1", ch[3], nbt)
    lay["fc.weight"], lay["fc.bias"] = (num_classes, ch[3]), (num_classes,)
    return lay


def dm_wrn_layout(depth: int, width: int, num_classes: int = 10, nbt: bool = True):
    """dm_wide_resnet.py: mean, std (3,1,1) buffers; init_conv; layer.g = _BlockGroup, .block.i =
    _Block(batchnorm_0, conv_0, batchnorm_1, conv_1, shortcut iff in != out); batchnorm; logits."""
    n = (depth - 4) // 6
    ch = [16, 16 * width, 32 * width, 64 * width]
    lay = {"mean": (3, 1, 1), "std": (3, 1, 1), "init_conv.weight": (ch[0], 3, 3, 3)}
    for g in range(3):
        cin, cout = ch[g], ch[g + 1]
        for i in range(n):
            p, c_in = f"layer.{g}.block.{i}", (cin if i == 0 else cout)
            lay |= _bn(f"{p}.batchnorm_0", c_in, nbt)
            lay[f"{p}.conv_0.weight"] = (cout, c_in, 3, 3)
            lay |= _bn(f"{p}.batchnorm_1", cout, nbt)
            lay[f"{p}.conv_1.weight"] = (cout, cout, 3, 3)
            if c_in != cout:
                lay[f"{p}.shortcut.weight"] = (cout, c_in, 1, 1)
    lay |= _bn("batchnorm", ch[3], nbt)
    lay["logits.weight"], lay["logits.bias"] = (num_classes, ch[3]), (num_classes,)
    return lay


def n_params(layout: dict[str, tuple]) -> int:
    return sum(torch.Size(s).numel() for k, s in layout.items() if not k.endswith(NOT_PARAMS) and k not in ("mean", "std"))


def fill(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the right shapes, scaled so a 30-70 layer forward stays finite."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in layout.items():
        if k == "mean":
            t = torch.tensor(RB_CIFAR10_MEAN).view(3, 1, 1)
        elif k == "std":
            t = torch.tensor(RB_CIFAR10_STD).view(3, 1, 1)
        elif k.endswith("num_batches_tracked"):
            t = torch.tensor(1000)
        elif k.endswith("running_var"):
            t = torch.rand(shape, generator=g) + 0.5
        elif len(shape) >= 2:  # conv / linear weight: LeCun scale
            t = torch.randn(shape, generator=g) / torch.Size(shape[1:]).numel() ** 0.5
        elif k.endswith(".weight"):  # batchnorm gamma
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        else:  # biases, running means
            t = 0.1 * torch.randn(shape, generator=g)
        sd[k] = t
    return sd


def roundtrip(sd: dict[str, torch.Tensor], path, wrap: str | None = "state_dict", prefix: str = "module."):
    """Save as a RobustBench-style checkpoint, load it back as robustbench.utils would (weights only)."""
    inner = {prefix + k: v for k, v in sd.items()}
    torch.save({wrap: inner} if wrap else inner, path)
    return robustbench_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))


def shapes(model) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# functional reference forwards, written from the RobustBench sources (eval mode)
# ----------------------------------------------------------------------------------------------
def _bn_eval(sd, p, x):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def ref_trades_wrn(sd, x, depth):
    n = (depth - 4) // 6
    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for name, stride in (("block1", 1), ("block2", 2), ("block3", 2)):
        for i in range(n):
            p, s = f"{name}.layer.{i}", (stride if i == 0 else 1)
            a = F.relu(_bn_eval(sd, f"{p}.bn1", out))
            # not equalInOut: conv1 and the 1x1 shortcut both see relu(bn1(x)); else the skip is raw x
            skip = F.conv2d(a, sd[f"{p}.convShortcut.weight"], stride=s) if f"{p}.convShortcut.weight" in sd else out
            h = F.conv2d(a, sd[f"{p}.conv1.weight"], stride=s, padding=1)
            h = F.conv2d(F.relu(_bn_eval(sd, f"{p}.bn2", h)), sd[f"{p}.conv2.weight"], padding=1)
            out = skip + h
    out = F.relu(_bn_eval(sd, "bn1", out))
    return F.linear(F.avg_pool2d(out, 8).flatten(1), sd["fc.weight"], sd["fc.bias"])


def ref_dm_wrn(sd, x, depth):
    def swish(t):
        return t * torch.sigmoid(t)

    n = (depth - 4) // 6
    out = F.conv2d((x - sd["mean"]) / sd["std"], sd["init_conv.weight"], padding=1)
    for g, stride in enumerate((1, 2, 2)):
        for i in range(n):
            p, s = f"layer.{g}.block.{i}", (stride if i == 0 else 1)
            a = swish(_bn_eval(sd, f"{p}.batchnorm_0", out))
            # 'SAME' padding by hand: (1,1,1,1) at stride 1, (0,1,0,1) at stride 2
            h = F.conv2d(F.pad(a, (1, 1, 1, 1) if s == 1 else (0, 1, 0, 1)), sd[f"{p}.conv_0.weight"], stride=s)
            h = F.conv2d(swish(_bn_eval(sd, f"{p}.batchnorm_1", h)), sd[f"{p}.conv_1.weight"], padding=1)
            skip = F.conv2d(a, sd[f"{p}.shortcut.weight"], stride=s) if f"{p}.shortcut.weight" in sd else out
            out = skip + h
    out = swish(_bn_eval(sd, "batchnorm", out))
    return F.linear(F.avg_pool2d(out, 8).flatten(1), sd["logits.weight"], sd["logits.bias"])


def assert_matches(out, ref):
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


# ----------------------------------------------------------------------------------------------
# fixtures: each large model is built once per session
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wrn34():
    return build_model("wrn34_10", 3, 10).eval()


@pytest.fixture(scope="module")
def wrn70():
    return build_model("wrn70_16", 3, 10).eval()


def test_layout_generators_match_robustbench_block_counts():
    lay34 = trades_wrn_layout(34, 10, sub_block1=False)
    assert {k.split(".layer.")[0] + "." + k.split(".")[2] for k in lay34 if ".layer." in k} == {
        f"{g}.{i}" for g in ("block1", "block2", "block3") for i in range(5)}
    lay70 = dm_wrn_layout(70, 16)
    assert {k.split(".")[1] + "." + k.split(".")[3] for k in lay70 if k.startswith("layer.")} == {
        f"{g}.{i}" for g in range(3) for i in range(11)}
    # the first block of each group has the 1x1 shortcut (16->160/256, x2 widening), the rest do not
    assert sum(k.endswith("convShortcut.weight") for k in lay34) == 3
    assert sum(k.endswith("shortcut.weight") for k in lay70) == 3


# ----------------------------------------------------------------------------------------------
# WRN-34-10 (TRADES / RobustBench WideResNet)
# ----------------------------------------------------------------------------------------------
def test_wrn34_10_layout_and_params(wrn34):
    lay = trades_wrn_layout(34, 10, sub_block1=False)
    assert shapes(wrn34) == lay
    assert count_params(wrn34) == n_params(lay)
    assert count_params(wrn34) == pytest.approx(46.2e6, rel=0.01)  # published WRN-34-10 size
    # sub_block1=True reproduces the Zhang2019Theoretically layout key for key
    assert shapes(WideResNet(34, 10, sub_block1=True)) == trades_wrn_layout(34, 10, sub_block1=True)


@pytest.mark.parametrize("sub_block1,nbt,wrap,prefix", [
    (True, True, "state_dict", "module."),  # Zhang2019Theoretically (TRADES): carries the unused sub_block1
    (False, True, "state_dict", "module."),  # Sehwag2021Proxy, Chen2021LTD_WRN34_10, ...
    (False, False, None, ""),  # raw state dict from PyTorch < 0.4.1: no num_batches_tracked
    (True, True, "model_state_dict", ""),
])
def test_wrn34_10_loads_robustbench_checkpoint(wrn34, tmp_path, sub_block1, nbt, wrap, prefix):
    sd = fill(trades_wrn_layout(34, 10, sub_block1=sub_block1, nbt=nbt), seed=1)
    loaded = roundtrip(sd, tmp_path / "ckpt.pt", wrap, prefix)
    assert set(loaded) == set(sd)
    wrn34.load_state_dict(loaded, strict=True)
    assert any(k.startswith("sub_block1.") for k in loaded) == sub_block1  # caller's dict left alone
    got = wrn34.state_dict()
    for k, v in sd.items():
        if not k.startswith("sub_block1.") and not k.endswith("num_batches_tracked"):
            assert torch.equal(got[k], v), k
    if wrap == "state_dict" and sub_block1:  # one forward is enough (and costs a few seconds)
        x = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            out = wrn34(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        assert_matches(out, ref_trades_wrn(sd, x, 34))


def test_wrn34_10_strict_load_still_rejects_real_mismatches(wrn34):
    sd = fill(trades_wrn_layout(34, 10, sub_block1=False))
    with pytest.raises(RuntimeError, match="Missing key"):
        wrn34.load_state_dict({k: v for k, v in sd.items() if k != "block2.layer.0.convShortcut.weight"})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        wrn34.load_state_dict(sd | {"sub_block2.layer.0.bn1.weight": torch.ones(16)})
    bad = dict(sd)
    bad["fc.weight"] = torch.zeros(100, 640)
    with pytest.raises(RuntimeError, match="size mismatch"):
        wrn34.load_state_dict(bad)


# ----------------------------------------------------------------------------------------------
# WRN-70-16 (DeepMind / RobustBench DMWideResNet)
# ----------------------------------------------------------------------------------------------
def test_dm_wrn_forward_matches_reference_small():
    # the same class at a small size: padding, Swish, shortcut wiring and in-model normalisation
    model = DMWideResNet(depth=16, width=2).eval()
    assert torch.allclose(model.mean, torch.tensor(RB_CIFAR10_MEAN).view(3, 1, 1))
    assert torch.allclose(model.std, torch.tensor(RB_CIFAR10_STD).view(3, 1, 1))
    sd = fill(dm_wrn_layout(16, 2), seed=2)
    model.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert_matches(model(x), ref_dm_wrn(sd, x, 16))


def test_wrn70_16_layout_and_params(wrn70):
    lay = dm_wrn_layout(70, 16)
    assert shapes(wrn70) == lay
    assert count_params(wrn70) == n_params(lay)
    assert count_params(wrn70) == pytest.approx(266.8e6, rel=0.01)  # published WRN-70-16 size
    assert torch.allclose(wrn70.mean, torch.tensor(RB_CIFAR10_MEAN).view(3, 1, 1))
    assert torch.allclose(wrn70.std, torch.tensor(RB_CIFAR10_STD).view(3, 1, 1))


@pytest.mark.slow  # a 267M-parameter state dict written, read and loaded (~9 s, ~3 GB); the layout test stays fast
def test_wrn70_16_loads_robustbench_checkpoint(wrn70, tmp_path):
    sd = fill(dm_wrn_layout(70, 16), seed=3)
    path = tmp_path / "Gowal2020Uncovering_70_16.pt"
    loaded = roundtrip(sd, path)
    path.unlink()
    assert set(loaded) == set(sd)
    wrn70.load_state_dict(loaded, strict=True)
    del loaded
    got = wrn70.state_dict()
    for k in ("init_conv.weight", "layer.1.block.0.shortcut.weight", "layer.2.block.10.conv_1.weight",
              "batchnorm.running_var", "logits.weight", "mean", "std"):
        assert torch.equal(got[k], sd[k]), k
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = wrn70(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_wrn70_16_needs_three_channels():
    with pytest.raises(ValueError, match="in_channels"):
        build_model("wrn70_16", 1, 10)


# ----------------------------------------------------------------------------------------------
# robustbench_state_dict
# ----------------------------------------------------------------------------------------------
def test_robustbench_state_dict_unwraps_and_strips_prefix():
    t = torch.zeros(1)
    want = {"conv1.weight": t, "fc.bias": t}
    assert robustbench_state_dict(want) == want
    assert robustbench_state_dict({"state_dict": {"module.conv1.weight": t, "module.fc.bias": t}}) == want
    assert robustbench_state_dict({"model_state_dict": want, "epoch": 3}) == want
    # only a leading 'module.' is removed
    assert list(robustbench_state_dict({"module.a.module.b": t})) == ["a.module.b"]
    with pytest.raises(TypeError):
        robustbench_state_dict([t])
    with pytest.raises(TypeError):
        robustbench_state_dict({"last": {"a": t}, "epoch": 3})


# ----------------------------------------------------------------------------------------------
# MACs
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_count_macs_positive_for_every_registry_model(arch, request):
    if arch == "wrn70_16":
        model = request.getfixturevalue("wrn70")
    elif arch == "wrn34_10":
        model = request.getfixturevalue("wrn34")
    else:
        model = build_model(arch, 3, 10)
    assert count_macs(model, (3, 32, 32)) > 0


def test_count_macs_resnet18_cifar():
    assert count_macs(build_model("resnet18", 3, 10), (3, 32, 32)) == pytest.approx(0.56e9, rel=0.02)
