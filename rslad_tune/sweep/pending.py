"""Calls to a store that may be away for a while (an MLflow server restarting, a SQLite file another
sweep holds locked): each is retried briefly, then given up with one warning line and written to a
JSON-lines file of pending records that a later command replays (tracking.replay_pending). Never a
traceback: what the store missed is in that file, and the work goes on.

Knows nothing of MLflow: a record is a plain JSON object, the call a function.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..trial.files import write_text

RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before the 2nd, 3rd and 4th try
QUIET_S = 30.0  # once a call has failed every try, later calls within this window get one try each


class Flaky:
    """`attempt(what, fn, record)` calls fn with retries; when every try fails, warns in one line (once per outage),
    appends `record` to the pending file and returns (False, None)."""

    def __init__(self, label: str, pending: Path | None, warn: Callable[[str], None] = print,
                 delays: tuple[float, ...] = RETRY_DELAYS):
        self.label, self.pending, self.warn, self.delays = label, pending, warn, delays
        self.down_since: float | None = None
        self.failed = 0  # calls given up on (and recorded, when they came with a record)

    def attempt(self, what: str, fn: Callable[[], Any], record: dict | None = None) -> tuple[bool, Any]:
        quiet = self.down_since is not None and time.monotonic() - self.down_since < QUIET_S
        delays = () if quiet else self.delays
        error: Exception | None = None
        for i in range(len(delays) + 1):
            try:
                value = fn()
            except Exception as e:  # any failure of the store, its client or the network
                error = e
                if i < len(delays):
                    time.sleep(delays[i])
                continue
            self.down_since = None  # answering again: a later outage gets its own warning line
            return True, value
        self.failed += 1
        if self.down_since is None:
            where = f"; kept in {self.pending} for the next command on this experiment" if self.pending else ""
            detail = " ".join(f"{type(error).__name__}: {error}".split())[:160]
            self.warn(f"warning: could not {what} in {self.label} ({detail}); going on without it{where}")
        self.down_since = time.monotonic()
        if record is not None and self.pending is not None:
            append_record(self.pending, record)
        return False, None


def append_record(path: Path, record: dict) -> None:
    """One JSON line, appended and flushed (only the sweep's driver appends: it holds the experiment's lock).
    A file a record names is written by its path relative to the sweep folder (the pending file's folder)."""
    if isinstance(record.get("path"), str):
        try:
            record = {**record, "path": Path(record["path"]).resolve().relative_to(path.parent.resolve()).as_posix()}
        except ValueError:
            pass  # outside the folder: written as it is, and refused by replayable()
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_records(path: Path) -> list[dict]:
    """The pending records, oldest first; a torn last line (a crash mid-append) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def replayable(path: Path, records: list[dict], ops: set[str], warn: Callable[[str], None] = print) -> list[dict]:
    """The records this tool could have written: a known call, and a file only by a relative path inside the sweep
    folder (resolved here; a received folder's record naming /etc/passwd or ../x is refused, never uploaded).
    Each refused one is dropped, and the lot named in one warning line."""
    folder, out, refused = path.parent.resolve(), [], []
    for rec in records:
        name = rec.get("path")
        if rec.get("op") not in ops:
            refused.append(rec.get("op"))
            continue
        if name is not None:
            target = (folder / name).resolve() if isinstance(name, str) and not Path(name).is_absolute() else None
            if target is None or not target.is_relative_to(folder):
                refused.append(name)
                continue
            rec = {**rec, "path": str(target)}
        out.append(rec)
    if refused:
        first = repr(refused[0])[:80]
        warn(f"warning: {path}: {len(refused)} pending record(s) refused and removed (first: {first}): a record names "
             f"a known MLflow call and only files inside {path.parent}")
    return out


def keep_records(path: Path, records: list[dict]) -> None:
    """Rewrite the file with what is still pending (atomically), or remove it when nothing is."""
    if records:
        write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), path)
    else:
        path.unlink(missing_ok=True)
