"""The teacher's soft-label cache: its logits for every clean training view, computed once per
(teacher, dataset split, augmentation) and shared by every trial.

RSLAD's teacher sees only clean augmented images, in eval mode, so its output depends only on
(image, crop offset, flip): a table of num_train x num_views x num_classes logits (fp16) replaces
the teacher's forward pass at every step. Methods that need the teacher on other inputs (IAD on x')
keep the live teacher for those.

The file carries the table's shape and sha256 digest in its safetensors metadata; a cache that is
unreadable, of another shape, or whose digest does not match is reported in one line and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..trial.config import TrialConfig, digest_dict, expand_user
from ..trial.data import VAL_SPLIT_SEED, Splits, all_views, apply_views, num_views
from ..trial.errors import SpecError
from ..trial.files import DIGEST_KEY, read_tensors, save_tensors
from ..trial.lazy import LazyModule
from ..trial.progress import bar

if TYPE_CHECKING:
    from torch import Tensor, nn

torch = LazyModule("torch")


def data_key(cfg: TrialConfig, splits: Splits) -> str:
    """What decides the cached table: the training images (dataset, subset, split) and their views."""
    d = {"dataset": cfg.dataset, "train_subset": cfg.train_subset, "val_size": cfg.val_size, "split_seed": VAL_SPLIT_SEED,
         "n_train": len(splits.train_x), "augment": splits.augment, "pad": splits.pad, "labelled": cfg.labelled}
    d = digest_dict(d)  # the keys of tables and cards' proxies made before `labelled` existed stay as they were
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def table_key(cfg: TrialConfig, splits: Splits) -> str:
    """The soft-label table's key: data_key, plus the images themselves (their sha256) and where they were read
    from: another data_dir, or the same folder holding other files, is another table."""
    d = {"data": data_key(cfg, splits), "images": images_digest(splits.train_x),
         "data_dir": str(expand_user("data_dir", cfg.data_dir).resolve()) if cfg.data_dir else None}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


_DIGESTS: dict[int, tuple] = {}


def images_digest(x: Tensor) -> str:
    """sha256 of the training images' bytes (once per tensor in a process: ~0.3 s for Fashion-MNIST's 60,000)."""
    held = _DIGESTS.get(id(x))
    if held is None or held[0]() is not x:
        digest = hashlib.sha256(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()
        held = _DIGESTS[id(x)] = (weakref.ref(x), digest)
    return held[1]


def cache_path(teacher_dir: str | Path, cfg: TrialConfig, splits: Splits) -> Path:
    return Path(teacher_dir) / f"soft-labels-{table_key(cfg, splits)}.safetensors"


def compute_soft_labels(teacher: nn.Module, splits: Splits, batch_size: int = 1000) -> Tensor:
    """Teacher logits, shape (num_train, num_views, num_classes), fp16, on the splits' device."""
    with torch.no_grad():  # (not a decorator: that would import torch with this module)
        x = splits.train_x
        dev = x.device
        dys, dxs, flips = all_views(splits.augment, splits.pad, dev)
        out = torch.empty(len(x), len(dys), splits.num_classes, dtype=torch.float16, device=dev)
        with bar(len(x) * len(dys), "soft-label cache", "img") as b:
            for v in range(len(dys)):
                for i in range(0, len(x), batch_size):
                    xb = x[i:i + batch_size]
                    if splits.augment != "none":
                        n = len(xb)
                        xb = apply_views(xb, dys[v].expand(n), dxs[v].expand(n), flips[v].expand(n), splits.pad)
                    out[i:i + batch_size, v] = teacher(xb).half()
                    b.update(len(xb))
        return out


def expected_shape(splits: Splits) -> tuple[int, int, int]:
    return len(splits.train_x), num_views(splits.augment, splits.pad), splits.num_classes


def read_cache(path: Path, splits: Splits) -> Tensor:
    """The table in `path`, checked: readable, its digest present and matching, the shape these splits need.
    Anything else is a SpecError whose `allowed` says what is wrong."""
    tensors, meta = read_tensors(path, "soft-label cache", str(splits.train_x.device))
    logits = tensors.get("logits")
    if DIGEST_KEY not in meta or logits is None:
        raise SpecError("soft-label cache", str(path), "carries no digest (written by an older version)")
    if tuple(logits.shape) != expected_shape(splits) or logits.dtype != torch.float16:
        raise SpecError("soft-label cache", str(path), f"holds a {tuple(logits.shape)} {logits.dtype} table where "
                        f"{expected_shape(splits)} float16 is needed")
    return logits


def load_or_build(teacher_dir: str | Path, teacher: nn.Module | None, cfg: TrialConfig, splits: Splits,
                  log: Callable[[str], None] | None = None) -> Tensor:
    """The cached table for this teacher and data; built (and written: temp file + rename) if missing or bad
    (a bad one is reported in one line, then replaced)."""
    path = cache_path(teacher_dir, cfg, splits)
    if path.is_file():
        try:
            return read_cache(path, splits)
        except SpecError as e:
            (log or print)(f"soft-label cache {path} {e.allowed}: rebuilding it")
    if teacher is None:
        raise FileNotFoundError(f"no usable soft-label cache at {path} and no teacher to build it")
    t0 = time.perf_counter()
    logits = compute_soft_labels(teacher.eval(), splits)
    shape = "x".join(map(str, logits.shape))
    save_tensors({"logits": logits}, path, {"shape": shape, "data_key": table_key(cfg, splits)})  # replaces a bad one
    if log:
        log(f"soft-label cache: {len(splits.train_x)} images x {num_views(splits.augment, splits.pad)} views "
            f"in {time.perf_counter() - t0:.1f}s -> {path}")
    return logits
