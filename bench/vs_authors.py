"""RSLAD step speed: the project's trainer against the authors' loop body (bench/reference.py), on two pairs.

    python -m bench.vs_authors                      # both pairs, median of 3 interleaved rounds
    python -m bench.vs_authors --pairs cnn --rounds 1 --steps 2

Every loop gets the same in-memory batches (no data loading: the loop bodies are compared) and starts
from the same student weights; the teacher is the same model. Loops:
  authors   bench.reference.rslad_step: fp32, NCHW, the teacher on every batch
  live      rslad_tune.trial.trainer.train_step with the live teacher (channels_last, `--precision`)
  cached    the same with the teacher's logits from the soft-label cache (fp16 in the table, as
            soft_labels.compute_soft_labels stores them; its one-time build is timed apart)
Each round times every loop for `--steps` steps after `--warmup`, in turn; the table reports the
median images/s over the rounds and the ratios of the medians. Prints a Markdown table and one JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import time

import torch

from bench import reference
from rslad_tune.trial import folding
from rslad_tune.trial import precision as mixed_precision
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.data import load_splits
from rslad_tune.trial.models import build_model
from rslad_tune.trial.precision import autocast_enabled
from rslad_tune.trial.trainer import make_method, train_step

# name -> (dataset, student (arch, width), teacher (arch, width), batch, epsilon, step size); PGD-10 for both
PAIRS = {
    "mobilenet": ("synthetic_cifar", ("mobilenet_v2", None), ("resnet18", None), 32, 8 / 255, 2 / 255),
    "cnn": ("fashion_mnist", ("small_cnn", 16), ("small_cnn", 32), 128, 0.1, 0.025),
}
DEFAULT_STEPS = {"mobilenet": (4, 1), "cnn": (20, 3)}  # (timed steps, warm-up steps) per round


def pair_config(name: str, precision: str) -> TrialConfig:
    """The trainer's trial for a pair: RSLAD with the authors' settings (PGD-10 from x + 0.001 N(0, 1), SGD lr 0.1,
    momentum 0.9, weight decay 2e-4, their loss reduction)."""
    _, (s_arch, s_w), _, bs, eps, step = PAIRS[name]
    return TrialConfig(method="rslad", teacher="t", arch=s_arch, width=s_w, batch_size=bs, epsilon=eps, step_size=step,
                       attack_steps=10, attack_start="normal", lr=0.1, momentum=0.9, weight_decay=2e-4,
                       precision=precision, kl_reduction="paper")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def batches(dataset: str, batch: int, n: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    try:
        splits = load_splits(dataset, train_subset=batch * n + 10, val_size=0, test_subset=10)
    except Exception as e:  # noqa: BLE001 - Fashion-MNIST not installed: the same shapes from the generator
        print(f"({dataset} not available: {e}; synthetic images of the same shape)")
        dataset = "synthetic"
        splits = load_splits(dataset, train_subset=batch * n + 10, val_size=0, test_subset=10)
    x, y = splits.train_x, splits.train_y
    return [(x[i * batch:(i + 1) * batch].contiguous(), y[i * batch:(i + 1) * batch]) for i in range(n)], dataset


def run_pair(name: str, steps: int, warmup: int, rounds: int, precision: str, threads: int | None) -> dict:
    dataset, (s_arch, s_w), (t_arch, t_w), bs, eps, step = PAIRS[name]
    data, dataset = batches(dataset, bs, steps + warmup)
    c, n_cls = data[0][0].shape[1], 10
    torch.manual_seed(0)
    student0 = build_model(s_arch, c, n_cls, s_w)
    teacher = build_model(t_arch, c, n_cls, t_w).eval().requires_grad_(False)
    teacher_cl = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
    cfg = pair_config(name, precision)
    method = make_method(cfg)
    t0 = time.perf_counter()
    with torch.no_grad():
        table = [teacher_cl(x.contiguous(memory_format=torch.channels_last)).half() for x, _ in data]
    build_s = time.perf_counter() - t0

    def authors():
        model = copy.deepcopy(student0)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return lambda k: reference.rslad_step(model, teacher, data[k][0], data[k][1], opt, alpha=cfg.alpha,
                                              epsilon=eps, step_size=step, steps=cfg.attack_steps)

    def trainer(cached: bool):
        model = copy.deepcopy(student0).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return lambda k: train_step(model, method, cfg, data[k][0], data[k][1], opt, teacher_cl,
                                    table[k].float() if cached else None)

    loops = {"authors": authors, "live": lambda: trainer(False), "cached": lambda: trainer(True)}
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(rounds):
        for k, make in loops.items():
            step_fn = make()
            for i in range(warmup):
                step_fn(i).item()
            t0 = time.perf_counter()
            loss = None
            for i in range(warmup, warmup + steps):
                loss = step_fn(i)
            loss.item()  # one host sync at the end, as in both loops
            rates[k].append(steps * bs / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"pair": name, "dataset": dataset, "student": f"{s_arch}" + (f"-w{s_w}" if s_w else ""),
            "teacher": f"{t_arch}" + (f"-w{t_w}" if t_w else ""), "batch_size": bs, "attack_steps": 10,
            "precision": precision, "bf16_autocast": autocast_enabled(cfg, torch.device("cpu")),
            "threads": threads or torch.get_num_threads(), "rounds": rounds, "steps": steps, "warmup": warmup,
            "images_per_s": {k: [round(r, 2) for r in v] for k, v in rates.items()},
            "median_images_per_s": {k: round(v, 2) for k, v in med.items()},
            "live_vs_authors": round(med["live"] / med["authors"], 3),
            "cached_vs_authors": round(med["cached"] / med["authors"], 3),
            "cached_vs_live": round(med["cached"] / med["live"], 3), "cache_build_s": round(build_s, 3)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, help="timed steps per loop and round (default: 4 mobilenet, 20 cnn)")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="the trainer's precision")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-fold", action="store_true", help="ablation: the attack on the student as it is")
    ap.add_argument("--bf16-grouped", action="store_true", help="ablation: grouped convolutions in bf16 too")
    a = ap.parse_args(argv)
    folding.FOLD, mixed_precision.GROUPED_FP32 = not a.no_fold, not a.bf16_grouped
    if a.threads:
        torch.set_num_threads(a.threads)
    out = []
    for name in a.pairs:
        steps, warmup = DEFAULT_STEPS[name]
        res = run_pair(name, a.steps or steps, a.warmup if a.warmup is not None else warmup, a.rounds, a.precision,
                       a.threads)
        res |= {"fold": folding.FOLD, "grouped_fp32": mixed_precision.GROUPED_FP32,
                "device": platform.processor() or platform.machine(), "commit": commit(),
                "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
        out.append(res)
    print("| pair | authors img/s | live img/s | cached img/s | live / authors | cached / authors | cached / live |")
    print("|---|---|---|---|---|---|---|")
    for r in out:
        m = r["median_images_per_s"]
        print(f"| {r['student']} <- {r['teacher']}, b{r['batch_size']}, PGD-10, {r['precision']}"
              f"{' (bf16 autocast)' if r['bf16_autocast'] else ''} | {m['authors']:.1f} | {m['live']:.1f} | "
              f"{m['cached']:.1f} | {r['live_vs_authors']:.2f}x | {r['cached_vs_authors']:.2f}x | {r['cached_vs_live']:.2f}x |")
    for r in out:
        print(json.dumps(r))
    return out


if __name__ == "__main__":
    main()
