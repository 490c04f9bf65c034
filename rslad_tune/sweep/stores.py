"""The SQLite files of a sweep (runs/mlflow.db, runs/<experiment>/optuna.db), checked before a command changes
anything, with the standard library only (no MLflow or Optuna: nothing is created or migrated by looking):

- the sweep's own MLflow store that is no SQLite file, is empty (0 bytes: SQLite would take it for a new store), or
  lacks the sweep's parent run: one SpecError line (exit 2); a missing one: None (nothing is logged, none is created);
- a store another process holds locked: one StoreBusy line (exit 1), before the sweep's run changes status or
  anything is scored (every command on a sweep folder, and resume);
- a store copied with its runs folder: MLflow keeps artifact locations absolute, so they are moved into this runs
  folder's mlartifacts/ before anything is logged (`relocate_artifacts`), never left naming the original's.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from ..trial.errors import SpecError, StoreBusy

SQLITE_HEADER = b"SQLite format 3\x00"
# MLflow 3.17's columns that hold an artifact location (the experiment's, a run's, a logged model's, a model version's)
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"),
                    ("model_versions", "source"), ("model_versions", "storage_location"))


def check_tracking_uri(uri: Any, key: str = "--tracking-uri") -> str:
    if not isinstance(uri, str) or not uri:
        raise SpecError(key, uri, "must be an MLflow tracking URI: sqlite:///path.db, http(s)://host:port, or file:///dir")
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme not in ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks"):
        raise SpecError(key, uri, "must be an MLflow tracking URI: sqlite:///path.db, http(s)://host:port, or file:///dir")
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise SpecError(key, uri, "a SQLite URI is sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if scheme in ("http", "https") and len(uri.split("://", 1)) != 2:
        raise SpecError(key, uri, "an HTTP tracking URI is http://host:port")
    return uri


TRACKING_ENV = "MLFLOW_TRACKING_URI"


def choose_tracking_uri(flag: str | None, yaml_uri: str | None, env: dict[str, str] | None = None) -> str | None:
    """The MLflow store of a sweep or a train run: `--tracking-uri`, else the YAML's `tracking_uri`, else
    $MLFLOW_TRACKING_URI (empty: unset), else None, which resolve_store makes the default
    sqlite:///<runs_dir>/mlflow.db. Each is checked and named by where it came from."""
    if flag is not None:
        return check_tracking_uri(flag, "--tracking-uri")
    if yaml_uri is not None:
        return check_tracking_uri(yaml_uri, "tracking_uri")
    value = (os.environ if env is None else env).get(TRACKING_ENV)
    if not value:
        return None
    try:
        return check_tracking_uri(value, TRACKING_ENV)
    except SpecError as e:
        raise SpecError(f"${TRACKING_ENV}", value, f"{e.allowed} (the environment variable; unset it or give "
                        "--tracking-uri)") from None


def choose_store(flag: str | None, yaml_uri: str | None, runs_root: Path, env: dict[str, str] | None = None) -> str:
    """The one rule for the MLflow store a command uses: --tracking-uri, else the YAML's tracking_uri (folder commands
    have none), else $MLFLOW_TRACKING_URI (`env`; {}: ignore it, as a resumed sweep does), else the runs root's
    mlflow.db; resolved (resolve_store). Every command calls this once, with its own flag: no global."""
    return resolve_store(choose_tracking_uri(flag, yaml_uri, env), runs_root)


def resolve_store(uri: str | None, runs_root: Path) -> str:
    """None: the runs root's mlflow.db; a relative SQLite path: from the working folder; any other URI as it is."""
    if uri is None:
        return f"sqlite:///{(Path(runs_root) / 'mlflow.db').resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def sqlite_path(uri: str | None) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if isinstance(uri, str) and uri.startswith("sqlite:///") else None


def check_sweep_store(uri: str | None, parent_run_id: str | None, key: str, required: bool = False) -> None:
    """The store a sweep's MLflow runs are in: a file that is an SQLite database holding the sweep's parent run.
    A missing file is refused only where it is `required` (resume reopens the parent run)."""
    db = sqlite_path(uri)
    if db is None:
        return
    if not db.exists():
        if required:
            raise SpecError(key, uri, "does not exist: the sweep's MLflow runs are in that file; copy it with the sweep "
                            "(runs/mlflow.db) or give the sweep's store with --tracking-uri")
        return
    what = "is a folder" if db.is_dir() else None
    try:
        with open(db, "rb") as f:
            head = f.read(16)
    except OSError as e:
        what = what or f"cannot be read ({e.strerror})"
        head = b""
    if what is None and not head:
        what = "is empty (0 bytes), not the sweep's store"
    elif what is None and head != SQLITE_HEADER:
        what = "is not an SQLite database (its first bytes say otherwise)"
    if what is None and parent_run_id:
        found = _query(db, "SELECT 1 FROM runs WHERE run_uuid = ?", (parent_run_id,))
        what = None if found else f"holds no run {parent_run_id} (the sweep's MLflow run, sweep.json)"
    if what:
        raise SpecError(key, uri, f"{what}: nothing was changed; give the sweep's own store with --tracking-uri, or put "
                        "it back (a store that lost its runs is not replaced by an empty one)")
    check_unlocked(db, key)  # a writer elsewhere (a dashboard, a stuck command): exit 1 before anything changes


