"""RSLAD training speed: the project's trainer against the paper-faithful reference loop (bench/reference.py).

    python -m bench.trainer                          # CPU preset: Fashion-MNIST, small_cnn w16 student, w32 teacher
    python -m bench.trainer --preset gpu             # GPU preset: CIFAR-shaped data, ResNet-18 student, WRN-34-10 teacher

Both loops train identical models (same initial weights) on the same images for `--steps` timed
steps after `--warmup` steps, batch 128, PGD-10 (eps 8/255-style ratio: step eps/4, start
x + 0.001 N(0, 1)). The trainer runs as a sweep trial does: data and augmentation on the device,
channels_last, bf16 autocast on CUDA, the soft-label cache (its one-time build is timed apart),
no host sync inside a step, optional torch.compile (--compile).

Counted work: the student's forward MACs per image (models.count_macs) x FLOPs per MAC (2) x
units per training image: each of the PGD steps is a forward and an input-gradient backward
(2 units), the outer step forwards and backwards the adversarial and the clean view (2 x 3 units),
so 2 * steps + 6 units; the teacher's forward is not counted. Achieved FLOP/s = counted FLOPs x
images/s; the peak is measured here with a large matrix product (bf16 on CUDA, fp32 on CPU).
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from bench import reference
from rslad_tune.teachers import soft_labels
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.data import load_splits, resolve_device
from rslad_tune.trial.models import build_model, count_macs
from rslad_tune.trial.trainer import make_method, train_epoch

PRESETS = {
    "cpu": {"dataset": "fashion_mnist", "student": "small_cnn", "student_width": 16, "teacher": "small_cnn",
            "teacher_width": 32, "epsilon": 0.1, "steps": 12, "warmup": 2},
    "gpu": {"dataset": "synthetic_cifar", "student": "resnet18", "student_width": None, "teacher": "wrn34_10",
            "teacher_width": None, "epsilon": 8 / 255, "steps": 40, "warmup": 5},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device) -> tuple[float, str]:
    """FLOP/s of a large square matrix product: bf16 n=8192 on CUDA, fp32 n=2048 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    reps = 20 if device.type == "cuda" else 6
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0), f"{str(dtype).split('.')[-1]} matmul n={n}"


