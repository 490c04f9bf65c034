"""Model registry: one name -> one constructor taking (in_channels, num_classes, **settings).

Adding an architecture = its module (a constructor taking in_channels, num_classes and its settings) and one line
`REGISTRY.register("name", Arch("package.module:Class", ("width",)))`: its settings (trial keys that are also
config.json keys; `width` is the one the YAML has) are passed by name wherever it is built, saved or rebuilt.
RobustBench-style: every model takes inputs in [0, 1] and does no normalisation unless
its definition says so.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ..lazy import LazyModule, resolve
from ..registry import Registry

torch = LazyModule("torch")
nn = LazyModule("torch.nn")


class Arch(NamedTuple):
    """A registry entry: where its constructor lives ("module:attr", imported on first use) and the settings it
    takes by keyword besides in_channels and num_classes (a setting left None is not passed: its default)."""
    location: str
    settings: tuple[str, ...] = ()


# name -> Arch. The registry is torch-free: config checks names and settings without importing a model;
# build_model imports the constructor on first use.
REGISTRY: Registry = Registry("arch")
REGISTRY.register("small_cnn", Arch("rslad_tune.trial.models.cnn:SmallCNN", ("width",)))
REGISTRY.register("resnet18", Arch("rslad_tune.trial.models.resnet:ResNet18"))
REGISTRY.register("mobilenet_v2", Arch("rslad_tune.trial.models.mobilenetv2:MobileNetV2"))
# RobustBench WideResNet-34-10 (TRADES layout), ~46.2 M params
REGISTRY.register("wrn34_10", Arch("rslad_tune.trial.models.wideresnet:WRN34_10"))
# RobustBench DMWideResNet-70-16 (Swish, CIFAR-10 norm inside), ~266.8 M
REGISTRY.register("wrn70_16", Arch("rslad_tune.trial.models.wideresnet:WRN70_16"))


def build_model(arch: str, in_channels: int, num_classes: int, width: int | None = None, **settings: Any) -> nn.Module:
    """`arch` built with the settings it declares (`width` and any other by keyword); a setting it does not
    declare, or None, is not passed. An unknown arch is one SpecError line."""
    entry = REGISTRY[arch]
    given = {"width": width, **settings}
    chosen = {k: given[k] for k in entry.settings if given.get(k) is not None}
    return resolve(entry.location)(in_channels=in_channels, num_classes=num_classes, **chosen)


def model_config(arch: str, width: int | None, in_channels: int, num_classes: int, image_size: int,
                 **settings: Any) -> dict:
    """What a saved model's config.json holds to rebuild it (build_from_config): `width` always (None where the
    arch has none), then any other setting the arch declares (from `settings`)."""
    others = {k: settings.get(k) for k in REGISTRY[arch].settings if k != "width"}
    return {"arch": arch, "width": width, **others, "in_channels": in_channels, "num_classes": num_classes,
            "image_size": image_size, "input_range": [0.0, 1.0]}


def build_from_config(cfg: dict) -> nn.Module:
    """The one way to rebuild a model from its saved config (model_config; extra keys are ignored)."""
    settings = {k: cfg.get(k) for k in REGISTRY[cfg["arch"]].settings}
    return build_model(cfg["arch"], cfg["in_channels"], cfg["num_classes"], **settings)


def robustbench_state_dict(obj) -> dict:
    """A clean state dict from what `torch.load(path, weights_only=True)` returns for a RobustBench
    checkpoint: a raw state dict, or one under 'state_dict' / 'model_state_dict', with or without the
    'module.' prefix DataParallel adds (stripped from the front of each key only, unlike RobustBench's
    own `rm_substr_from_state_dict`, which cuts the first 7 characters of any key containing it)."""
    if not isinstance(obj, dict):
        raise TypeError(f"a RobustBench checkpoint is a dict of tensors, got {type(obj).__name__}")
    for key in ("state_dict", "model_state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"checkpoint entry {k!r} is a {type(v).__name__}, not a tensor: not a state dict")
        out[k.removeprefix("module.")] = v
    return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward multiply-accumulates of one image (conv and linear layers), counted with hooks."""
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs += out[0].numel() * k

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal macs
        macs += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return macs
