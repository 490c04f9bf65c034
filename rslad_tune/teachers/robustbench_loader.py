"""RobustBench teachers, loaded by RobustBench's own loader (`robustbench.utils.load_model`).

The loader reads `{model_dir}/{dataset}/{threat_model}/{name}.pt` and downloads it from Google
Drive only when it is missing, so a pre-placed file works offline. RobustBench is an optional
extra (`pip install "rslad-tune[robustbench]"`); its 1.1.1 release needs two import shims here:
its code imports `autoattack` while it depends on `pyautoattack` (the same official code under
a new name), and it imports `pkg_resources`, which setuptools >= 82 no longer ships (only its
ImageNet folder loader uses it, never the model loader).
"""
from __future__ import annotations

import difflib
import importlib.resources
import importlib.util
import os
import socket
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

from ..trial.errors import SpecError

if TYPE_CHECKING:
    from torch import nn


# RobustBench dataset -> the data.dataset values whose images it takes (3x32x32 in [0, 1])
DATASETS = {"cifar10": ("cifar10", "synthetic_cifar"), "cifar100": ("cifar100",)}
THREAT_MODELS = ("Linf", "L2", "corruptions")
DEFAULT_MODEL_DIR = "models"  # RobustBench's own default, relative to the working directory
DOWNLOAD_HOST = ("drive.google.com", 443)


def _install_shims() -> None:
    if "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None:
        import pyautoattack
        import pyautoattack.state
        sys.modules["autoattack"] = pyautoattack
        sys.modules["autoattack.state"] = pyautoattack.state
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, name: str(importlib.resources.files(pkg) / name)
        sys.modules["pkg_resources"] = shim


def robustbench(label: str = "robustbench"):
    """The RobustBench modules (load_model, model zoo, enums); a SpecError when the extra is missing."""
    try:
        _install_shims()
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
        from robustbench.utils import load_model
    except ImportError as e:
        raise SpecError(label, None, f"needs the robustbench package: pip install \"rslad-tune[robustbench]\" ({e})") from None
    return types.SimpleNamespace(load_model=load_model, zoo=model_dicts, Dataset=BenchmarkDataset, Threat=ThreatModel)


def default_dataset(data_dataset: str) -> str | None:
    return next((rb for rb, ours in DATASETS.items() if data_dataset in ours), None)


def check_entry(label: str, name: str, dataset: str, threat_model: str) -> None:
    """The model must be in RobustBench's zoo for that dataset and threat model (did-you-mean when not)."""
    rb = robustbench(label)
    zoo = rb.zoo[rb.Dataset(dataset)][rb.Threat(threat_model)]
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"{len(zoo)} names, e.g. {', '.join(list(zoo)[:3])}"
        raise SpecError(label, name, f"is not a RobustBench {dataset} {threat_model} model ({hint})")


def checkpoint_path(model_dir: str | Path, dataset: str, threat_model: str, name: str) -> Path:
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def can_download() -> bool:
    """False when RSLAD_TUNE_OFFLINE is set or RobustBench's download host is unreachable."""
    if os.environ.get("RSLAD_TUNE_OFFLINE", "") not in ("", "0"):
        return False
    try:
        socket.create_connection(DOWNLOAD_HOST, timeout=3).close()
        return True
    except OSError:
        return False


def load(name: str, model_dir: str | Path, dataset: str, threat_model: str, label: str) -> nn.Module:
    """RobustBench's loader on a file that is known to hold plain weights (checked by the caller)."""
    rb = robustbench(label)
    try:
        model = rb.load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    except Exception as e:  # the loader raises bare RuntimeError/KeyError/download errors alike
        path = checkpoint_path(model_dir, dataset, threat_model, name)
        raise SpecError(label, name, f"RobustBench could not load {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    return model.eval()
