"""Correctness guard of the optimised trainer (issue: speed): in fp32 on CPU, `trainer.train_step`
(on-device batches, no host sync, attack without weight gradients, channels_last) gives the losses
of the paper-faithful reference loop (bench/reference.py) for the first 6 steps, from the same
weights, seed and batches.

The reference is the authors' loop body; the trainer runs RSLAD with `kl_reduction: paper`, their
loss line. Tolerances (relative): NCHW with the live teacher and the attack on the model as it is
(folding.FOLD off), 1e-6 (measured: bit-identical). The attack on the folded view (batch-norm in the
convolutions, folding.py), channels_last or fp16 teacher logits (what the soft-label cache stores) change float rounding; signed-gradient
PGD turns a rounding difference on a near-zero gradient into a flipped pixel step, so the two
trajectories separate slowly: the first step agrees to 1e-3 (fp16 logits: measured 1.2e-4), the
first 6 to 3e-2 (measured up to 1.2e-2)."""
import copy
import math

import pytest
import torch

from bench.reference import rslad_step
from rslad_tune.trial import folding
from rslad_tune.trial.config import TrialConfig
from rslad_tune.trial.methods import METHODS
from rslad_tune.trial.models import build_model
from rslad_tune.trial.trainer import make_method, train_step

STEPS = 6
BATCH = 16


def _batches():
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        x = torch.rand(BATCH, 1, 28, 28, generator=g)
        x[x < 0.4] = 0.0  # Fashion-MNIST-like: many pixels on the box edge, where clipping matters
        out.append((x, torch.randint(0, 10, (BATCH,), generator=g)))
    return out


@pytest.mark.parametrize("layout,cached,fold", [("nchw", False, False), ("nchw", False, True),
                                                ("channels_last", False, True), ("nchw", True, True)],
                         ids=["nchw-live-teacher", "nchw-folded-attack", "channels_last-live-teacher",
                              "nchw-fp16-soft-labels"])
def test_train_step_matches_the_reference_loop(layout, cached, fold, monkeypatch):
    monkeypatch.setattr(folding, "FOLD", fold)
    torch.manual_seed(0)
    cfg = TrialConfig(method="rslad", arch="small_cnn", width=8, epsilon=0.1, step_size=0.025, attack_steps=3,
                      attack_start="normal", alpha=5 / 6, lr=0.05, precision="fp32",
                      kl_reduction="paper")
    student = build_model("small_cnn", 1, 10, 8)
    teacher = build_model("small_cnn", 1, 10, 12).eval().requires_grad_(False)
    ref = copy.deepcopy(student)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    fast = copy.deepcopy(student).to(memory_format=fmt)
    fast_teacher = copy.deepcopy(teacher).to(memory_format=fmt)
    opts = [torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            for m in (ref, fast)]
    method = make_method(cfg)
    assert isinstance(method, METHODS["rslad"])
    ref_losses, fast_losses = [], []
    for k, (x, y) in enumerate(_batches()):
        torch.manual_seed(100 + k)  # the same PGD start noise for both
        ref_losses.append(rslad_step(ref, teacher, x, y, opts[0], alpha=cfg.alpha, epsilon=cfg.epsilon,
                                     step_size=cfg.step_size, steps=cfg.attack_steps).item())
        soft = None
        if cached:
            with torch.no_grad():
                soft = fast_teacher(x).half().float()
        torch.manual_seed(100 + k)
        fast_losses.append(train_step(fast, method, cfg, x, y, opts[1], fast_teacher, soft).item())
    exact = layout == "nchw" and not cached and not fold
    assert fast_losses[0] == pytest.approx(ref_losses[0], rel=1e-6 if exact else 1e-3)
    assert fast_losses == pytest.approx(ref_losses, rel=1e-6 if exact else 3e-2)
    assert len(set(round(v, 4) for v in ref_losses)) > 1  # the losses move: the comparison is not of constants
    if exact:
        for p_ref, p_fast in zip(ref.parameters(), fast.parameters()):
            assert torch.allclose(p_ref, p_fast, rtol=1e-6, atol=1e-7)


def test_trainer_benchmark_runs_and_reports_both_loops():
    from bench.trainer import main

    res = main(["--dataset", "synthetic", "--steps", "1", "--warmup", "1", "--train-subset", "300",
                "--attack-steps", "1", "--device", "cpu"])
    assert res["reference_images_per_s"] > 0 and res["trainer_images_per_s"] > 0 and res["peak_tflops"] > 0
    assert res["speedup"] == pytest.approx(res["trainer_images_per_s"] / res["reference_images_per_s"], rel=0.02)
    # > 0 only: on a one-step run the peak measured beside it is noisy, and a fraction above 1 has been seen
    # (1.03 on a loaded CI machine); the benchmark's real runs report the fraction (bench/RESULTS.md)
    assert 0 < res["trainer_fraction_of_peak"] and math.isfinite(res["trainer_fraction_of_peak"])


def test_the_benchmark_against_the_authors_loop_runs_every_loop_on_the_same_batches():
    from bench.vs_authors import main

    (res,) = main(["--pairs", "cnn", "--rounds", "1", "--steps", "1", "--warmup", "0", "--threads", "1"])
    rates = res["median_images_per_s"]
    assert set(rates) == {"authors", "live", "cached"} and all(v > 0 for v in rates.values())
    assert res["live_vs_authors"] == pytest.approx(rates["live"] / rates["authors"], rel=0.01)
    assert res["cached_vs_live"] == pytest.approx(rates["cached"] / rates["live"], rel=0.01)
    assert res["batch_size"] == 128 and res["attack_steps"] == 10 and res["commit"]
