"""One way to score a checkpoint: the accuracy of a model under a protocol -- a column of the suite (Clean,
FGSM, PGD_SAT, PGD_TRADES, CW_inf, AA) or a trial's own PGD -- on the first n test images with an attack seed.

Every command that scores a finished model (train, export, compare, report, evaluate, teacher cards) calls `score`. Each number
is cached under its protocol key in a JSON file beside the weights, together with the weights' digest: a
number computed once is read back by every later command, and recomputed only when the weights changed.
Each column reseeds the RNG with `seed` (robustness.evaluate_suite), so a cached column equals the same
column computed inside any other set.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .files import read_json, write_json
from .lazy import LazyModule
from .robustness import COLUMNS, evaluate_suite, pgd_accuracy

if TYPE_CHECKING:
    from torch import Tensor

nn = LazyModule("torch.nn")


Log = Callable[[str], None] | None


def pgd_column(eps: float, steps: int, step_size: float) -> str:
    """A trial's own validation PGD as a column: the suite's PGD_SAT when it is PGD-20 at step eps/4."""
    return "PGD_SAT" if steps == 20 and math.isclose(step_size, eps / 4) else f"PGD-{steps}@{step_size:.6g}"


BATCH = 500  # images per attack batch: the random starts are drawn per batch, so another size is another protocol


def protocol_key(column: str, eps: float, n: int, seed: int, batch_size: int = BATCH) -> str:
    return f"{column}|eps={eps:.6g}|n={n}|seed={seed}" + (f"|batch={batch_size}" if batch_size != BATCH else "")


def _compute(model: nn.Module, x: Tensor, y: Tensor, eps: float, column: str, seed: int, log: Log,
             batch_size: int = BATCH) -> float:
    """One column, computed (the only place that runs attacks for a score)."""
    if column in COLUMNS:
        return evaluate_suite(model, x, y, eps, attacks=[column], n_aa=len(x), seed=seed, batch_size=batch_size,
                              progress=log)[column]
    import torch

    steps, step = column.removeprefix("PGD-").split("@")
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return pgd_accuracy(model, x, y, eps, float(step), int(steps), batch_size=batch_size,
                            desc=column if log else None)


def score(model: nn.Module | Callable[[], nn.Module], x: Tensor, y: Tensor, eps: float, columns: Sequence[str], *,
          seed: int = 0, n_aa: int | None = None, cache: str | Path | None = None, digest: str | None = None,
          batch_size: int = BATCH, log: Log = None) -> dict[str, float]:
    """{column: accuracy} on (x, y) (AutoAttack on the first `n_aa`), each read from `cache` when it holds that
    protocol for weights of this `digest`, else computed and added. `model` may be a function that loads it
    (called only when something must be computed)."""
    store = _read(cache, digest)
    out, loaded = {}, None
    for col in columns:
        n = len(x) if col != "AA" or n_aa is None else min(n_aa, len(x))
        if n <= 0:
            continue
        key = protocol_key(col, eps, n, seed, batch_size)
        if key in store["scores"]:
            out[col] = store["scores"][key]
            continue
        if loaded is None:
            loaded = model() if callable(model) and not isinstance(model, nn.Module) else model
        t0 = time.perf_counter()
        out[col] = _compute(loaded, x[:n], y[:n], eps, col, seed, log, batch_size)
        store["scores"][key] = out[col]
        store["seconds"][key] = round(time.perf_counter() - t0, 1)
        if cache is not None:  # written after each column: an interrupted scoring keeps what it computed
            write_json(store, Path(cache))
    return out


def _read(cache: str | Path | None, digest: str | None) -> dict:
    empty = {"weights_sha256": digest, "scores": {}, "seconds": {}}
    if cache is None or not Path(cache).is_file():
        return empty
    try:
        store = read_json(Path(cache))
    except Exception:  # an unreadable cache is recomputed, never trusted
        return empty
    ok = isinstance(store, dict) and store.get("weights_sha256") == digest and isinstance(store.get("scores"), dict)
    return store | {"seconds": store.get("seconds") or {}} if ok else empty
