"""A sweep folder is self-contained: copied or moved (to share a result, to back it up), a command on the copy never
writes into the original, and works with the original gone.

- Paths a sweep stores (sweep.json's store and teacher folders, best/config.json's source) are relative to the runs
  folder or the sweep folder and resolved when read (`stored`, `read_back`). An absolute one (a sweep of an earlier
  version) is read inside this folder only: re-rooted at its `teachers/` or `trial_*` part.
- What Ray pickled with absolute paths (the Optuna study's database, our Tune callbacks) is pointed at the folder being
  resumed while Tune restores it (`resuming`). MLflow's artifact locations: stores.relocate_artifacts.
- A command that writes inside a sweep refuses a folder holding a symbolic link out of it (`check_contained`).
"""
from __future__ import annotations

import fnmatch
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..trial.errors import SpecError


def stored(path: str | Path, base: Path) -> str:
    """`path` as a sweep stores it: relative to `base` (POSIX) when inside it, else as it is."""
    try:
        return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return str(path)


def stored_uri(uri: str | None, base: Path) -> str | None:
    """sqlite:////abs/runs/mlflow.db -> sqlite:///mlflow.db (relative to the runs folder `base`); any other URI as it is."""
    if isinstance(uri, str) and uri.startswith("sqlite:////"):
        rel = stored(uri[len("sqlite:///"):], base)
        return f"sqlite:///{rel}" if not Path(rel).is_absolute() else uri
    return uri


def read_back(value: Any, base: Path, anchor: str) -> Path | None:
    """A stored path as this folder reads it: a relative one under `base` (one climbing out of it: None); an absolute
    one inside `base` as it is; an absolute one elsewhere (an earlier version stored them so, and the folder may have
    been copied since) re-rooted under `base` from its last part matching `anchor` (`teachers`, `trial_*`) when that
    exists, else None: a command never reads its way back into the original."""
    if not isinstance(value, str) or not value:
        return None
    p, base = Path(value), Path(base)
    if not p.is_absolute():
        return None if ".." in p.parts else base / p
    if p.resolve().is_relative_to(base.resolve()):
        return p
    parts = p.parts
    for i in range(len(parts) - 1, 0, -1):
        if fnmatch.fnmatchcase(parts[i], anchor):
            here = base.joinpath(*parts[i:])
            return here if here.exists() else None
    return None


def check_contained(folder: str | Path, key: str = "experiment") -> None:
    """The one rule of every command that writes inside a sweep folder (export, evaluate, compare, report, resume):
    a symbolic link in it that leads out of it is refused in one line, before any work. Written through, it would put
    scores, reports or checkpoints into a folder that is not the sweep's (the original's, for a copy made with links)."""
    root = Path(folder).resolve()
    for dirpath, dirs, files in os.walk(root):  # (links to folders are listed, never entered)
        for name in [*dirs, *files]:
            p = Path(dirpath) / name
            if not p.is_symlink():
                continue
            try:
                target = p.resolve()
            except (OSError, RuntimeError):  # a loop of links: nowhere inside either
                target = Path(os.readlink(p))
            if not target.is_relative_to(root):
                raise SpecError(key, str(Path(folder) / p.relative_to(root)), f"is a symbolic link out of the sweep "
                                f"folder (to {target}): a command that writes inside a sweep never follows one; replace it "
                                "with a copy of what it points to, or remove it")


_RESUMING: dict[str, Any] = {}  # the folder being resumed and its MLflow tracker, while Tune restores it


def resumed(what: str) -> Any:
    """`folder` or `tracker` of the sweep Tune is restoring now (None outside `resuming`)."""
    return _RESUMING.get(what)


@contextmanager
def resuming(folder: Path, tracker: Any) -> Iterator[None]:
    """While Tune restores and runs a resumed sweep: Ray's pickles (tuner.pkl, the searcher's state) name the Optuna
    study's database and our callbacks' store and folder by the absolute paths of where the sweep ran first. They are
    read as this folder's: the study's optuna.db here (before Optuna opens it: it would create tables in a file
    there), and the callbacks use this command's tracker and folder (tracking.MLflowTrialCallback,
    manifest.ManifestCallback)."""
    from optuna.storages import RDBStorage

    db = f"sqlite:///{(Path(folder) / 'optuna.db').resolve()}"
    setstate = RDBStorage.__setstate__

    def here(self, state: dict) -> None:
        url = state.get("url")
        if isinstance(url, str) and url.startswith("sqlite:///") and Path(url[len("sqlite:///"):]).name == "optuna.db":
            state = {**state, "url": db}
        setstate(self, state)

    _RESUMING.update(folder=Path(folder), tracker=tracker)
    RDBStorage.__setstate__ = here
    try:
        yield
    finally:
        RDBStorage.__setstate__ = setstate
        _RESUMING.clear()
