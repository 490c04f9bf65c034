"""Datasets as whole tensors on the device, a fixed validation split, and on-device augmentation.

The datasets are DATASETS' records (datasets.Dataset: loader, image shape, classes, preflight, source folder).
Fashion-MNIST (offline default) and CIFAR-10/100 are read through torchvision's dataset
classes; `synthetic` (MNIST-shaped) and `synthetic_cifar` are seeded class-template images
for tests. Images are float32 in [0, 1], NCHW; no normalisation (RobustBench convention).
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .datasets import Dataset, cache_dir, default_root
from .errors import DataError, SpecError
from .lazy import LazyModule
from .registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
VAL_SPLIT_SEED = 1234  # the validation split is the same for every trial and teacher of every sweep
UNLABELLED = -1  # train_y of an image without a label (data.labelled): an index error in any loss that reads it


@dataclass
class Splits:
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: str  # "none" | "crop_flip" | "crop"
    pad: int  # crop padding
    # few labels (`data.labelled`): only the first `labelled` training images carry labels; train_y is UNLABELLED
    # after them, so that a loss that reads a label there fails loudly instead of learning from it
    labelled: int | None = None
    # images an epoch covers (None: the training images). only_labelled() keeps the whole split's count, so that
    # every arm of a few-label sweep takes the same number of steps per epoch (and ASHA compares like with like)
    epoch_images: int | None = None

    @property
    def images_per_epoch(self) -> int:
        return self.epoch_images or len(self.train_x)

    def only_labelled(self) -> "Splits":
        """The training images a method that needs labels may see: the first `labelled` (all of them without
        `data.labelled`), at the same number of images per epoch (several passes over them)."""
        if self.labelled is None:
            return self
        n = self.labelled
        return replace(self, train_x=self.train_x[:n], train_y=self.train_y[:n], labelled=None,
                       epoch_images=self.images_per_epoch)

    def with_labels(self, y_unlabelled: "Tensor") -> "Splits":
        """Every training image labelled: the true labels on the first `labelled`, `y_unlabelled` (e.g. a teacher's
        argmax) on the rest (robust self-training's pseudo-labels)."""
        if self.labelled is None:
            return self
        y = self.train_y.clone()
        y[self.labelled:] = y_unlabelled.to(y)
        return replace(self, train_y=y, labelled=None)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]


# --------------------------------------------------------------------------- Fashion-MNIST


def _fmnist_source(data_dir: str | None) -> Path | None:
    """A folder holding the four idx files (.gz or not), or a torchvision root; None -> download."""
    candidates = [Path(data_dir).expanduser()] if data_dir else [DEBIAN_FMNIST]
    for d in candidates:
        for sub in (d, d / "FashionMNIST" / "raw"):
            if all((sub / f).is_file() or (sub / f"{f}.gz").is_file() for f in FMNIST_FILES):
                return sub
    if data_dir:
        raise DataError(f"data_dir: {data_dir!r} holds no Fashion-MNIST; expected the four idx files "
                        f"({', '.join(f + '[.gz]' for f in FMNIST_FILES)}) there or in FashionMNIST/raw/")
    return None


IDX_RULE = "not an idx file of unsigned bytes whose header gives its length"


def _idx_ok(path: Path) -> bool:
    """An idx file (Fashion-MNIST's format) whose header agrees with its length: magic 0 0 8 <rank>, then rank
    big-endian sizes, then their product in bytes. Read without torch, so that a cut or foreign file is one line
    from the preflight, before torchvision reads it."""
    rank = 1 if "labels" in path.name else 3
    with open(path, "rb") as fin:
        head = fin.read(4 + 4 * rank)
    if len(head) != 4 + 4 * rank or head[:4] != bytes([0, 0, 8, rank]):
        return False
    return path.stat().st_size == len(head) + math.prod(struct.unpack(f">{rank}I", head[4:]))


def _unreadable(path: Path, why: str) -> DataError:
    return DataError(f"data_dir: {str(path)!r} cannot be read ({why}); replace it with an intact copy (the Debian "
                     "package dataset-fashion-mnist has one)")


def prepare_data(dataset: str, data_dir: str | None) -> None:
    """What the preflight checks of the data before torch is imported (the record's `prepare`): Fashion-MNIST's files
    unpacked and their headers read (a corrupt .gz is one line from a small process). CIFAR is checked by torchvision
    (md5)."""
    DATASETS[dataset].prepare(data_dir)


