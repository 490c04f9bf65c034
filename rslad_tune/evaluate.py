"""Robust accuracy of a model on a split. Counts are accumulated on the device; one sync per call.

`clean_and_pgd` is the per-epoch pair of every trial; `evaluate_suite` is the paper's full table
(Clean, FGSM, PGD-20 SAT, PGD-20 TRADES, CW-inf, AutoAttack).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .attacks import ce_loss, cw_loss, fgsm, pgd
from .progress import bar


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    model.eval()
    return _count_correct(model, x, y, batch_size).item() / max(len(x), 1)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
                 start: str = "uniform", batch_size: int = 500) -> float:
    """PGD-`steps` on the CE loss ("SAT" protocol: uniform start), model in eval mode."""
    model.eval()
    adv = lambda xb, yb: pgd(model, xb, ce_loss(yb), eps, step_size, steps, start)  # noqa: E731
    return _count_correct(model, x, y, batch_size, adv).item() / max(len(x), 1)


def clean_and_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
                  seed: int = 0) -> dict[str, float]:
    """The pair every trial reports: clean accuracy and PGD accuracy, with a fixed attack seed."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return {"clean_acc": accuracy(model, x, y), "pgd_acc": pgd_accuracy(model, x, y, eps, step_size, steps)}


# --------------------------------------------------------------------------- the paper's evaluation suite

PAPER_EPS = 8 / 255
COLUMNS = ("Clean", "FGSM", "PGD_SAT", "PGD_TRADES", "CW_inf", "AA")
ATTACK_NAMES = {"clean": "Clean", "fgsm": "FGSM", "pgd_sat": "PGD_SAT", "pgd_trades": "PGD_TRADES",
                "cw_inf": "CW_inf", "aa": "AA"}  # CLI name -> column
AA_CHUNK = 100  # images per AutoAttack call: one progress line each (~4 min for a small CNN on 2 CPU cores)


def resolve_columns(attacks: Sequence[str]) -> list[str]:
    """Column names from column or CLI names (`pgd_sat` -> PGD_SAT); ValueError for unknown ones."""
    wanted = [ATTACK_NAMES.get(str(a).lower(), a) for a in attacks]
    unknown = [a for a in wanted if a not in COLUMNS]
    if unknown or not wanted:
        raise ValueError(f"attacks: {unknown or '[]'} not known; allowed: {', '.join(ATTACK_NAMES)}")
    return wanted


def suite_protocol(eps: float) -> dict[str, dict]:
    """Attack settings of each column at `eps`. Step sizes are the paper's at 8/255, scaled by eps / (8/255)."""
    scale = eps / PAPER_EPS
    return {
        "Clean": {},
        "FGSM": {"loss": "ce", "steps": 1, "step_size": eps, "start": "none"},
        "PGD_SAT": {"loss": "ce", "steps": 20, "step_size": eps / 4, "start": "uniform"},
        "PGD_TRADES": {"loss": "ce", "steps": 20, "step_size": 0.003 * scale, "start": "normal"},
        "CW_inf": {"loss": "cw", "steps": 30, "step_size": eps / 4, "start": "uniform"},
        "AA": {"version": "standard", "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "norm": "Linf"},
    }


def _count_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, adv=None) -> Tensor:
    """Correct predictions on x (or on adv(xb, yb) per batch), as a device tensor: no host sync."""
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if adv is not None:
            xb = adv(xb, yb)
        with torch.no_grad():
            correct += (model(xb).argmax(1) == yb).sum()
    return correct


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _AAProgress(logging.Handler):
    """Forwards pyautoattack's `auto-attack` log to `progress`: the robust accuracy after each attack of a
    chunk, and each distinct warning once (its checks repeat for every chunk)."""

    def __init__(self, progress: Callable[[str], None]):
        super().__init__(logging.DEBUG)
        self.progress, self.prefix, self.seen = progress, "", set()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            if msg not in self.seen:
                self.seen.add(msg)
                self.progress(f"AA warning: {msg}")
        elif msg.startswith("robust accuracy after"):
            self.progress(f"AA   {self.prefix}{msg}")


