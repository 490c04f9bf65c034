"""`tune: {prescreen: {by: PROXY, keep: K}}`: a sweep's searched teachers narrowed, before any trial, to the K best
by a teacher proxy (teachers/proxies.py, one pass of each teacher on the student's training images), in the
direction docs/teacher-proxies/predictions.md predicts. The students of the dropped teachers are never trained.

The references -- the no-teacher baseline and the label teacher (a source's `control`) -- are always kept and do
not count toward K: every teacher's students are measured against theirs, so dropping them would leave the
selection report nothing to compare with.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..teachers.proxies import HIGHER_IS_BETTER, PROXIES, best_first
from .spec import SweepSpec

if TYPE_CHECKING:
    from ..teachers.resolved import Teachers


def top_k(values: dict[str, float | None], by: str, keep: int, controls: set[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped), each in the given order: the `keep` best teachers by `by` (a teacher without the proxy
    comes last) and every control."""
    best = set(best_first({n: v for n, v in values.items() if n not in controls}, by)[:keep])
    kept = [n for n in values if n in best or n in controls]
    return kept, [n for n in values if n not in kept]


def prescreen(spec: SweepSpec, teachers: Teachers, proxies: dict[str, dict | None],
              log: Callable[[str], None]) -> dict | None:
    """Narrow spec.search["teacher"] and `teachers` (in place) to the kept teachers; log one line naming the
    dropped ones with their values. Returns the record for sweep.json and MLflow (None: no prescreen asked)."""
    by, keep, d = spec.tune.prescreen_by, spec.tune.prescreen_keep, spec.search.get("teacher")
    if keep is None or d is None or not teachers:
        return None
    train = {n: (proxies.get(n) or {}).get("training") for n in d.args}
    controls = {n for n in d.args if teachers[n].control}
    kept, dropped = top_k({n: (p or {}).get(by) for n, p in train.items()}, by, keep, controls)
    d.args = kept
    for n in dropped:
        teachers.pop(n, None)
    values = ", ".join(f"{n} ({by} " + ("–" if train[n] is None else f"{train[n][by]:.4f}") + ")" for n in dropped)
    log(f"prescreen by {by} ({'higher' if HIGHER_IS_BETTER[by] else 'lower'} is better), keep {keep}: "
        f"dropped {values or 'none'}; kept {', '.join(kept)}" + (f" ({', '.join(sorted(controls))}: reference, "
                                                                  "always kept)" if controls else ""))
    return {"by": by, "keep": keep, "kept": kept, "dropped": dropped,
            "teachers": {n: {"kept": n in kept, "control": n in controls,
                             **{k: (p or {}).get(k) for k in PROXIES}} for n, p in train.items()}}