def prepare_fashion_mnist(data_dir: str | None = None) -> Path:
    """Return a torchvision root for FashionMNIST(root, download=False), unpacking Debian's .gz files once.

    torchvision reads only the uncompressed files from root/FashionMNIST/raw/; the unpacked copy
    lives in the rslad-tune cache (written to a temporary name, then renamed).
    """
    src = _fmnist_source(data_dir)
    if src is None:  # torchvision's download (needs the internet)
        root = cache_dir() / "torchvision"
        return root
    if all((src / f).is_file() for f in FMNIST_FILES) and src.name == "raw":
        for f in FMNIST_FILES:
            if not _idx_ok(src / f):
                raise _unreadable(src / f, IDX_RULE)
        return src.parent.parent
    root = cache_dir() / "fashion-mnist" / hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in FMNIST_FILES:
        out = raw / f
        if out.is_file() and _idx_ok(out):  # unpacked and checked before (a cut copy is unpacked again)
            continue
        tmp = raw / f".{f}.{os.getpid()}.tmp"
        try:
            if (src / f).is_file():
                shutil.copyfile(src / f, tmp)
            else:
                with gzip.open(src / f"{f}.gz", "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
            if not _idx_ok(tmp):
                raise OSError(IDX_RULE)
        except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz (BadGzipFile is an OSError)
            tmp.unlink(missing_ok=True)  # nothing half-written left in the cache
            name = f if (src / f).is_file() else f"{f}.gz"
            raise _unreadable(src / name, f"{type(e).__name__}: {str(e)[:80]}") from None
        os.replace(tmp, out)
    return root


def _load_fashion_mnist(data_dir: str | None) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    from torchvision.datasets import FashionMNIST

    root = prepare_fashion_mnist(data_dir)
    download = _fmnist_source(data_dir) is None
    try:
        tr = FashionMNIST(str(root), train=True, download=download)
        te = FashionMNIST(str(root), train=False, download=download)
    except Exception as e:  # offline download failure, corrupt file
        raise DataError(f"data_dir: {data_dir!r}: Fashion-MNIST could not be loaded ({type(e).__name__}: {str(e)[:120]}); "
                        "install the Debian package dataset-fashion-mnist or pass --data-dir") from None
    return tr.data.unsqueeze(1), tr.targets, te.data.unsqueeze(1), te.targets, 10


# --------------------------------------------------------------------------- CIFAR


def _load_cifar(name: str, data_dir: str | None) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, n = (CIFAR10, 10) if name == "cifar10" else (CIFAR100, 100)
    root = default_root(data_dir)
    try:  # a given data_dir is used as it is; without one, torchvision downloads (checks md5)
        tr = cls(str(root), train=True, download=data_dir is None)
        te = cls(str(root), train=False, download=data_dir is None)
    except Exception as e:
        raise DataError(f"data_dir: {str(root)!r}: {name} could not be loaded ({type(e).__name__}: {str(e)[:120]}); "
                        f"place torchvision's {cls.base_folder}/ there or run once with internet access") from None

    def to_tensors(ds):
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    return (*to_tensors(tr), *to_tensors(te), n)


# --------------------------------------------------------------------------- synthetic


def synthetic(shape: tuple[int, int, int], n_train: int, n_test: int, num_classes: int = 10, seed: int = 0):
    """Class templates plus noise: learnable in a few steps, deterministic from the seed.

    Templates are coarse (4x4-pixel blocks) so that they survive a CNN's pooling."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(num_classes, c, -(-h // 4), -(-w // 4), generator=g)
    templates = coarse.repeat_interleave(4, 2).repeat_interleave(4, 3)[:, :, :h, :w]

    def draw(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = 0.5 * templates[y] + 0.5 * torch.rand(n, *shape, generator=g)
        return (x * 255).round().to(torch.uint8), y

    return (*draw(n_train), *draw(n_test), num_classes)


def _synthetic(name: str, shape: tuple[int, int, int]) -> Dataset:
    def load(data_dir, train_subset, test_subset):
        return synthetic(shape, train_subset or 2000, test_subset or 500)
    return Dataset(name, load, shape, 10, "crop_flip" if shape[0] == 3 else "none", "rslad_tune.trial.data.synthetic")


def _cifar(name: str, num_classes: int) -> Dataset:
    return Dataset(name, lambda data_dir, train_subset, test_subset: _load_cifar(name, data_dir), (3, 32, 32),
                   num_classes, "crop_flip")


def _fmnist_files(data_dir: str | None) -> str | None:
    src = _fmnist_source(data_dir)
    return None if src is None else str(src.resolve())


# --------------------------------------------------------------------------- the registry

# dataset name -> its record (datasets.Dataset), or "package.module:RECORD" imported at its first use: the one list
# of dataset names (the YAML's data.dataset is checked against it when it is read, so later entries count too)
DATASETS: Registry = Registry("dataset")
DATASETS.register(Dataset("fashion_mnist", lambda data_dir, train_subset, test_subset: _load_fashion_mnist(data_dir),
                          (1, 28, 28), 10, prepare=prepare_fashion_mnist, files=_fmnist_files))
DATASETS.register(_cifar("cifar10", 10))
DATASETS.register(_cifar("cifar100", 100))
DATASETS.register(_synthetic("synthetic", (1, 28, 28)))
DATASETS.register(_synthetic("synthetic_cifar", (3, 32, 32)))
LOADERS = DATASETS  # its former name
# the augmentations sample_views knows; "default" is crop_flip for CIFAR-like images, none otherwise
AUGMENTS = ("default", "none", "crop_flip", "crop")


def load_splits(dataset: str, *, data_dir: str | None = None, train_subset: int | None = None,
                test_subset: int | None = None, val_size: int = 1000, augment: str = "default",
                labelled: int | None = None, device: torch.device | str = "cpu") -> Splits:
    record = DATASETS[dataset]  # an unknown name is one SpecError line
    if augment not in AUGMENTS:
        raise DataError(f"augment: {augment!r} is not known; allowed: {', '.join(AUGMENTS)}")
    train_x, train_y, test_x, test_y, num_classes = record.loader(data_dir, train_subset, test_subset)
    if (tuple(train_x.shape[1:]), num_classes) != (record.shape, record.num_classes):
        raise DataError(f"dataset: {dataset!r} loaded {num_classes} classes of {tuple(train_x.shape[1:])} images; its record "
                        f"says {record.num_classes} of {record.shape}")
    if train_subset is not None:
        train_x, train_y = train_x[:train_subset], train_y[:train_subset]
    if test_subset is not None:
        test_x, test_y = test_x[:test_subset], test_y[:test_subset]
    if val_size >= len(train_x):
        raise DataError(f"val_size: {val_size} is not allowed; must be smaller than the {len(train_x)} training images")
    if labelled is not None and labelled > len(train_x) - val_size:
        raise DataError(f"labelled: {labelled} is not allowed; must be at most the {len(train_x) - val_size} training "
                        f"images left after val_size {val_size} is held out")
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    val_idx, tr_idx = perm[:val_size], perm[val_size:]
    if labelled is not None:  # the first `labelled` images after the validation split keep their labels
        train_y = train_y.clone()
        train_y[tr_idx[labelled:]] = UNLABELLED
    if augment == "default":
        augment = record.augment
    pad = 4 if train_x.shape[-1] >= 32 else 2

    def dev(x):
        return x.to(device)

    def img(x):  # uint8 -> float in [0, 1] on the device (convert after the copy: 4x less traffic)
        return dev(x).float().div_(255)

    return Splits(img(train_x[tr_idx]), dev(train_y[tr_idx]), img(train_x[val_idx]), dev(train_y[val_idx]),
                  img(test_x), dev(test_y), num_classes, augment, pad, labelled)


# --------------------------------------------------------------------------- augmentation on the device


def sample_views(n: int, augment: str, pad: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """One random view per image: crop offsets (dy, dx) in [0, 2*pad] and a flip flag."""
    zeros = torch.zeros(n, dtype=torch.long, device=device)
    if augment == "none":
        return zeros + pad, zeros + pad, zeros.bool()
    dy = torch.randint(0, 2 * pad + 1, (n,), device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=device)
    flip = torch.rand(n, device=device) < 0.5 if augment == "crop_flip" else zeros.bool()
    return dy, dx, flip


def num_views(augment: str, pad: int) -> int:
    """How many distinct views an image has: every crop offset x flip (1 without augmentation)."""
    if augment == "none":
        return 1
    return (2 * pad + 1) ** 2 * (2 if augment == "crop_flip" else 1)


def view_ids(dy: Tensor, dx: Tensor, flip: Tensor, augment: str, pad: int) -> Tensor:
    """The index of each (dy, dx, flip) view in [0, num_views): the soft-label cache's second axis."""
    if augment == "none":
        return torch.zeros_like(dy)
    crop = dy * (2 * pad + 1) + dx
    return crop * 2 + flip.long() if augment == "crop_flip" else crop


def all_views(augment: str, pad: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """(dy, dx, flip) of every view, in view-id order."""
    if augment == "none":
        centre = torch.full((1,), pad, dtype=torch.long, device=device)
        return centre, centre.clone(), torch.zeros(1, dtype=torch.bool, device=device)
    v = torch.arange(num_views(augment, pad), device=device)
    flips = 2 if augment == "crop_flip" else 1
    crop, flip = v // flips, (v % flips).bool()
    return crop // (2 * pad + 1), crop % (2 * pad + 1), flip


def apply_views(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, pad: int) -> Tensor:
    """Zero-pad, crop each image at its own offset, flip where asked: gathers, no Python per image."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 2 * pad)
    out = xp.gather(2, rows)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :].expand(n, c, h, w)
    return out.gather(3, cols)


# --------------------------------------------------------------------------- a trial's data and device

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("device", name, "no CUDA device is visible here (use auto or cpu)")
    return torch.device(name)


def data_source(dataset: str, data_dir: str | None) -> str | None:
    """The folder a dataset's files are read from (None: generated in memory, the synthetic sets): its record's."""
    return DATASETS[dataset].source(data_dir)


def load_data(cfg, device: torch.device) -> Splits:
    """The splits a TrialConfig names (its data keys), on `device`."""
    return load_splits(cfg.dataset, data_dir=cfg.data_dir, train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                       val_size=cfg.val_size, augment=cfg.augment, labelled=cfg.labelled, device=device)