def autoattack_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, batch_size: int = 500, seed: int = 0,
                        chunk: int | None = None, progress: Callable[[str], None] | None = print) -> float:
    """AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; Croce & Hein 2020) from the `pyautoattack` package.

    pyautoattack has no verbose switch; it logs to the `auto-attack` logger at debug level. It is
    called on chunks of `chunk` images (default AA_CHUNK): after each chunk a line gives images
    done/total, rate, ETA and the running robust accuracy, and within a chunk its log gives the
    robust accuracy after each attack (warnings once each). progress=None: no lines, log untouched.
    """
    from pyautoattack import AutoAttack

    model.eval()
    chunk = chunk or AA_CHUNK
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", device=x.device, seed=seed)
    n = len(x)
    robust = torch.zeros((), dtype=torch.long, device=x.device)
    aa_logger = logging.getLogger("auto-attack")
    saved = aa_logger.level, aa_logger.propagate
    handler = _AAProgress(progress) if progress else None
    if handler:
        aa_logger.addHandler(handler)
        aa_logger.setLevel(logging.DEBUG)
        aa_logger.propagate = False
    t0 = time.perf_counter()
    pbar = bar(n, "AutoAttack", "img") if progress else None
    try:
        for i in range(0, n, chunk):
            xb, yb = x[i:i + chunk].float(), y[i:i + chunk]
            if handler:
                handler.prefix = f"images {i + 1}-{i + len(xb)}: "
            _, y_adv = adversary.run_standard_evaluation(xb, yb, batch_size=min(batch_size, len(xb)))
            robust += (y_adv == yb).sum()
            if pbar:
                pbar.update(len(xb))
                pbar.set_postfix(robust=f"{robust.item() / (i + len(xb)):.2%}")
            if progress:
                done, dt = i + len(xb), time.perf_counter() - t0
                rate = done / dt
                progress(f"AA {done}/{n} images, {rate:.2f} img/s ({dt / done:.2f} s/img), ETA {_fmt_time((n - done) / rate)}, "
                         f"robust accuracy so far {robust.item() / done:.2%}")
    finally:
        if pbar:
            pbar.close()
        if handler:
            aa_logger.removeHandler(handler)
            aa_logger.setLevel(saved[0])
            aa_logger.propagate = saved[1]
    return robust.item() / max(n, 1)


def evaluate_suite(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, n_aa: int | None = None,
                   attacks: Sequence[str] = COLUMNS, batch_size: int = 500, seed: int = 0,
                   progress: Callable[[str], None] | None = print) -> dict[str, float]:
    """The paper's robustness table (RSLAD, Zi et al. 2021, Table 2) for one model: accuracy per column, in [0, 1].

    Columns (L-inf, radius eps, model in eval mode):
      Clean       no attack
      FGSM        one step of eps from x along the sign of the CE gradient
      PGD_SAT     PGD-20 on CE, step eps/4, uniform start in the eps-ball
      PGD_TRADES  PGD-20 on CE, step 0.003 * eps/(8/255), start x + 0.001 N(0, 1)
      CW_inf      PGD-30 on the CW margin loss max_{k!=y} z_k - z_y, step eps/4, uniform start
      AA          AutoAttack standard (pyautoattack) on the first `n_aa` images (None: all; 0: skipped)

    Step sizes follow the paper at eps = 8/255 (2/255 for SAT and CW, 0.003 for TRADES) and scale
    with eps / (8/255) at other radii, so every attack reaches the same fraction of the ball.
    `attacks` lists the columns to run (column names or their lower-case CLI names). Each column
    reseeds the RNG with `seed`, so its number does not depend on which other columns ran.
    Counts stay on the device; one host sync per column (AutoAttack: one per chunk).
    """
    wanted = resolve_columns(attacks)
    proto = suite_protocol(eps)
    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)  # attacks need input gradients only (FAB would fill .grad otherwise)
    if x.dim() == 4:
        model.to(memory_format=torch.channels_last)  # 1.5-1.7x faster convolutions on CPU (bench/RESULTS.md)
    cuda = [x.device] if x.device.type == "cuda" else []
    out: dict[str, float] = {}
    try:
        for col in (c for c in COLUMNS if c in wanted):
            p = proto[col]
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                if col == "AA":
                    n = len(x) if n_aa is None else min(n_aa, len(x))
                    if n <= 0:
                        continue
                    if progress:
                        progress(f"AA: AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), eps={eps:.5f}, "
                                 f"{n} images in chunks of {AA_CHUNK}")
                    out[col] = autoattack_accuracy(model, x[:n], y[:n], eps, batch_size=batch_size, seed=seed,
                                                   progress=progress)
                else:
                    n = len(x)
                    if col == "Clean":
                        adv = None
                    elif col == "FGSM":
                        adv = lambda xb, yb: fgsm(model, xb, ce_loss(yb), eps)  # noqa: E731
                    else:
                        loss = cw_loss if p["loss"] == "cw" else ce_loss
                        adv = lambda xb, yb, p=p, loss=loss: pgd(model, xb, loss(yb), eps, p["step_size"],  # noqa: E731
                                                                 p["steps"], p["start"])
                    out[col] = _count_correct(model, x, y, batch_size, adv).item() / max(n, 1)
            if progress:
                progress(f"{col}: {out[col]:.2%} on {n} images ({time.perf_counter() - t0:.1f}s)")
    finally:
        for prm, flag in zip(model.parameters(), grad_flags):
            prm.requires_grad_(flag)
        model.train(was_training)
    return out


