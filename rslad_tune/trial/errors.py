"""The project's errors, in one place. Each one's `str()` is one line: the CLI prints it as `rslad-tune: error: ...`
and exits 2 (SpecError, DataError); TrialDiverged ends a trial as failed; Interrupted ends a command stopped by a
signal with 128 + its number; LockHeld is a lock another command holds."""
from __future__ import annotations

import math
import os
import signal
import stat
from typing import Any


class SpecError(ValueError):
    """Bad user input. `str(err)` is one line: where, key, value (its repr, cut short), what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, where: str = ""):
        self.key, self.value, self.allowed, self.where = key, value, allowed, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{_cut(str(key), 120)}: {short_repr(value)} is not allowed; {allowed}")

    def located(self, where: str) -> "SpecError":
        return SpecError(self.key, self.value, self.allowed, where)


class StoreBusy(RuntimeError):
    """A store another process holds (a locked SQLite file): one line naming it, the CLI exits 1 with nothing changed."""

    def __init__(self, key: str, value: Any, why: str):
        self.key, self.value = key, value
        super().__init__(f"{_cut(str(key), 120)}: {short_repr(value)} {why}")


class DataError(ValueError):
    """Data that cannot be found or read. One line: key, value, what is expected."""


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class SweepFailed(RuntimeError):
    """Ray Tune gave up on the sweep (e.g. its memory monitor killed trial workers). One line; `resume` is the saved
    sweep folder to continue, when Tune left one. The CLI exits 1."""

    def __init__(self, reason: str, resume: str | None = None):
        super().__init__(reason)
        self.resume = resume


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal; `resume` is the sweep folder to resume, when there is one."""

    def __init__(self, signum: int, resume: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.resume = signum, resume

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class LockHeld(Exception):
    """`files.file_lock(wait=False)` found the lock taken; `holder` is the note its holder wrote ('' if none)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def not_a_file(path) -> str:
    """What is at `path` when it is not a regular file, in the words of an error: a FIFO or /dev/zero is not "not
    found" (and reading it would never end), nor is a folder."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot be read ({e.strerror or type(e).__name__})"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "is a socket, not a regular file" if stat.S_ISSOCK(mode) else "is not a regular file"


STR_LIMIT = 300  # a string value (a path, most often) is shown whole up to this: users need the file it names


def _cut(text: str, limit: int) -> str:
    """Head and tail of a long text, in `limit` characters: a path's file name stays visible."""
    return text if len(text) <= limit else text[:limit // 2] + "…" + text[-(limit - limit // 2 - 1):]


_BRACKETS = {list: "[]", dict: "{}"}  # what YAML makes; the caps bound the rest


def _repr_pieces(v: Any):
    """repr(v) in pieces, lazily: a value that aliases expand to millions of items is never formatted whole."""
    if type(v) in _BRACKETS:
        yield _BRACKETS[type(v)][0]
        for i, item in enumerate(v.items() if type(v) is dict else v):
            yield ", " if i else ""
            if type(v) is dict:
                yield from _repr_pieces(item[0])
                yield ": "
                item = item[1]
            yield from _repr_pieces(item)
        yield _BRACKETS[type(v)][1]
    elif isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 300:  # str() of >4300 digits raises
        yield f"<an integer of about {int(v.bit_length() * math.log10(2)) + 1} digits>"
    elif isinstance(v, str):
        yield repr(_cut(v, STR_LIMIT))
    else:
        yield repr(v)


def short_repr(v: Any, limit: int = 80) -> str:
    """repr(v) in about `limit` characters: a long string keeps its head and tail, a long list or mapping its head."""
    if isinstance(v, str):
        return repr(_cut(v, max(limit, STR_LIMIT)))
    out, n = [], 0
    for piece in _repr_pieces(v):
        out.append(piece)
        n += len(piece)
        if n > limit:
            return "".join(out)[:limit] + "…"
    return "".join(out)
