"""The on-disk layout of a sweep, owned here and nowhere else. Reads JSON and safetensors only: a sweep
folder received from someone else is never unpickled by export, compare, report or evaluate.

    runs/                          runs_dir
      mlflow.db, mlartifacts/      the default MLflow store (tracking.py)
      teachers/<key>/              resolved teachers (teachers.py)
      <experiment>-train/          `rslad-tune train`'s checkpoints (cli.py)
      <experiment>.<date>-<time>/  an earlier sweep of that name, moved aside by a new one (archive_previous)
      .<experiment>.lock           held (flock) by the command running a sweep of that name (ExperimentDir.lock)
      <experiment>/                ExperimentDir: Ray Tune's experiment folder plus ours
        sweep.json                 tracking URI, MLflow parent run id, teacher folders, YAML path, epochs, metric
                                   (paths inside runs/ relative to it: a copy reads its own, relocation.py)
        space.yaml                 the YAML the sweep ran
        optuna.db                  the Optuna study (resume)
        mlflow-pending.jsonl       MLflow calls the sweep could not make (store away), replayed later (tracking.py)
        .trial-work/               the trials' scratch folders while the sweep runs (tuning.run_trial)
        trial_<id>/                TrialDir: Ray's params.json and result.json (JSON lines), checkpoint_<n>/
                                   (ours: trial.json, model.safetensors, best.safetensors, state.pt), and the
                                   cached numbers of compare (suite.json) and report (selection.json)
        best/                      the exported student (export.py)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

from ..trial import saved
from ..trial.config import TrialConfig
from ..trial.errors import LockHeld, SpecError
from ..trial.files import file_lock, read_json, write_json
from .relocation import read_back, stored, stored_uri
from .stores import check_sweep_store, choose_store, relocate_artifacts, sqlite_path
from .two_axes import best_trial

NOT_A_SWEEP = "is not a sweep folder of rslad-tune (no sweep.json); expected runs/<experiment>"
@dataclass(frozen=True)
class TrialDir:
    """One trial's folder: Ray's JSON files and our checkpoint (the latest one Ray kept)."""

    path: Path

    @property
    def trial_id(self) -> str:
        return self.result.get("trial_id") or self.path.name.removeprefix("trial_")

    @cached_property
    def result(self) -> dict:
        """The last result Ray recorded (the last epoch reported), {} if none."""
        f = self.path / "result.json"
        lines = [ln for ln in f.read_text(errors="replace").splitlines() if ln.strip()] if f.is_file() else []
        try:
            last = json.loads(lines[-1]) if lines else {}
        except ValueError:
            return {}
        return saved.numbers(last, f, "Ray's last result")  # strings for numbers: one line, not a TypeError later

    @cached_property
    def checkpoint(self) -> Path | None:
        done = sorted(p for p in self.path.glob("checkpoint_*") if (p / "trial.json").is_file())
        return done[-1] if done else None

    @cached_property
    def _saved(self) -> dict:
        if not self.checkpoint:
            return {}
        f = self.checkpoint / "trial.json"
        raw = saved.mapping(read_json(f, "trial.json"), f, "the trial and its history")
        return {**raw, "history": saved.history(raw.get("history"), f)}

    @property
    def config(self) -> dict:
        if "trial" in self._saved:
            return self._saved["trial"]
        return read_json(self.path / "params.json", "params.json") if (self.path / "params.json").is_file() else {}

    @property
    def trial_config(self) -> TrialConfig:
        """Checked as the YAML's trial keys are (an absurd width is refused before any model is built)."""
        where = self.checkpoint / "trial.json" if "trial" in self._saved else self.path / "params.json"
        return saved.trial_config(self.config, where)

    @property
    def history(self) -> list[dict]:
        return self._saved.get("history") or []

    def best_entry(self) -> dict:
        """The history's entry of the trial's best epoch: a cut or changed trial.json is one line naming it, before
        any work (export, compare and report all read it first)."""
        return saved.history_epoch(self.history, self.result.get("best_epoch"), self.checkpoint / "trial.json")

    def check_saved(self) -> TrialConfig:
        """The trial's saved keys and its history's best entry checked (before torch is imported); its config."""
        self.best_entry()
        return self.trial_config

    @property
    def error(self) -> str | None:
        """The trial's last error; None without one, or when the trial ran every epoch after it (a retry that
        succeeded: Ray leaves the error.txt of the attempt that failed)."""
        f = self.path / "error.txt"
        if not f.is_file() or 0 < int(self.config.get("epochs") or 0) <= int(self.result.get("epoch") or 0):
            return None
        lines = [ln.strip() for ln in f.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else "trial failed"

    @property
    def finished(self) -> bool:
        """Trained at least one epoch to a checkpoint, without an error."""
        return self.checkpoint is not None and "best_pgd_acc" in self.result and self.error is None

    def weights(self, which: str = "best") -> Path:
        """best: the epoch kept by validation PGD accuracy (the last for a method without attacks); last: the last."""
        return self.checkpoint / ("best.safetensors" if which == "best" else "model.safetensors")

    def score(self, which: str, splits, columns, *, n: int | None = None, n_aa: int | None = None, seed: int = 0,
              device="cpu", log=None) -> dict[str, float]:
        """The `which` checkpoint's accuracy per column on the first `n` test images (AutoAttack on the first
        `n_aa`), through the one scoring function: cached beside the weights (`<best|model>.scores.json`)."""
        from ..trial.files import file_digest, load_weights
        from ..trial.scoring import score
        from ..trial.trainer import make_student

        cfg, weights = self.trial_config, self.weights(which)
        x, y = splits.test_x[:n], splits.test_y[:n]
        load = lambda: load_weights(make_student(cfg, splits), weights, f"{which} checkpoint").to(device)  # noqa: E731
        return score(load, x, y, cfg.eval_epsilon, columns, seed=seed, n_aa=n_aa, cache=weights.with_suffix(".scores.json"),
                     digest=file_digest(weights), log=log)

    def cached(self, name: str) -> dict | None:
        f = self.path / name
        return read_json(f) if f.is_file() else None

    def store(self, name: str, row: dict) -> None:
        write_json(row, self.path / name)


def check_free(out: Path, force: bool, key: str = "--out") -> None:
    """Nothing this tool wrote (an export, a checkpoint folder, a report) or anything else is overwritten unless
    asked: an existing, non-empty `out` without --force is one line, before any work."""
    out = Path(out)
    if force or not (out.exists() or out.is_symlink()) or (out.is_dir() and not any(out.iterdir())):
        return
    what = "exists and holds files (an earlier export or another folder)" if out.is_dir() else "exists (an earlier run's)"
    raise SpecError(key, str(out), f"{what}: nothing was overwritten; give --force to replace it, or choose another place")


def replace_folder(tmp: Path, out: Path) -> Path:
    """Put the fully written folder `tmp` at `out`, all its files at once (renames in one folder); what was at
    `out` is removed only once the new folder is in place."""
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    else:
        tmp.rename(out)
    return out


_WARNED: set[str] = set()


def _warn_once(line: str) -> None:
    """One warning line per process, however many times a command opens the folder."""
    if line not in _WARNED:
        _WARNED.add(line)
        print(f"rslad-tune: warning: {line}", file=sys.stderr, flush=True)


def _in_use(holder: str, command: str) -> str:
    """Who holds an experiment's lock, in the words that fit: a sweep, or another command on its folder."""
    verb = lambda text: (re.findall(r"rslad-tune (export|evaluate|compare|report|resume)\b", text) or ["sweep"])[0]  # noqa: E731
    held, mine = verb(holder or ""), verb(command)
    what = "a running sweep" if held in ("sweep", "resume") else f"another `rslad-tune {held}`"
    again = ", or choose another experiment name" if held in ("sweep", "resume") and mine == "sweep" else ""
    return f"is in use by {what} ({holder or 'pid unknown'}); wait for it to end or stop it{again}"


def find_experiment(path: Path, tracking_flag: str | None = None) -> "ExperimentDir | None":
    """The sweep folder at `path` or one or two levels above it (best/, trial_<id>/, a checkpoint), or None."""
    for p in (path, path.parent, path.parent.parent):
        if (p / "sweep.json").is_file():
            return ExperimentDir(p, tracking_flag)
    return None


class ExperimentDir:
    """runs/<experiment>: sweep.json, the trials, best/."""

    def __init__(self, path: str | Path, tracking_flag: str | None = None):
        self.path = Path(path)
        self.tracking_flag = tracking_flag  # the command's --tracking-uri (stores.choose_store), None: not given
        self.pending_file = self.path / "mlflow-pending.jsonl"  # MLflow calls the sweep could not make (replayed later)
        self.work_dir = self.path / ".trial-work"  # the trials' scratch folders, removed when the sweep ends

    @classmethod
    def open(cls, path: str | Path, key: str = "experiment", tracking_flag: str | None = None) -> "ExperimentDir":
        """An existing sweep folder, or the one error for anything else."""
        exp = cls(path, tracking_flag)
        if not exp.sweep_file.is_file():
            raise SpecError(key, str(path), NOT_A_SWEEP)
        if not exp._ours():
            raise SpecError(key, str(path), "holds a sweep.json that is not rslad-tune's (not a JSON mapping)")
        return exp

    def _ours(self) -> bool:
        """sweep.json is this tool's: a JSON mapping (an unreadable one: SpecError naming it)."""
        return isinstance(self.sweep, dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sweep_file(self) -> Path:
        return self.path / "sweep.json"

    @cached_property
    def sweep(self) -> dict:
        return read_json(self.sweep_file, "sweep.json")

    def write_sweep(self, info: dict, space_text: str) -> None:
        root = self.path.parent.resolve()  # paths inside runs/ stored relative to it: a copy reads its own (relocation.py)
        info = {**info, "tracking_uri": stored_uri(info.get("tracking_uri"), root),
                "teacher_dirs": {k: stored(v, root) for k, v in (info.get("teacher_dirs") or {}).items()}}
        self.path.mkdir(parents=True)
        write_json(info, self.sweep_file)
        (self.path / "space.yaml").write_text(space_text)
        self.__dict__.pop("sweep", None)

    @property
    def space_file(self) -> Path:
        return self.path / "space.yaml"

    @property
    def recorded_tracking_uri(self) -> str | None:
        """The store sweep.json names: a relative SQLite path is under this folder's runs root (a path that
        climbs out of it names nothing). Only resume, of a folder it checked as its own, uses it as it is."""
        uri = self.sweep.get("tracking_uri")
        if not isinstance(uri, str):
            return None
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            rel = Path(uri[len("sqlite:///"):])
            return None if rel.is_absolute() or ".." in rel.parts else f"sqlite:///{(self.path.parent / rel).resolve()}"
        return uri

    @cached_property
    def tracking_uri(self) -> str | None:
        """The store this command logs to and replays into (stores.choose_store, its flag), if it is the sweep's own.
        A URI read from the folder is never contacted on its own say-so (a received folder could name any host).
        A missing SQLite store is not created (nothing is logged); a broken or locked one is one line (stores.py);
        a copied one's artifact locations are moved into this runs folder first."""
        recorded, current = self.recorded_tracking_uri, choose_store(self.tracking_flag, None, self.path.parent)
        if recorded is None:
            return None
        if recorded != current:
            self.store_note = (f"{self.sweep_file} names the MLflow store {recorded[:300]!r}, this command uses "
                               f"{current[:300]!r}: nothing is logged or replayed; give --tracking-uri to use the sweep's store")
        elif sqlite_path(recorded) is not None and not sqlite_path(recorded).exists():
            self.store_note = (f"{self.sweep_file} names the MLflow store {recorded[:300]!r}, which does not exist: nothing "
                               "is logged (copy runs/mlflow.db with the sweep to keep its MLflow runs)")
        else:
            check_sweep_store(recorded, self.parent_run_id, "tracking URI")
            relocate_artifacts(recorded, self.path.parent, lambda line: print(f"[rslad-tune] {line}", flush=True))
            return recorded
        _warn_once(self.store_note)
        return None

    store_note = ""  # why tracking_uri is None for a sweep that names a store: said where a run is looked for

    @property
    def parent_run_id(self) -> str | None:
        return self.sweep.get("parent_run_id")

    @property
    def teacher_dirs(self) -> dict[str, str]:
        """Teacher name -> its folder, stored relative to the runs folder (an older sweep's absolute ones: read under
        this runs folder's teachers/ when it holds them)."""
        return {k: str(read_back(v, self.path.parent, "teachers") or v) for k, v in (self.sweep.get("teacher_dirs") or {}).items()}

    @property
    def optuna_db(self) -> Path:
        return self.path / "optuna.db"

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    def trials(self) -> list[TrialDir]:
        return [TrialDir(p) for p in sorted(self.path.glob("trial_*")) if p.is_dir()]

    def finished_trials(self, what: str = "to export") -> list[TrialDir]:
        done = [t for t in self.trials() if t.finished]
        if not done:
            raise SpecError("experiment", str(self.path), f"has no finished trial with a checkpoint {what}")
        return done

    def best_trial(self) -> TrialDir:
        """The sweep's answer, by `report.objective` (two_axes.best_trial): exported, named on the parent run."""
        return best_trial(self.finished_trials(), self.sweep.get("report_objective") or "pgd",
                          self.sweep.get("report_clean_weight", 0.5))

    def publish_best(self, tmp: Path) -> Path:
        """Replace best/ with the fully written folder `tmp` (the old export goes only once the new one is in place)."""
        return replace_folder(tmp, self.best_dir)

    def check_free(self, out: Path, force: bool) -> None:
        check_free(out, force, "export")

    def scratch(self, name: str) -> Path:
        """An empty temporary folder inside the experiment folder (renamed into place when complete). Whatever ends
        the command first (an error, Ctrl-C, SIGTERM), it is removed once this ExperimentDir is gone, or at exit."""
        tmp = self.path / f".{name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        weakref.finalize(self, shutil.rmtree, tmp, True)  # a no-op once publish_best renamed it
        return tmp

    @contextmanager
    def lock(self, command: str) -> Iterator["ExperimentDir"]:
        """Held by the command that runs a sweep of this name, for its whole run: a second sweep or resume of
        the same experiment is refused in one line naming the holder (released when the process ends)."""
        lock = self.path.with_name(f".{self.name}.lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            held = file_lock(lock, f"pid {os.getpid()}: {command}", wait=False)
            held.__enter__()
        except LockHeld as e:
            raise SpecError("experiment", str(self.path), _in_use(e.holder, command)) from None
        except OSError as e:  # runs/ read-only, the lock's path a folder: one line, nothing done
            raise SpecError("experiment", str(lock), f"its lock file cannot be made ({e.strerror or type(e).__name__}); "
                            "give a runs folder you can write to") from None
        try:
            yield self
        finally:
            held.__exit__(None, None, None)  # the note cleared, the lock released

    def check_owned(self, key: str = "--resume") -> None:
        """Resuming unpickles Ray's saved state (tuner.pkl, searcher state), which can run code: only a folder whose
        every file belongs to the user resuming it is trusted. SpecError naming the first file that does not."""
        me = os.getuid()
        for root, dirs, files in os.walk(self.path):
            for name in [".", *dirs, *files]:
                p = Path(root) / name
                uid = p.lstat().st_uid
                if uid != me:
                    raise SpecError(key, str(self.path), f"holds {p} owned by uid {uid}, not by you (uid {me}): resuming "
                                    "unpickles Ray's saved state, which can run code, so only a sweep folder you wrote "
                                    "yourself is resumed")

    def check_replaceable(self) -> None:
        """A new sweep moves aside only an earlier sweep of this tool; anything else at the path is refused."""
        if not (self.path.exists() or self.path.is_symlink()):
            return
        if not (self.path.is_dir() and self.sweep_file.is_file() and self._ours()):
            raise SpecError("experiment", str(self.path), "exists and is not a sweep folder of rslad-tune (no sweep.json "
                            "of ours): nothing was moved; move it away yourself or choose another experiment name")

    def archive_previous(self, log: Callable[[str], None]) -> None:
        """A new sweep under an existing name: move the old sweep folder aside (nothing is deleted)."""
        if not (self.path.exists() or self.path.is_symlink()):
            return
        self.check_replaceable()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.path.stat().st_mtime))
        dest = self.path.with_name(f"{self.name}.{stamp}")
        n = 1
        while dest.exists():
            dest = self.path.with_name(f"{self.name}.{stamp}-{n}")
            n += 1
        self.path.rename(dest)
        log(f"previous sweep folder moved to {dest}")