# --------------------------------------------------------------------------- model folders (`rslad-tune evaluate`)

def _folder_error(path, why: str):
    from .spec import SpecError

    return SpecError("path", str(path), f"{why}; expected an exported student (runs/<experiment>/best: config.json + "
                                        "model.safetensors) or a trial checkpoint folder (trial.json + model.safetensors "
                                        "+ best.safetensors)")


def _read_json(path: Path, key: str) -> dict:
    from .spec import SpecError

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(key, str(path), f"is not a readable JSON file ({type(e).__name__})") from None


def _trial_config(trial, where: Path):
    from .spec import SpecError, TrialConfig

    try:
        return TrialConfig(**trial)
    except TypeError as e:
        raise SpecError("trial", str(where), f"does not hold a valid trial configuration ({e})") from None


def load_model_folder(path: str | Path, device: torch.device) -> tuple[Path, str, object, list[dict]]:
    """Resolve PATH -> (folder, kind, TrialConfig, [{"row", "epoch", "weights", "model"}]).

    An exported student (config.json) gives its weights as "best", plus "last" when the trial
    checkpoint it came from (config.json "source") still holds model.safetensors. A trial
    checkpoint folder gives best.safetensors as "best" and model.safetensors as "last".
    """
    from .export import load_student
    from .teachers import build_from_config, load_weights

    p = Path(path)
    if not p.is_dir():
        raise _folder_error(path, "does not exist" if not p.exists() else "is not a folder")
    if not (p / "config.json").is_file() and (p / "best" / "config.json").is_file():
        p = p / "best"
    rows: list[dict] = []
    if (p / "config.json").is_file():
        cfg_json = _read_json(p / "config.json", "config.json")
        if "trial" not in cfg_json or not (p / "model.safetensors").is_file():
            raise _folder_error(path, "has a config.json but is not an exported student (no trial section or no model.safetensors)")
        cfg = _trial_config(cfg_json["trial"], p / "config.json")
        metrics = _read_json(p / "metrics.json", "metrics.json") if (p / "metrics.json").is_file() else {}
        rows.append({"row": "best", "epoch": metrics.get("epoch"), "weights": str(p / "model.safetensors"),
                     "model": load_student(p, device)})
        src = Path(cfg_json["source"]) if cfg_json.get("source") else None
        if src is not None and (src / "model.safetensors").is_file():
            hist = _read_json(src / "trial.json", "trial.json").get("history", []) if (src / "trial.json").is_file() else []
            model = load_weights(build_from_config(cfg_json), src / "model.safetensors", "last checkpoint")
            rows.append({"row": "last", "epoch": hist[-1]["epoch"] if hist else None,
                         "weights": str(src / "model.safetensors"), "model": model.to(device).eval()})
        return p, "export", cfg, rows
    if (p / "trial.json").is_file():
        trial = _read_json(p / "trial.json", "trial.json")
        if "trial" not in trial:
            raise _folder_error(path, "has a trial.json without a trial section")
        cfg = _trial_config(trial["trial"], p / "trial.json")
        hist = trial.get("history") or []
        epochs = {"best": hist[-1].get("best_epoch") if hist else None, "last": hist[-1].get("epoch") if hist else None}
        files = {"best": p / "best.safetensors", "last": p / "model.safetensors"}
        if not any(f.is_file() for f in files.values()):
            raise _folder_error(path, "has a trial.json but no best.safetensors or model.safetensors")
        return p, "checkpoint", cfg, [{"row": r, "epoch": epochs[r], "weights": str(f), "model": None}
                                      for r, f in files.items() if f.is_file()]
    raise _folder_error(path, "is not a model folder (no config.json or trial.json)")


