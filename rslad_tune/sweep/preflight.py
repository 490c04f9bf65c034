"""The checks of a sweep against this machine, its data, its files and its cluster, after the YAML is valid
and before anything is written: limits the machine cannot meet (a trial asking for more cores or GPUs than
a local Ray has never starts), a batch larger than the training split, teacher files that do not load or
hold NaN/inf, teacher files, zoo names and RobustBench models that do not exist, an unreachable Ray head, a runs_dir
that is a file. Each is one SpecError line; input that is legal but likely a mistake gives one warning line each (returned, printed by the CLI).
"""
from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from ..trial.errors import SpecError
from .spec import SweepSpec
from .stores import SQLITE_HEADER


def check_sweep(spec: SweepSpec, address: str | None = None, verb: str = "tune") -> list[str]:
    """Everything above, in order; returns the warnings."""
    check_places(spec, address)
    return check_data(spec, address, verb)


def check_places(spec: SweepSpec, address: str | None = None) -> None:
    """The checks that load no tensors (torch is not imported): runs_dir and what the sweep makes in it, the
    teachers' files and names (zoo, RobustBench's list, the network when a file must be downloaded), the cluster.
    The CLI checks the tracking store after these and before check_data, so that any of them is one line from a
    small process."""
    from ..teachers.sources import check_teachers
    from ..trial.config import DATA_KEYS
    from ..trial.data import prepare_data

    runs_dir = Path(spec.runs_dir)  # placed (places.place): `~` expanded, absolute
    if runs_dir.exists() and not runs_dir.is_dir():
        raise SpecError("runs_dir", spec.runs_dir, "is a file, not a folder; give a folder for the sweeps (default runs/)")
    check_writable(runs_dir, "runs_dir")  # read-only runs/: one line now, not an OSError after the teachers
    for inside in ("teachers", f".{spec.experiment}.lock"):  # what the sweep makes there must be able to be made
        if inside == "teachers" and (runs_dir / inside).exists() and not (runs_dir / inside).is_dir():
            raise SpecError("runs_dir", str(runs_dir / inside), "is a file where the teachers' folder goes; move it away")
        if inside.endswith(".lock") and (runs_dir / inside).is_dir():
            raise SpecError("runs_dir", str(runs_dir / inside), "is a folder where the experiment's lock file goes; move it away")
    prepare_data(spec.trial.dataset, spec.trial.data_dir)  # a corrupt .gz or a cut idx file: one line, before torch
    try:
        check_teachers(spec.teachers, {k: getattr(spec.trial, k) for k in DATA_KEYS})
    except SpecError as e:  # located in the YAML, like the parser's errors
        raise e.located(spec.path) if spec.path and not e.where else e
    if address:
        check_ray_address(address)


def check_data(spec: SweepSpec, address: str | None = None, verb: str = "tune") -> list[str]:
    """After check_places: the data is loaded (a data dir without data, val_size too large, ...; this imports
    torch), then every weights file a teacher names, the batch sizes, this machine (a local Ray), the schedule."""
    import torch

    from ..teachers.sources import check_teacher_weights
    from ..trial.data import load_data

    splits = load_data(spec.trial, torch.device("cpu"))
    check_teacher_weights(spec.teachers, splits)  # a corrupt, truncated, pickled or NaN weights file stops us here
    warnings = _check_batches(spec, len(splits.train_x), len(splits.train_x) + len(splits.val_x))
    if not address and verb == "tune":  # a local Ray: the trials must fit on this machine
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
    """An unreachable cluster is reported before teachers are trained or anything is written; `auto` must find
    a running cluster (`ray start --head`), `[::1]:6379` is an IPv6 host and port."""
    if address == "local":
        return
    if address == "auto":
        try:
            from ray._private.services import get_ray_address_from_environment

            found = get_ray_address_from_environment("auto", None)
        except Exception:  # ConnectionError: no cluster; anything else of Ray's lookup: the same answer
            found = None
        if not found or found == "auto":
            raise SpecError("--address", address, "no Ray cluster runs on this machine to find; start one with "
                            "`ray start --head`, give host:port, or leave --address out for a local Ray")
        address = found
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]:6379
    if not host or not port.isdigit() or int(port) > 65535:
        raise SpecError("--address", address, "must be host:port of a Ray head (e.g. 127.0.0.1:6379, [::1]:6379), "
                        "ray://host:10001 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise SpecError("--address", address, f"no Ray head answers there ({e.strerror or type(e).__name__}); "
                        "start one with `ray start --head` or leave --address out for a local Ray") from None


def check_store(uri: str, key: str = "tracking URI") -> None:
    """The MLflow store, before anything moves or any teacher is built: a SQLite file that is a database (or can be
    created: its folder writable), a server that answers on its port. (A server that answers but is no MLflow
    store is refused when the sweep opens it, still before any work: tuning.run_sweep.)"""
    from urllib.parse import urlsplit

    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if db.is_dir():
            raise SpecError(key, uri, "names a folder, not an SQLite file")
        if db.exists():
            try:
                with open(db, "rb") as f:
                    head = f.read(16)
            except OSError as e:
                raise SpecError(key, uri, f"cannot be read ({e.strerror}); give a store you can read and write") from None
            if head and head != SQLITE_HEADER:
                raise SpecError(key, uri, "is not an SQLite database (its first bytes say otherwise); give an MLflow "
                                "store, or a new file name for one")
            if not os.access(db, os.W_OK):
                raise SpecError(key, uri, "is read-only here; give a store you can write to")
        else:
            check_writable(db, key)
        return
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.hostname:
        try:
            socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=3).close()
        except OSError as e:
            raise SpecError(key, uri, f"no MLflow server answers there ({e.strerror or type(e).__name__}); start it "
                            "(`mlflow server`) or give another --tracking-uri") from None


def check_writable(path: Path, key: str) -> None:
    """`path` (a file or folder to be made) can be written: its nearest existing folder takes a new file (tried, not
    asked: os.access says yes to root on /proc or a read-only mount)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    target = Path(path).absolute()
    if p == target and p.is_file():
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_APPEND))  # opened, not changed
        except OSError as e:
            raise SpecError(key, str(path), f"cannot be written: {e.strerror or type(e).__name__}; give a writable place") from None
        return
    if not p.is_dir():
        raise SpecError(key, str(path), f"cannot be made: {p} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rslad-write-check-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = "is read-only for you" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "takes no new file"
        raise SpecError(key, str(path), f"cannot be written: {p} {why} ({e.strerror or type(e).__name__}); "
                        "give a writable place") from None
