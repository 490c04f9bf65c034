"""The files of a sweep folder that resume trusts (sweep.json, and what it unpickles: Ray's *.pkl and experiment
state, the searcher's state), each by its sha256, in `.rslad-manifest.json`, signed with a key that never leaves
this machine's cache folder (HMAC-SHA256). The sweep's driver rewrites it after every step of Tune (after Ray saved
its state) and when the sweep ends; resume refuses a folder whose manifest is missing, not signed by this key,
or does not list a trusted file with its digest: a folder received from elsewhere, or changed since, is never
unpickled, whoever owns its files (root included)."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from ray.tune import Callback

from ..trial.data import cache_dir
from ..trial.errors import SpecError
from ..trial.files import file_digest, verify_safetensors, write_json
from .relocation import resumed

NAME = ".rslad-manifest.json"


def trusted(folder: Path) -> list[Path]:
    """The files resume trusts or unpickles: sweep.json, Ray's and the searcher's saved state, every pickle."""
    top = [p for p in folder.iterdir() if p.is_file() and (p.name == "sweep.json" or p.name.endswith(".pkl")
                                                            or (p.suffix == ".json" and "state" in p.name))]
    return sorted(set(top) | {p for p in folder.glob("*/*.pkl") if p.is_file()})  # (a trial's params.pkl)


def _key() -> bytes:
    path = cache_dir() / "manifest.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another command made it meanwhile
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def _sign(files: dict[str, str]) -> str:
    return hmac.new(_key(), json.dumps(files, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def write_manifest(folder: Path) -> None:
    files = {p.relative_to(folder).as_posix(): file_digest(p) for p in trusted(folder)}
    write_json({"files": files, "mac": _sign(files)}, folder / NAME)


def check_manifest(folder: Path, key: str = "--resume") -> None:
    """SpecError naming the first trusted file this machine's sweeps did not write (or the missing manifest)."""
    why = "resuming unpickles Ray's saved state, which can run code: only a sweep folder written by a sweep on this machine is resumed"
    try:
        saved = json.loads((folder / NAME).read_text())
        files, mac = saved["files"], saved["mac"]
        ok = isinstance(files, dict) and isinstance(mac, str) and hmac.compare_digest(_sign(files), mac)
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise SpecError(key, str(folder), f"has no manifest signed by this machine ({NAME}): {why}")
    for p in trusted(folder):
        rel = p.relative_to(folder).as_posix()
        if files.get(rel) != file_digest(p):
            raise SpecError(key, str(folder), f"holds {rel}, which its sweep did not write (not in {NAME}, or changed "
                            f"since): {why}")


class ManifestCallback(Callback):
    """Rewrites the manifest after every step of Tune in which a trusted file changed (Ray saves its state in the
    step, before the callbacks' on_step_end), and at the experiment's end."""

    def __init__(self, folder: str | Path):
        self.folder, self.seen = Path(folder), None

    def __setstate__(self, state):  # Ray pickled the folder the sweep first ran in: a resumed copy signs its own
        self.__dict__.update(state)
        self.folder = resumed("folder") or self.folder

    def on_step_end(self, iteration, trials, **info):
        state = [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in trusted(self.folder)]
        if state != self.seen:
            write_manifest(self.folder)
            self.seen = state

    def on_experiment_end(self, trials, **info):
        write_manifest(self.folder)


def checkpoint_damage(folder: Path):
    """The SpecError of a checkpoint folder's first weights file that does not verify (digest, NaN/inf), or None.
    Read without torch: resume's preflight refuses a damaged folder from a small process."""
    for name in ("model.safetensors", "best.safetensors"):
        try:
            if (folder / name).is_file():
                verify_safetensors(folder / name, "checkpoint")
        except SpecError as e:
            return e
    return None
