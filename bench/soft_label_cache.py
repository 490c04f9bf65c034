"""RSLAD epoch time with the soft-label cache against the same trial with a live teacher.

    python -m bench.soft_label_cache [--dataset fashion_mnist] [--teacher-width 24] [--student-width 16] [--threads 1]

Same student, teacher, data, seed and batches; prints one table and one JSON line. The teacher is a
freshly initialised small CNN: its weights do not change the cost of a forward pass.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from rslad_tune.teachers import soft_labels
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.data import load_data, num_views
from rslad_tune.trial.models import build_model
from rslad_tune.trial.trainer import train_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--teacher-width", type=int, default=24)
    ap.add_argument("--student-width", type=int, default=16)
    ap.add_argument("--attack-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = TrialConfig(dataset=a.dataset, train_subset=a.train_subset, val_size=1000, method="rslad", teacher="t",
                      arch="small_cnn", width=a.student_width, epochs=1, attack_steps=a.attack_steps, epsilon=0.1,
                      eval_epsilon=0.1, num_threads=a.threads, lr=0.05)
    splits = load_data(cfg, torch.device("cpu"))
    teacher = build_model("small_cnn", splits.in_channels, splits.num_classes, a.teacher_width).eval()
    teacher = teacher.to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        table = soft_labels.load_or_build(d, teacher, cfg, splits)
        build_s = time.perf_counter() - t0
    res = {}
    for name, kw in (("live teacher", {"teacher": teacher}), ("soft-label cache", {"soft_labels": table})):
        h = train_model(cfg, splits=splits, **kw)["history"][0]
        res[name] = {"train_s": len(splits.train_x) // cfg.batch_size * cfg.batch_size / h["train_images_per_s"],
                     "epoch_s": h["epoch_time_s"], "images_per_s": h["train_images_per_s"]}
    live, cached = res["live teacher"], res["soft-label cache"]
    print(f"{'':18} {'train s':>8} {'epoch s':>8} {'img/s':>8}")
    for name, r in res.items():
        print(f"{name:18} {r['train_s']:8.1f} {r['epoch_s']:8.1f} {r['images_per_s']:8.0f}")
    print(f"cache build (once): {build_s:.1f}s for {len(splits.train_x)} images x {num_views(splits.augment, splits.pad)} views;"
          f" training speed-up {live['train_s'] / cached['train_s']:.2f}x")
    print(json.dumps({"bench": "soft_label_cache", "device": platform.processor() or platform.machine(),
                      "threads": a.threads, "dataset": a.dataset, "teacher_width": a.teacher_width,
                      "student_width": a.student_width, "attack_steps": a.attack_steps, "cache_build_s": round(build_s, 2),
                      **{k.replace(" ", "_"): v for k, v in res.items()}}))


if __name__ == "__main__":
    main()
