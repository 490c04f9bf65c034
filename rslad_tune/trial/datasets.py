"""A dataset's record (`Dataset`): everything the package asks of a dataset, so that nothing else names one.

Adding a dataset = a module with its loader and its record, and one line in data.py's registry:

    # my_package/svhn.py
    def load(data_dir, train_subset, test_subset):  # -> train_x, train_y, test_x, test_y, num_classes
        ...                                         # uint8 NCHW images, integer labels (torch tensors)
    SVHN = Dataset("svhn", load, shape=(3, 32, 32), num_classes=10, augment="crop_flip")

    DATASETS.register("svhn", "my_package.svhn:SVHN")  # data.py: imported at its first use

Bottom level: the stdlib only (no torch: the preflight reads a record before torch is imported).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    return Path(os.environ.get("RSLAD_TUNE_CACHE", Path.home() / ".cache" / "rslad-tune"))


def default_root(data_dir: str | None) -> Path:
    """A dataset's folder: `data_dir` as given, else torchvision's download folder in the rslad-tune cache."""
    return Path(data_dir).expanduser() if data_dir else cache_dir() / "torchvision"


def _nothing_to_prepare(data_dir: str | None) -> None:
    return None


@dataclass(frozen=True)
class Dataset:
    name: str
    # (data_dir, train_subset, test_subset) -> (train_x, train_y, test_x, test_y, num_classes): uint8 NCHW images
    # in [0, 255], integer labels; the subsets are cut after it (a loader may read fewer images when given them)
    loader: Callable[[str | None, int | None, int | None], tuple]
    shape: tuple[int, int, int]  # one image: (channels, height, width)
    num_classes: int
    augment: str = "none"  # what `augment: default` means for it: crop_flip for CIFAR-like images
    # the code that generates it in memory (no files; MLflow records it as a code source), None: read from files
    generated_by: str | None = None
    # the preflight's check of its files (data_dir) before torch is imported: e.g. unpack and read their headers
    prepare: Callable[[str | None], Any] = _nothing_to_prepare
    # where its files are read from, resolved, or None for default_root (its loader's folder)
    files: Callable[[str | None], str | None] | None = None

    def source(self, data_dir: str | None) -> str | None:
        """The folder its files are read from, resolved; None for data generated in memory."""
        if self.generated_by:
            return None
        return (self.files and self.files(data_dir)) or str(default_root(data_dir).resolve())

    @property
    def code_source(self) -> dict[str, str] | None:
        """What MLflow's code source records of a generated dataset (None: it has files, `source`)."""
        return {"generator": self.generated_by, "dataset": self.name} if self.generated_by else None
