"""The MLflow UI of a sweep: the address that opens its runs, and `rslad-tune ui`, which serves the store a sweep
recorded with `mlflow ui` on 127.0.0.1.

MLflow 3.17's UI opens in its GenAI view (a setting each browser keeps, GenAI until changed), where a sweep shows
no runs; the URL parameter `workflowType=machine_learning` switches it to the "Model training" view, whose runs
table holds the sweep's parent run and its trials. Every address printed here carries it (docs/mlflow.md).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..trial.errors import SpecError
from .layout import ExperimentDir, find_experiment

HOST = "127.0.0.1"  # mlflow ui's own default: the UI is served to this machine only
PORT = 5000  # mlflow ui's own default port
TRAINING_VIEW = "workflowType=machine_learning"  # the UI's "Model training" view (its default is GenAI)
START_S = 180.0  # how long `mlflow ui` may take to answer (its imports take a while on a small CPU)


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def ui_base(uri: str, port: int = PORT) -> str:
    """Where a store's UI is: an MLflow server is its own UI; a local store is served by `mlflow ui` on HOST:port."""
    return uri.rstrip("/") if is_server(uri) else f"http://{HOST}:{port}"


def runs_url(base: str, experiment_id: str | None) -> str:
    """The experiment's runs table in the Model training view (no id: the list of experiments, in that view)."""
    where = f"experiments/{experiment_id}/runs" if experiment_id is not None else "experiments"
    return f"{base.rstrip('/')}/#/{where}?{TRAINING_VIEW}"


def experiment_ids(uri: str, names: list[str] | None = None) -> dict[str, str | None]:
    """name -> experiment id in the store (None: not there, or the store does not answer); without names, every
    experiment that has runs."""
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if db is not None and not db.is_file():  # looking never creates a store (MlflowClient would make an empty one)
        return dict.fromkeys(names or [])
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        if names is None:
            return {e.name: e.experiment_id for e in client.search_experiments()
                    if client.search_runs([e.experiment_id], max_results=1)}
        found = {n: client.get_experiment_by_name(n) for n in names}
        return {n: e.experiment_id if e else None for n, e in found.items()}
    except Exception:  # the store is away: the address of the list of experiments still opens the UI
        return dict.fromkeys(names or [])


def open_lines(exp_dir: str | Path, shown: str, tracking_uri: str | None = None) -> list[str]:
    """What a command that logged to a sweep's store prints last: how to open the sweep's runs (the command that
    serves a local store, and the URL). Nothing when this command (its --tracking-uri) did not use the sweep's store."""
    exp = ExperimentDir.open(exp_dir, tracking_flag=tracking_uri)
    uri = exp.tracking_uri  # None: another store, or the sweep's is missing (ExperimentDir.tracking_uri said why, once)
    if not uri:
        return []
    name = exp.sweep.get("experiment", exp.name)
    url = runs_url(ui_base(uri), experiment_ids(uri, [name])[name])
    if is_server(uri):
        return [f"MLflow UI: {url}"]
    return [f"MLflow UI: rslad-tune ui {shown}  (or: mlflow ui --backend-store-uri {uri})", f"then open: {url}"]


def _store(path: Path) -> tuple[str, list[str] | None]:
    """The store `rslad-tune ui PATH` serves and the experiments to link: a sweep folder's recorded store and its
    experiment, or a runs folder's mlflow.db and every experiment in it."""
    exp = find_experiment(path) if path.is_dir() else None
    if exp is not None and exp._ours():
        uri = exp.recorded_tracking_uri
        if not uri:
            raise SpecError("ui", str(path), "its sweep.json names no MLflow store inside its runs folder")
        names = [exp.sweep.get("experiment", exp.name)]
    elif (path / "mlflow.db").is_file():
        uri, names = f"sqlite:///{(path / 'mlflow.db').resolve()}", None
    else:
        raise SpecError("ui", str(path), "must be a sweep folder (runs/<experiment>, with sweep.json) or a runs folder "
                        "with mlflow.db: no MLflow store there")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise SpecError("ui", str(path), f"its sweep.json names the MLflow store {uri}, which is not there (moved or "
                        "deleted)")
    return uri, names


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_port(port: int | None) -> int:
    """--port if it is free (else one line); without it mlflow ui's 5000, or a free port when 5000 is taken."""
    if port is not None:
        if not _free(port):
            raise SpecError("--port", port, f"that port is taken on {HOST}; choose another, or leave --port out for a "
                            "free one")
        return port
    if _free(PORT):
        return PORT
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """mlflow ui and the web server it starts (its own process group): SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def cmd_ui(args, log: Callable[[str], None] = print) -> int:
    """The verb: serve the store a sweep (or a runs folder) recorded with `mlflow ui`, print the address of its runs,
    run until Ctrl-C (then stop the server and exit 0)."""
    path = Path(args.path)
    uri, names = _store(path)
    if is_server(uri):  # a server already serves it (not contacted here: the folder names it)
        log(f"{path} logged to the MLflow server {uri}; its runs: {runs_url(uri, None)}")
        return 0
    port = pick_port(args.port)
    base = ui_base(uri, port)
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", HOST,
                             "--port", str(port), "--workers", "1"], start_new_session=True)
    try:
        deadline = time.monotonic() + START_S
        while not _answers(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = f"exit status {proc.returncode}" if proc.returncode is not None else f"no answer in {START_S:.0f} s"
                log(f"mlflow ui did not start on {base} ({why}); its own lines above say why")
                return 1
            time.sleep(0.5)
        ids = experiment_ids(uri, names)
        for name, eid in ids.items():
            log(f"MLflow UI of {name}: {runs_url(base, eid)}")
        if not ids:
            log(f"MLflow UI: {runs_url(base, None)}")
        log(f"serving {uri} on {base} (the Model training view); Ctrl-C stops it")
        proc.wait()
        log(f"mlflow ui ended by itself (exit status {proc.returncode})")
        return 1 if proc.returncode else 0
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (interrupts.handled): the server goes too
        _stop(proc)
        log("MLflow UI stopped")
        return 0
    finally:
        _stop(proc)