def evaluate_folder(path: str | Path, *, n_examples: int | None = None, n_aa: int | None = None,
                    attacks: Sequence[str] = COLUMNS, device: str = "auto", seed: int = 0, batch_size: int = 500,
                    log: Callable[[str], None] | None = print) -> dict:
    """The suite on the test split of the model's dataset, for the best and the last checkpoint of a folder.

    Returns the report written to eval.json: settings, protocol and {"rows": {"best": {...}, "last": {...}}}.
    """
    from .spec import SpecError
    from .teachers import load_weights
    from .trainer import load_data, make_student, resolve_device

    try:
        dev = resolve_device(device)
    except (ValueError, RuntimeError) as e:
        raise SpecError("--device", device, str(e).split("; ", 1)[-1]) from None
    try:
        wanted = resolve_columns(attacks)
    except ValueError:
        raise SpecError("--attacks", ",".join(map(str, attacks)), f"must be a comma-separated subset of {','.join(ATTACK_NAMES)}") from None
    folder, kind, cfg, rows = load_model_folder(path, dev)
    splits = load_data(cfg, dev)
    x, y = splits.test_x, splits.test_y
    if n_examples is not None:
        x, y = x[:n_examples], y[:n_examples]
    eps = cfg.eval_epsilon
    n_aa_eff = (len(x) if n_aa is None else min(n_aa, len(x))) if "AA" in wanted else 0
    proto = suite_protocol(eps)
    report = {"path": str(folder.resolve()), "kind": kind, "dataset": cfg.dataset, "split": "test", "n": len(x),
              "n_aa": n_aa_eff, "eps": eps, "seed": seed, "device": str(dev),
              "protocol": {c: proto[c] for c in COLUMNS if c in wanted}, "rows": {}}
    t0 = time.perf_counter()
    for r in rows:
        model = r["model"]
        if model is None:
            model = load_weights(make_student(cfg, splits), Path(r["weights"]), f"{r['row']} checkpoint").to(dev)
        if log:
            log(f"{r['row']} checkpoint (epoch {r['epoch']}): {r['weights']}")
        res = evaluate_suite(model, x, y, eps, n_aa=n_aa_eff, attacks=wanted, batch_size=batch_size, seed=seed,
                             progress=log)
        report["rows"][r["row"]] = {"epoch": r["epoch"], "weights": r["weights"], **res}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def format_table(report: dict) -> str:
    """The paper's Table 2 layout: one row per checkpoint (best, last), accuracies in percent."""
    cols = [c for c in COLUMNS if any(c in row for row in report["rows"].values())]
    aa = f"; AA on the first {report['n_aa']}" if "AA" in cols and report["n_aa"] < report["n"] else ""
    lines = [f"test split of {report['dataset']}, {report['n']} images{aa}, L-inf eps = {report['eps']:.5g}",
             f"{'checkpoint':<11} {'epoch':>5} " + " ".join(f"{c:>10}" for c in cols)]
    for name, row in report["rows"].items():
        ep = "-" if row.get("epoch") is None else str(row["epoch"])
        lines.append(f"{name:<11} {ep:>5} " + " ".join(f"{100 * row[c]:>10.2f}" for c in cols))
    return "\n".join(lines)


def log_eval_to_mlflow(report: dict, json_path: str | Path | None = None, log: Callable[[str], None] | None = print) -> str | None:
    """Log `eval_<column>` (best) and `eval_last_<column>` (last) to the folder's MLflow run, when it has one.

    The run id comes from the folder's metrics.json ("mlflow_run_id"), the tracking URI from the
    sweep's sweep.json one level up (runs/<experiment>/best -> runs/<experiment>/sweep.json).
    Returns the run id logged to, or None.
    """
    folder = Path(report["path"])
    try:
        run_id = json.loads((folder / "metrics.json").read_text()).get("mlflow_run_id")
        uri = json.loads((folder.parent / "sweep.json").read_text()).get("tracking_uri")
    except (OSError, ValueError):
        return None
    if not run_id or not uri:
        return None
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    ts = int(time.time() * 1000)
    metrics = [Metric(f"eval_{'' if name == 'best' else name + '_'}{c}", float(row[c]), ts, 0)
               for name, row in report["rows"].items() for c in COLUMNS if c in row]
    try:
        client = MlflowClient(uri)
        client.log_batch(run_id, metrics=metrics)
        client.set_tag(run_id, "eval_json", str(json_path or folder / "eval.json"))
    except Exception as e:  # the store is gone or unreachable: the evaluation itself still stands
        if log:
            log(f"could not log to MLflow run {run_id} at {uri}: {type(e).__name__}: {str(e)[:150]}")
        return None
    if log:
        log(f"logged {len(metrics)} eval metrics to MLflow run {run_id} ({uri})")
    return run_id
