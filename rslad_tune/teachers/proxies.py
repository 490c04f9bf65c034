"""Teacher proxies: what one pass of a teacher over the student's images says before any student trains
(docs/teacher-proxies/predictions.md fixes them): `true_prob` (mean softmax probability of the true class),
`clean_acc`, `nll` (mean cross-entropy), `ece` (15 equal-width confidence bins) and `entropy` (mean, nats).
Eval mode, temperature 1, no augmentation.

`folder_proxies` caches them in a resolved teacher folder's card.json under `proxies` -> {data key: ...}, on the
student's training images and on the validation split; a teacher without a module or a table (the no-teacher
baseline) has none.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ..trial.config import TrialConfig
from ..trial.data import Splits, load_data, resolve_device
from ..trial.errors import SpecError
from ..trial.files import read_json, write_json
from ..trial.lazy import LazyModule
from .folders import read_card
from .soft_labels import data_key
from .resolved import ResolvedTeacher, Teachers
from .sources import read_teacher

if TYPE_CHECKING:
    from torch import Tensor, nn

torch = LazyModule("torch")


# each proxy -> whether a higher value is predicted to make the better student (predictions.md). entropy has no
# prediction: it is ranked highest first (the softest teacher), a convention, not a claim.
HIGHER_IS_BETTER = {"true_prob": True, "clean_acc": True, "nll": False, "ece": False, "entropy": True}
PROXIES = tuple(HIGHER_IS_BETTER)
ECE_BINS = 15


def check_proxy(by: object, key: str) -> str:
    if by not in PROXIES:
        raise SpecError(key, by, f"must be one of the proxies {', '.join(PROXIES)} (docs/teacher-proxies/predictions.md)")
    return by


def best_first(values: dict[str, float | None], by: str) -> list[str]:
    """The names, best first by proxy `by` in its predicted direction (ties keep their order); None last."""
    sign = -1 if HIGHER_IS_BETTER[by] else 1
    known = sorted((n for n, v in values.items() if v is not None), key=lambda n: sign * values[n])
    return known + [n for n, v in values.items() if v is None]


def teacher_proxies(teacher_or_table: nn.Module | Tensor, x: Tensor | None, y: Tensor, *, batch_size: int = 1000) -> dict:
    """The five proxies of a teacher module on images `x` (eval mode, no gradient), or of a precomputed logits
    table (n, classes) aligned with `y` (x unused). One pass, accumulated per batch in float64."""
    with torch.no_grad():  # (not a decorator: that would import torch with this module)
        is_table = isinstance(teacher_or_table, torch.Tensor)
        if not is_table:
            teacher_or_table.eval()
        n = len(y)
        sums = torch.zeros(4, dtype=torch.float64)  # true_prob, correct, nll, entropy
        bins = torch.zeros(3, ECE_BINS, dtype=torch.float64)  # count, sum of confidence, sum of correct
        edges = torch.linspace(0, 1, ECE_BINS + 1, dtype=torch.float64)[1:-1]
        for i in range(0, n, batch_size):
            yb = y[i:i + batch_size].long().cpu()
            out = teacher_or_table[i:i + batch_size] if is_table else teacher_or_table(x[i:i + batch_size])
            logp = torch.log_softmax(out.double().cpu(), 1)
            p = logp.exp()
            conf, pred = p.max(1)
            correct = (pred == yb).double()
            true_logp = logp.gather(1, yb[:, None])[:, 0]
            entropy = -(p * logp).nan_to_num().sum(1)  # 0 log 0 = 0
            sums += torch.stack([true_logp.exp().sum(), correct.sum(), -true_logp.sum(), entropy.sum()])
            b = torch.bucketize(conf, edges)  # bin b holds confidences in (b/15, (b+1)/15]
            for row, v in enumerate((torch.ones_like(conf), conf, correct)):
                bins[row].index_add_(0, b, v)
        mean = (sums / n).tolist()
        _, conf_sum, correct_sum = bins
        ece = ((conf_sum - correct_sum).abs().sum() / n).item()  # sum_b |B|/n |acc_b - conf_b|
        return {"true_prob": mean[0], "clean_acc": mean[1], "nll": mean[2], "ece": ece, "entropy": mean[3], "n": n}


def _on(teacher: ResolvedTeacher, model: nn.Module | None, trial: TrialConfig, splits: Splits, x: Tensor,
        y: Tensor) -> dict | None:
    """Proxies on (x, y): through the module, else the source's soft-label table of those images (its first view,
    the unaugmented one); None without either."""
    if model is not None:
        return teacher_proxies(model, x, y)
    # a table is of the training split: these images are made the training split, unaugmented
    view = dataclasses.replace(splits, train_x=x, train_y=y, augment="none")
    table = teacher.adapter.soft_labels(teacher.folder, teacher.saved, trial, view)
    return None if table is None else teacher_proxies(table[:, 0], None, y)


def folder_proxies(teacher: ResolvedTeacher | str | Path, trial: TrialConfig, splits: Splits | None = None,
                   log=None) -> dict | None:
    """{"training": proxies, "validation": proxies, "data": ...} of a resolved teacher (its record, or its folder) on
    the student's data (`trial`'s data keys): read from card.json, else computed once and written into it
    atomically. None: no teacher to measure."""
    if not isinstance(teacher, ResolvedTeacher):
        teacher = read_teacher(Path(teacher).name, teacher)
    folder, name = teacher.folder, teacher.name
    device = resolve_device(trial.device)
    splits = splits or load_data(trial, device)
    key = data_key(trial, splits)
    cached = read_card(folder).get("proxies", {})
    if key in cached:
        return cached[key]
    model = teacher.load(device)
    labelled = splits.only_labelled()  # with few labels, the proxies read the images that have one
    train = _on(teacher, model, trial, labelled, labelled.train_x, labelled.train_y)
    if train is None:
        return None
    entry = {"training": train, "validation": _on(teacher, model, trial, splits, splits.val_x, splits.val_y),
             "data": {"dataset": trial.dataset, "train_subset": trial.train_subset, "val_size": trial.val_size,
                      **({"labelled": trial.labelled} if trial.labelled is not None else {})}}
    card = read_card(folder)  # re-read: another command may have added its own data's entry meanwhile
    write_json(card | {"proxies": card.get("proxies", {}) | {key: entry}}, folder / "card.json")
    if log:
        log(f"teacher {name}: proxies on {train['n']} training images: "
            + ", ".join(f"{k} {train[k]:.4f}" for k in PROXIES))
    return entry


def all_proxies(teachers: Teachers, trial: TrialConfig, log=None) -> dict[str, dict | None]:
    """name -> folder_proxies of every resolved teacher, the data loaded once."""
    splits = load_data(trial, resolve_device(trial.device)) if teachers else None
    return {name: folder_proxies(teacher, trial, splits, log) for name, teacher in teachers.items()}