def time_reference(student, teacher, splits, cfg: TrialConfig, device, steps: int, warmup: int, workers: int) -> float:
    """images/s of the reference loop over `steps` steps (after `warmup`), DataLoader included."""
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    dl = reference.loader(splits.train_x, splits.train_y, cfg.batch_size, splits.augment != "none", workers,
                          device.type == "cuda")
    it = iter(dl)
    t0 = None
    for k in range(warmup + steps):
        if k == warmup:
            _sync(device)
            t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(dl)
            x, y = next(it)
        reference.rslad_step(student, teacher, x.to(device, non_blocking=True), y.to(device, non_blocking=True), opt,
                             alpha=cfg.alpha, epsilon=cfg.epsilon, step_size=cfg.resolved_step_size,
                             steps=cfg.attack_steps)
    _sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def time_trainer(student, teacher, splits, cfg: TrialConfig, device, steps: int, warmup: int,
                 channels_last: bool = True, cache: bool = True) -> tuple[float, float]:
    """(images/s of trainer.train_epoch over `steps` steps after `warmup`, soft-label cache build seconds).
    channels_last / cache False: the trainer without that optimisation (ablations)."""
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
    table, build_s = None, 0.0
    if cache:
        with tempfile.TemporaryDirectory() as d:
            _sync(device)
            t0 = time.perf_counter()
            table = soft_labels.load_or_build(d, teacher, cfg, splits)
            _sync(device)
            build_s = time.perf_counter() - t0
    model = torch.compile(student) if cfg.compile else student
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    method = make_method(cfg)
    train_epoch(model, method, cfg, splits, opt, sched, teacher, table, max_batches=warmup)
    _sync(device)
    t0 = time.perf_counter()
    _, seen = train_epoch(model, method, cfg, splits, opt, sched, teacher, table, max_batches=steps)  # syncs once
    return seen / (time.perf_counter() - t0), build_s


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), help="default: gpu when CUDA is visible, else cpu")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dataset")
    ap.add_argument("--train-subset", type=int, default=4000, help="training images loaded (default 4000)")
    ap.add_argument("--steps", type=int, help="timed steps per loop")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--attack-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (CPU; default: torch's)")
    ap.add_argument("--workers", type=int, help="reference DataLoader workers (default 2 on CUDA, 0 on CPU)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the trainer's student")
    ap.add_argument("--trainer-only", action="store_true", help="skip the reference loop (bench.packing)")
    ap.add_argument("--no-channels-last", action="store_true", help="ablation: the trainer in NCHW")
    ap.add_argument("--no-cache", action="store_true", help="ablation: the trainer with a live teacher")
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    p = dict(PRESETS[a.preset or ("gpu" if device.type == "cuda" else "cpu")])
    for k in ("dataset", "steps", "warmup"):
        if getattr(a, k) is not None:
            p[k] = getattr(a, k)
    if a.threads:
        torch.set_num_threads(a.threads)
    workers = a.workers if a.workers is not None else (2 if device.type == "cuda" else 0)
    cfg = TrialConfig(dataset=p["dataset"], train_subset=a.train_subset, val_size=0, method="rslad", teacher="t",
                      arch=p["student"], width=p["student_width"], batch_size=a.batch_size, epsilon=p["epsilon"],
                      attack_steps=a.attack_steps, attack_start="normal", lr=0.05, device=device.type,
                      precision=a.precision, compile=a.compile)
    try:
        splits = load_splits(cfg.dataset, train_subset=cfg.train_subset, val_size=0, test_subset=100, device=device)
    except Exception as e:  # Fashion-MNIST not installed: the same shapes from the generator
        print(f"({cfg.dataset} not available: {e}; using synthetic images of the same shape)")
        cfg.dataset = "synthetic" if cfg.dataset == "fashion_mnist" else "synthetic_cifar"
        splits = load_splits(cfg.dataset, train_subset=cfg.train_subset, val_size=0, test_subset=100, device=device)
    torch.manual_seed(0)
    student = build_model(cfg.arch, splits.in_channels, splits.num_classes, cfg.width).to(device)
    teacher = build_model(p["teacher"], splits.in_channels, splits.num_classes, p["teacher_width"]).to(device)
    teacher.eval().requires_grad_(False)
    ref_student = build_model(cfg.arch, splits.in_channels, splits.num_classes, cfg.width).to(device)
    ref_student.load_state_dict(student.state_dict())
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    macs_s, macs_t = count_macs(student, shape), count_macs(teacher, shape)

    ref_ips = float("nan") if a.trainer_only else time_reference(ref_student, teacher, splits, cfg, device, p["steps"],
                                                                  p["warmup"], workers)
    fast_ips, build_s = time_trainer(student, teacher, splits, cfg, device, p["steps"], p["warmup"],
                                     channels_last=not a.no_channels_last, cache=not a.no_cache)
    peak, peak_what = (float("nan"), "not measured") if a.trainer_only else matmul_peak(device)
    flop_per_img = 2 * macs_s * (2 * cfg.attack_steps + 6)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    res = {"bench": "trainer", "device": name, "threads": torch.get_num_threads() if device.type == "cpu" else None,
           "dataset": cfg.dataset, "student": f"{cfg.arch}" + (f"-w{cfg.width}" if cfg.width else ""),
           "teacher": p["teacher"] + (f"-w{p['teacher_width']}" if p["teacher_width"] else ""),
           "batch_size": cfg.batch_size, "attack_steps": cfg.attack_steps, "steps": p["steps"],
           "precision": cfg.precision, "compile": cfg.compile, "reference_workers": workers,
           "channels_last": not a.no_channels_last, "soft_label_cache": not a.no_cache,
           "student_macs": macs_s, "teacher_macs": macs_t,
           "reference_images_per_s": round(ref_ips, 1), "trainer_images_per_s": round(fast_ips, 1),
           "speedup": round(fast_ips / ref_ips, 2), "soft_label_cache_build_s": round(build_s, 2),
           "reference_tflops": round(flop_per_img * ref_ips / 1e12, 4),
           "trainer_tflops": round(flop_per_img * fast_ips / 1e12, 4),
           "peak_tflops": round(peak / 1e12, 3), "peak": peak_what,
           "trainer_fraction_of_peak": round(flop_per_img * fast_ips / peak, 4)}
    print(f"{'loop':<12} {'images/s':>10} {'TFLOP/s':>9} {'of peak':>8}")
    for k in ("reference", "trainer"):
        print(f"{k:<12} {res[k + '_images_per_s']:>10.1f} {res[k + '_tflops']:>9.4f} "
              f"{100 * res[k + '_tflops'] / res['peak_tflops']:>7.1f}%")
    print(f"speed-up {res['speedup']:.2f}x; peak {res['peak_tflops']:.3f} TFLOP/s ({peak_what}); student "
          f"{macs_s / 1e6:.2f} MMACs/image, {2 * cfg.attack_steps + 6} units/image; soft-label cache built in {build_s:.1f}s")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
