"""Several trials per GPU: aggregate trainer images/s of 1, 2 and 4 concurrent trials through Ray Tune
fractional GPUs (each trial asks for 1/k of the GPU), as a sweep packs them.

    python -m bench.packing                      # GPU: ResNet-18 student, WRN-34-10 teacher, k = 1, 2, 4
    python -m bench.packing --device cpu --k 1 2 --steps 3 --warmup 1   # the plumbing, on CPU

Each trial runs `bench.trainer --trainer-only` (warm-up, then `--steps` timed steps) and reports its
images/s; the k trials start together and each times only its own steady state, so the aggregate
is the sum of the k rates (the timed windows overlap when every trial has the same work). Prints a
table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _trial(config: dict) -> None:
    from ray import tune

    from bench.trainer import main

    res = main(config["argv"])
    tune.report({"images_per_s": res["trainer_images_per_s"]})


def run(k: int, argv: list[str], cpus: float, gpu: bool, storage: str) -> list[float]:
    from ray import tune

    resources = {"cpu": cpus, "gpu": 1 / k if gpu else 0}
    tuner = tune.Tuner(tune.with_resources(_trial, resources),
                       param_space={"argv": argv, "i": tune.grid_search(list(range(k)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=k),
                       run_config=tune.RunConfig(name=f"packing-{k}", storage_path=storage, verbose=0))
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error]
    if errors:
        raise RuntimeError(f"a packing trial failed: {errors[0]}")
    return [r.metrics["images_per_s"] for r in grid]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    a, rest = ap.parse_known_args()
    import ray
    import torch

    gpu = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    argv = ["--device", "cuda" if gpu else "cpu", "--steps", str(a.steps), "--warmup", str(a.warmup), "--trainer-only", *rest]
    root = str(Path(__file__).resolve().parents[1])
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}})
    storage = str(Path(os.environ.get("TMPDIR", "/tmp")).resolve() / "rslad-bench-packing")
    rows = {}
    for k in a.k:
        rates = run(k, argv, a.cpus_per_trial, gpu, storage)
        rows[k] = {"per_trial": [round(r, 1) for r in rates], "aggregate": round(sum(rates), 1)}
    base = rows[a.k[0]]["aggregate"]
    print(f"{'trials':>6} {'aggregate img/s':>16} {'vs ' + str(a.k[0]):>8}  per trial")
    for k, r in rows.items():
        print(f"{k:>6} {r['aggregate']:>16.1f} {r['aggregate'] / base:>7.2f}x  {r['per_trial']}")
    name = torch.cuda.get_device_name() if gpu else "cpu"
    print(json.dumps({"bench": "packing", "device": name, "args": argv, "rows": rows}))


if __name__ == "__main__":
    main()
