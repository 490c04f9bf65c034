"""Where a sweep's paths point, decided once, right after parsing.

The parser (spec.py) keeps every path as the YAML or the command line wrote it and reads no environment variable,
working directory or home. `place` is the one step that does: `~` expanded (`~nouser/...` is one line naming the
key), relative paths made absolute (runs_dir and --runs-dir against the working directory, a teacher's file
against the YAML's folder), and what the environment gives filled in (RobustBench's model dir). Every command
that reads a YAML calls it before anything is checked or written; nothing rewrites the spec's paths afterwards.
"""
from __future__ import annotations

import os
from typing import Mapping

from ..teachers.sources import SOURCES
from ..trial.config import expand_user
from ..trial.errors import SpecError
from .spec import SweepSpec


def place(spec: SweepSpec, runs_dir: str | None = None, env: Mapping[str, str] | None = None) -> SweepSpec:
    """`spec` with its paths placed (in place; returned for chaining). `runs_dir`: --runs-dir, which wins over the
    YAML's. A bad path is a SpecError located in the YAML."""
    env = os.environ if env is None else env
    try:
        spec.runs_dir = str(expand_user("runs_dir", runs_dir or spec.runs_dir).absolute())
        if spec.trial.data_dir is not None:  # kept as written (the soft-label caches key it so); `~nouser` refused now
            expand_user("data.data_dir", spec.trial.data_dir)
        for teacher in spec.teachers.values():
            SOURCES[teacher.source].place(teacher, env)
    except SpecError as e:
        raise e.located(spec.path) if spec.path and not e.where else e
    return spec
