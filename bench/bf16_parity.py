"""Robustness parity of CPU bf16 autocast: students trained in fp32 and in bf16 with the same seeds
(results/bf16_parity/run.sh, search_spaces/bf16_parity.yaml), scored on all 10,000 test images.

    python -m bench.bf16_parity results/bf16_parity        # prints the table; --out FILE writes it (Markdown)

Per checkpoint (best by validation PGD-20, and last): each precision's mean ± 95 % t-interval over the seeds,
and bf16 - fp32 paired by seed with its 95 % t-interval, p-value and the smallest difference detectable
at 80 % power (sweep/stats.py). Parity holds when that interval lies within ± 1 point of PGD-20.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from rslad_tune.sweep.stats import mean_interval, paired_difference

PARITY_POINTS = 1.0  # the margin: an interval of bf16 - fp32 inside ± 1 point of test PGD-20 is parity


def read(folder: Path) -> dict[str, dict[int, dict]]:
    """precision -> seed -> test_metrics.json of the finished runs."""
    out: dict[str, dict[int, dict]] = {}
    for f in sorted(folder.glob("*-seed*/test_metrics.json")):
        m = re.fullmatch(r"(\w+)-seed(\d+)", f.parent.name)
        out.setdefault(m.group(1), {})[int(m.group(2))] = json.loads(f.read_text())
    return out


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def table(runs: dict[str, dict[int, dict]]) -> tuple[str, dict]:
    rows, res = [], {}
    for ckpt in ("best", "last"):
        for metric, label in (("test_pgd_acc", "PGD-20"), ("test_clean_acc", "clean")):
            arms = {p: {s: 100 * r[ckpt][metric] for s, r in runs.get(p, {}).items()} for p in ("fp32", "bf16")}
            means = {p: mean_interval(list(v.values())) for p, v in arms.items()}
            d = paired_difference(arms["bf16"], arms["fp32"])
            lo, hi = (d.diff - d.halfwidth, d.diff + d.halfwidth) if d.halfwidth is not None else (None, None)
            res[f"{ckpt}_{label}"] = {"fp32": arms["fp32"], "bf16": arms["bf16"], "diff": d.diff, "low": lo, "high": hi,
                                      "p": d.pvalue, "mdd": d.mdd, "n": d.n}

            def fmt(m):
                return f"{m.mean:.2f} ± {m.halfwidth:.2f}" if m.halfwidth is not None else "–"

            inside = lo is not None and -PARITY_POINTS <= lo and hi <= PARITY_POINTS
            rows.append(f"| {ckpt} | {label} | {fmt(means['fp32'])} | {fmt(means['bf16'])} | "
                        + (f"{d.diff:+.2f} ({lo:+.2f} to {hi:+.2f}) | {_num(d.pvalue)} | {_num(d.mdd)} | "
                           f"{'yes' if inside else 'no'} |" if lo is not None else "– | – | – | – |"))
    head = ("| checkpoint | test metric (%) | fp32 | bf16 | bf16 − fp32 (95 % t-interval) | p | smallest detectable | "
            f"inside ± {PARITY_POINTS:g} |\n|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(rows), res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path, help="write the Markdown table and the per-seed numbers here")
    a = ap.parse_args(argv)
    runs = read(a.folder)
    text, res = table(runs)
    seeds = {p: sorted(v) for p, v in runs.items()}
    per_seed = "\n".join(f"- {k}: " + ", ".join(f"seed {s}: fp32 {v['fp32'].get(s, float('nan')):.2f}, "
                                               f"bf16 {v['bf16'].get(s, float('nan')):.2f}" for s in sorted(v["fp32"]))
                         for k, v in res.items())
    print(text)
    print(f"\nseeds: {seeds}\n{per_seed}")
    if a.out:
        a.out.write_text(f"{text}\n\nPer seed (test %, all 10,000 test images):\n\n{per_seed}\n")
    return res


if __name__ == "__main__":
    main()
