"""The checks of a sweep against this machine, its data, its files and its cluster, after the YAML is valid
and before anything is written: limits the machine cannot meet (a trial asking for more cores or GPUs than
a local Ray has never starts), a batch larger than the training split, teacher files that do not load or
hold NaN/inf, teacher files, zoo names and RobustBench models that do not exist, an unreachable Ray head, a runs_dir that is a file. Each is one SpecError line; input that
is legal but likely a mistake gives one warning line each (returned, printed by the CLI).
"""
from __future__ import annotations

import os
import socket

from ..trial.config import expand_user
from ..trial.errors import SpecError
from .spec import SweepSpec


def check_sweep(spec: SweepSpec, address: str | None = None, verb: str = "tune") -> list[str]:
    """Everything above, in order; returns the warnings."""
    import torch

    from ..teachers.sources import check_teacher_weights, check_teachers
    from ..trial.config import DATA_KEYS
    from ..trial.data import load_data

    runs_dir = expand_user("runs_dir", spec.runs_dir)  # the YAML's or --runs-dir: `~nouser/runs` is one line
    spec.runs_dir = str(runs_dir)  # `~/runs` is the home's runs folder, not a folder named ~ in the cwd
    if runs_dir.exists() and not runs_dir.is_dir():
        raise SpecError("runs_dir", spec.runs_dir, "is a file, not a folder; give a folder for the sweeps (default runs/)")
    # the teachers' files and names (zoo, RobustBench's list, the network when a file must be downloaded), the data
    # (a data dir without data, val_size too large, ...), then every weights file a teacher names
    try:
        check_teachers(spec.teachers, {k: getattr(spec.trial, k) for k in DATA_KEYS})
    except SpecError as e:  # located in the YAML, like the parser's errors
        raise e.located(spec.path) if spec.path and not e.where else e
    splits = load_data(spec.trial, torch.device("cpu"))
    check_teacher_weights(spec.teachers, splits)  # a corrupt, truncated, pickled or NaN weights file stops us here
    warnings = _check_batches(spec, len(splits.train_x), len(splits.train_x) + len(splits.val_x))
    if address:
        check_ray_address(address)
    elif verb == "tune":  # a local Ray: the trials must fit on this machine
        warnings += _check_machine(spec)
    return warnings + _check_schedule(spec)


def _check_batches(spec: SweepSpec, n_train: int, n_images: int) -> list[str]:
    d = spec.search.get("batch_size")
    sizes = {("trial.batch_size" if d is None else f"search.batch_size.{d.kind}"):
             [spec.trial.batch_size] if d is None else (d.args if d.kind in ("choice", "grid") else [d.args[1]])}
    for key, values in sizes.items():
        if max(values) > n_train:
            raise SpecError(key, max(values), f"must be at most the {n_train} training images (after val_size "
                            f"{spec.trial.val_size} is held out): a larger batch trains on nothing")
    asked = spec.trial.train_subset
    if asked is not None and asked > n_images:
        return [f"data.train_subset: {asked} is more than the {n_images} training images of {spec.trial.dataset}: "
                f"all {n_images} are used"]
    return []


def _check_machine(spec: SweepSpec) -> list[str]:
    import torch

    t, cores, gpus = spec.tune, os.cpu_count() or 1, torch.cuda.device_count()
    if t.cpus_per_trial > cores:
        raise SpecError("tune.resources.cpu", t.cpus_per_trial, f"must be at most this machine's {cores} cores: a trial "
                        "asking for more never starts on a local Ray (give --address for a cluster)")
    if t.gpus_per_trial > gpus:
        raise SpecError("tune.resources.gpu", t.gpus_per_trial, f"must be at most this machine's {gpus} GPUs: a trial "
                        "asking for more never starts on a local Ray (give --address for a cluster)")
    fit = int(cores // t.cpus_per_trial)
    if t.max_concurrent > max(fit, 2):
        return [f"tune.max_concurrent: {t.max_concurrent} is more than the {fit} trials that fit on this machine at "
                f"once ({cores} cores, resources.cpu {t.cpus_per_trial:g}): the others wait"]
    return []


def _check_schedule(spec: SweepSpec) -> list[str]:
    t, out = spec.tune, []
    if t.scheduler == "asha" and spec.trial.epochs > 1 and t.grace_period >= spec.trial.epochs:
        out.append(f"tune.scheduler.grace_period: {t.grace_period} equals trial.epochs: ASHA stops no trial early; "
                   "lower it or use scheduler.type: fifo")
    d = spec.search.get("teacher")
    if d is not None and d.kind == "choice" and t.num_samples < _searched(spec, d.args):
        out.append(f"tune.num_samples: {t.num_samples} is fewer than the {_searched(spec, d.args)} teachers searched"
                   f"{' after the prescreen' if t.prescreen_keep else ''}: some teachers get no student (and no row in "
                   "the selection report)")
    return out


def _searched(spec: SweepSpec, names: list[str]) -> int:
    """How many teachers the trials search: after a prescreen, its `keep` and the references it always keeps."""
    from ..teachers.sources import SOURCES

    keep = spec.tune.prescreen_keep
    controls = sum(SOURCES[spec.teachers[n].source].control for n in names if n in spec.teachers)
    return len(names) if keep is None else min(len(names), keep + controls)


def check_ray_address(address: str) -> None:
    """An unreachable cluster is reported before teachers are trained or anything is written."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError("--address", address, "must be host:port of a Ray head (e.g. 127.0.0.1:6379), ray://host:10001 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise SpecError("--address", address, f"no Ray head answers there ({e.strerror or type(e).__name__}); "
                        "start one with `ray start --head` or leave --address out for a local Ray") from None
