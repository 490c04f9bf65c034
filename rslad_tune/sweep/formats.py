"""The exported student in the formats other tools load, written beside model.safetensors:

    model.pt     TorchScript (`torch.jit.trace` of the eval-mode student; `torch.jit.load`, no Python class needed)
    model.onnx   ONNX, opset 18, input `images` N x C x H x W in [0, 1] with a dynamic batch axis, output `logits`
                 (torch.onnx's exporter; needs onnx and onnxscript, default dependencies; onnxruntime, in the `[onnx]` extra, runs it)

Both are traced from the eval-mode student on CPU (the model passed is moved there) on an example batch of two
or more images.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..trial.files import save_atomic
from ..trial.lazy import LazyModule

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")


ONNX_OPSET = 18  # torch.onnx's own opset: a lower one is a lossy conversion step
ONNX_MODULES = ("onnx", "onnxscript")  # what torch.onnx.export needs (onnxruntime only runs the file)
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def _cpu_eval(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    return model.cpu().eval(), example.detach().cpu().float()


def to_torchscript(model: nn.Module, example: torch.Tensor, path: Path | None = None) -> torch.jit.ScriptModule:
    """The student traced into TorchScript (saved to `path` with torch.jit.save when given)."""
    model, example = _cpu_eval(model, example)
    with warnings.catch_warnings():  # torch.jit is deprecated upstream in favour of torch.export; it still works
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        traced = torch.jit.trace(model, example)
        if path is not None:
            save_atomic(lambda p: torch.jit.save(traced, p), Path(path))
    return traced


def onnx_missing() -> list[str]:
    """The modules torch.onnx.export needs that are not installed ([] when ONNX export can run)."""
    return [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The student as one ONNX file (weights inside), batch axis dynamic. `example` needs a batch of 2 or more:
    torch.export fixes an axis whose example size is 1."""
    model, example = _cpu_eval(model, example)
    batch = torch.export.Dim("batch")

    def write(p: str) -> None:
        torch.onnx.export(model, (example,), p, dynamo=True, opset_version=ONNX_OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), external_data=False, verbose=False)

    save_atomic(write, Path(path))


def write_formats(model: nn.Module, example: torch.Tensor, folder: Path,
                  log: Callable[[str], None] = print) -> list[str]:
    """model.pt, and model.onnx when its modules are installed, in `folder`. A file not written is one line saying
    why (a module missing, or a conversion that failed). Returns the names of the files written."""
    folder, written = Path(folder), []
    missing = onnx_missing()
    if missing:
        log(f"model.onnx skipped: {', '.join(missing)} not installed (pip install 'rslad-tune[onnx]')")
    for name, convert in (("model.pt", to_torchscript), ("model.onnx", None if missing else to_onnx)):
        try:
            if convert is not None:
                convert(model, example, folder / name)
                written.append(name)
        except Exception as e:  # a conversion the architecture does not support: the safetensors export stands
            why = (str(e).strip().splitlines() or [""])[0][:150]
            log(f"{name} skipped: {convert.__name__} failed: {type(e).__name__}: {why}")
    return written
