"""The project's errors, in one place. Each one's `str()` is one line: the CLI prints it as `rslad-tune: error: ...`
and exits 2 (SpecError, DataError); TrialDiverged ends a trial as failed."""
from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """Bad user input. `str(err)` is one line: where, key, value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, where: str = ""):
        self.key, self.value, self.allowed, self.where = key, value, allowed, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{key}: {value!r} is not allowed; {allowed}")

    def located(self, where: str) -> "SpecError":
        return SpecError(self.key, self.value, self.allowed, where)


class DataError(ValueError):
    """Data that cannot be found or read. One line: key, value, what is expected."""


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite."""