def _query(db: Path, sql: str, args: tuple) -> list:
    """Rows of a read-only query; [] for a database without that table (a store with no runs)."""
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        if "no such table" in str(e):
            return []
        if "locked" in str(e):
            raise StoreBusy("tracking URI", f"sqlite:///{db}", "is locked by another process (SQLite: database is "
                            "locked); nothing was changed: run the command again when it is free") from None
        raise SpecError("tracking URI", f"sqlite:///{db}", f"cannot be read as an MLflow store ({e})") from None


def check_unlocked(db: Path, key: str) -> None:
    """A SQLite file another process holds locked (a dashboard writing, a stuck command) is one StoreBusy line now,
    not a traceback after the sweep's MLflow run was reopened. Tried by taking the write lock and giving it back."""
    if not Path(db).is_file():
        return
    try:
        con = sqlite3.connect(db, timeout=1.0, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "locked" not in str(e) and "busy" not in str(e):
            raise SpecError(key, str(db), f"cannot be opened as an SQLite database ({e})") from None
        raise StoreBusy(key, str(db), "is locked by another process (SQLite: database is locked); nothing was changed: "
                        "let that process finish or close it, then run the command again") from None


def check_resume_stores(uri: str | None, parent_run_id: str | None, optuna_db: Path, key: str = "--resume") -> None:
    """resume reopens the sweep's MLflow run and its Optuna study: the store must hold the run (exit 2 if not), and
    neither file may be locked by another process (exit 1), checked before either is touched."""
    check_sweep_store(uri, parent_run_id, key, required=True)  # (the MLflow store's lock too)
    check_unlocked(optuna_db, key)


def relocate_artifacts(uri: str | None, runs_root: Path, log: Callable[[str], None] | None = None) -> int:
    """The runs folder's own store (runs/mlflow.db), copied or moved with it, still names the original's
    mlartifacts/ in every artifact location: rewritten to this folder's before anything is logged (a command on the
    copy would write into the original otherwise). Other stores (a server, a file elsewhere) are shared: left alone.
    Returns how many locations were rewritten."""
    db = sqlite_path(uri)
    root = Path(runs_root).resolve()
    if db is None or not db.is_file() or db.resolve().parent != root:
        return 0
    here = (root / "mlartifacts").as_uri()
    folders: dict[str, set[str]] = {}  # an mlartifacts/ the store names -> its experiments' folders in it
    for (loc,) in _query(db, "SELECT artifact_location FROM experiments", ()):
        if isinstance(loc, str) and loc.startswith("file://") and "/mlartifacts/" in loc:
            prefix, name = loc.rsplit("/mlartifacts/", 1)
            folders.setdefault(prefix + "/mlartifacts", set()).add(unquote(name.split("/")[0]))
    # moved: the old folder is gone, or this runs folder holds a copy of its experiments (else it is another runs
    # folder's, logged to this store on purpose: left alone)
    olds = {old for old, names in folders.items() if old != here and (
        not Path(unquote(old[len("file://"):])).is_dir() or any((root / "mlartifacts" / n).is_dir() for n in names))}
    if not olds:
        return 0
    con = sqlite3.connect(db, timeout=5)
    try:
        with con:  # one transaction: all locations move, or none
            n = 0
            tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            pairs = [(o, here) for o in olds] + [(unquote(o[len("file://"):]), str(root / "mlartifacts")) for o in olds]
            for old, new in pairs:  # (a location as a file URI, or as a plain path)
                for table, col in ARTIFACT_COLUMNS:
                    if table in tables:
                        n += con.execute(f"UPDATE {table} SET {col} = ? || substr({col}, ?) WHERE substr({col}, 1, ?) = ?",
                                         (new, len(old) + 1, len(old) + 1, old + "/")).rowcount
    except sqlite3.OperationalError as e:
        raise StoreBusy("tracking URI", uri, f"its artifact locations could not be moved into {root} ({e}); nothing "
                        "was changed: run the command again when the store is free") from None
    finally:
        con.close()
    if log:
        log(f"MLflow store {db} was copied from elsewhere: its {n} artifact location(s) now point into {here}")
    return n
