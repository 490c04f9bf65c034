"""What every command on a sweep folder (export, evaluate, compare, report) does before its own work, in one place:
refuse a symbolic link out of the folder (relocation.check_contained, resume's rule too), an earlier report,
comparison or eval.json without --force (export's rule), and a broken or locked MLflow store; then hold the
experiment's lock for the whole command and replay the MLflow calls the sweep could not make (its store was away)
into this command's store, if it is the sweep's own. A store copied with its runs folder is moved into it first (ExperimentDir.tracking_uri)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..trial.saved import export_folder
from .layout import check_free, find_experiment
from .relocation import check_contained

# what report and compare write over an earlier run's (numbers on 2,000 images, say): replaced only with --force
OUTPUTS = {"report": ("selection.md", "selection.json", "selection.png", "selection_curves.png"),
           "compare": ("comparison.md", "comparison.json")}


@contextmanager
def on_folder(args, log: Callable[[str], None]) -> Iterator[None]:
    path = Path(getattr(args, "experiment_dir", None) or args.path)
    for name in OUTPUTS.get(args.verb, ()):
        check_free(path / name, args.force, args.verb)
    if args.verb == "evaluate":  # its eval.json (an exported student's: PATH/best/eval.json), or --out
        check_free(Path(args.out) if args.out else export_folder(path) / "eval.json", args.force,
                   "--out" if args.out else "evaluate")
    exp = find_experiment(path, getattr(args, "tracking_uri", None))
    if exp is None or not exp._ours():
        if path.is_dir():  # a model folder outside any sweep (evaluate): the same rule for what it writes there
            check_contained(path, "path")
        yield
        return
    check_contained(exp.path)
    with exp.lock(" ".join(["rslad-tune", *sys.argv[1:]])):  # a sweep starting or running there is refused, and v.v.
        uri = exp.tracking_uri  # a broken or locked store is one line now, before any work
        if exp.pending_file.is_file():
            from .tracking import replay_pending

            replay_pending(exp.pending_file, uri, exp.sweep.get("experiment", exp.name), exp.parent_run_id, log)
        yield
