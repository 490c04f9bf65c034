"""Where an MLflow run came from and what it is called: source tags (command, git commit, version), readable
trial run names, and a failed trial's reason. Plain values only; tracking.py logs them.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


def source_tags() -> dict[str, str]:
    """Where a run came from, in MLflow's own tags: the user, the command line, the git commit of this checkout,
    the version (the same on every run of one command: the parent's and every trial's)."""
    return dict(_source_tags())


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


@lru_cache(maxsize=1)
def _source_tags() -> tuple[tuple[str, str], ...]:
    import subprocess
    import sys
    from importlib.metadata import PackageNotFoundError, version

    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "rslad-tune", "mlflow.user": _user(),
            "rslad_tune.command": " ".join(["rslad-tune", *sys.argv[1:]])[:5000]}
    try:
        tags["rslad_tune.version"] = version("rslad-tune")
    except PackageNotFoundError:
        pass
    try:
        repo = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0 and commit.stdout.strip():
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            tags["rslad_tune.git_dirty"] = str(bool(dirty)).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    return tuple(tags.items())


def trial_run_name(trial_id: str, config: dict) -> str:
    """A readable child-run name: <trial id>-<teacher or method>[-a<alpha>]-e<epsilon>[-s<seed>]. The whole trial
    id, as in Ray's table (trial_<id>), the trial folders, the summary table and the plots' legends."""
    from ..trial.methods import METHODS

    method = config.get("method")
    distils = method in METHODS and METHODS[method].needs_teacher
    parts = [trial_id, str(config.get("teacher") if distils else method)]
    if distils and config.get("alpha") is not None:
        parts.append(f"a{config['alpha']:.2f}")
    if METHODS.get(method) and METHODS[method].adversarial and config.get("epsilon") is not None:
        parts.append(f"e{config['epsilon']:.3f}")
    if config.get("seed"):
        parts.append(f"s{config['seed']}")
    return "-".join(parts)


def trial_error_text(trial) -> str:
    """The last line of the trial's error (Ray keeps the traceback in error.txt / error.pkl)."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text(errors="replace").strip().splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()
    return "trial failed (no error file)"
