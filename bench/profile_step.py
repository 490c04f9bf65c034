"""Where a trainer step's time goes: torch.profiler over `train_epoch` on a pair of bench.vs_authors.

    python -m bench.profile_step --pair mobilenet                    # as a trial runs (precision auto, folded attack)
    python -m bench.profile_step --pair cnn --precision fp32 --no-fold --cached

As a trial runs: `train_epoch` over the pair's training images (on-device augmentation: crop and flip for the
CIFAR-shaped pair), the soft-label cache with --cached. Per phase (the trainer's named ranges: data, teacher, attack,
forward, backward, optimizer) and per operator (self CPU time, the top `--ops`), over `--steps` profiled steps after
`--warmup`. Prints Markdown tables and one JSON line.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile

from bench.vs_authors import PAIRS, pair_config
from rslad_tune.trial import folding
from rslad_tune.trial.models import build_model
from rslad_tune.trial.precision import autocast_enabled
from rslad_tune.teachers.soft_labels import compute_soft_labels
from rslad_tune.trial.data import load_splits
from rslad_tune.trial.trainer import make_method, train_epoch

PHASES = ("data", "teacher", "attack", "forward", "backward", "optimizer")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", choices=sorted(PAIRS), default="cnn")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--no-fold", action="store_true", help="attack the student as it is (folding.FOLD off)")
    ap.add_argument("--cached", action="store_true", help="the teacher's logits from the soft-label cache")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ops", type=int, default=8)
    a = ap.parse_args(argv)
    folding.FOLD = not a.no_fold
    dataset, (s_arch, s_w), (t_arch, t_w), bs, _, _ = PAIRS[a.pair]
    n = bs * (a.steps + a.warmup) + 100
    try:
        splits = load_splits(dataset, train_subset=n, val_size=100, test_subset=10)
    except Exception as e:  # noqa: BLE001 - Fashion-MNIST not installed: the same shapes from the generator
        print(f"({dataset} not available: {e}; synthetic images of the same shape)")
        dataset = "synthetic"
        splits = load_splits(dataset, train_subset=n, val_size=100, test_subset=10)
    torch.manual_seed(0)
    student = build_model(s_arch, splits.in_channels, 10, s_w).to(memory_format=torch.channels_last)
    teacher = build_model(t_arch, splits.in_channels, 10, t_w).eval().requires_grad_(False)
    teacher = teacher.to(memory_format=torch.channels_last)
    cfg = pair_config(a.pair, a.precision)
    method = make_method(cfg)
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    table = compute_soft_labels(teacher, splits) if a.cached else None
    train_epoch(student, method, cfg, splits, opt, sched, teacher, table, max_batches=a.warmup)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(student, method, cfg, splits, opt, sched, teacher, table, max_batches=a.steps)  # syncs once
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    phases = {e.key: e.cpu_time_total for e in events if e.key in PHASES}
    phases["other"] = max(total - sum(phases.values()), 0)
    ops = sorted((e for e in events if e.key not in PHASES), key=lambda e: -e.self_cpu_time_total)[:a.ops]
    res = {"bench": "profile_step", "pair": a.pair, "dataset": dataset, "precision": a.precision,
           "bf16_autocast": autocast_enabled(cfg, torch.device("cpu")), "fold": folding.FOLD, "cached": a.cached,
           "steps": a.steps, "ms_per_step": round(total / 1e3 / a.steps, 1),
           "phases_ms_per_step": {k: round(v / 1e3 / a.steps, 1) for k, v in phases.items()},
           "top_ops_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / a.steps, 1) for e in ops}}
    setting = (f"{a.pair}, {a.precision}{' (bf16 autocast)' if res['bf16_autocast'] else ''}, "
               f"{'folded' if folding.FOLD else 'unfolded'} attack, {'cached' if a.cached else 'live'} teacher")
    print(f"### {setting}: {res['ms_per_step']} ms per step\n\n| phase | ms/step | share |\n|---|---|---|")
    for k, v in res["phases_ms_per_step"].items():
        print(f"| {k} | {v} | {100 * v / res['ms_per_step']:.0f} % |")
    print("\n| operator (self CPU) | ms/step | share |\n|---|---|---|")
    for k, v in res["top_ops_ms_per_step"].items():
        print(f"| `{k}` | {v} | {100 * v / res['ms_per_step']:.0f} % |")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
