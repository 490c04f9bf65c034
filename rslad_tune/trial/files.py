"""Files this tool writes and reads: atomic writes, JSON, and weights (safetensors, or `weights_only` PyTorch).

Every write goes to a temporary name in the same folder and is renamed into place, so a crash
never leaves half a file. Weights are never unpickled: safetensors, or `torch.load(weights_only=True)`,
which refuses anything but tensors and plain containers.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from safetensors import SafetensorError, safe_open

from .errors import LockHeld, SpecError
from .lazy import LazyModule
from .models import robustbench_state_dict

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")
safetensors_torch = LazyModule("safetensors.torch")


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
DIGEST_KEY = "rslad_tune.sha256"  # safetensors metadata: the digest of the tensors written (tensor_digest)


def save_atomic(write: Callable[[str], None], path: Path) -> None:
    """Call write(tmp) for a temporary name beside `path`, then rename it to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except (RuntimeError, SafetensorError) as e:  # torch.save and safetensors say "write failed" in their own words
        if _disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    finally:  # a write that failed or was interrupted leaves nothing behind
        tmp.unlink(missing_ok=True)


def _disk_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


@contextmanager
def file_lock(path: Path, note: str | None = None, wait: bool = True) -> Iterator[None]:
    """An exclusive `flock` on `path` (created if missing) for the block. The kernel releases it when the
    process ends, however it ends, so a killed holder never leaves a stale lock. `note` (e.g. pid and
    command) is written into the file for whoever finds it taken; wait=False raises LockHeld then."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(os.pread(fd, 4096, 0).decode(errors="replace").strip()) from None
        if note is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        try:
            yield
        finally:  # however the block ends (an error, Ctrl-C): no stale pid note is left for the next reader
            if note is not None:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # and with it the lock


def write_json(obj: Any, path: Path) -> None:
    save_atomic(lambda p: Path(p).write_text(json.dumps(obj, indent=2, sort_keys=True)), path)


def write_text(text: str, path: Path) -> None:
    save_atomic(lambda p: Path(p).write_text(text), path)


def read_json(path: Path, key: str | None = None) -> Any:
    """A JSON file; unreadable or invalid is a one-line SpecError naming `key` (default: the file name)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(key or path.name, str(path), f"is not a readable JSON file ({type(e).__name__})") from None


def state_dict_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the model's tensors (what safetensors stores)."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks): what names a weights file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (sorted by name): what a reader checks."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors, atomically, with the tensors' digest in its metadata (checked by read_tensors)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**(metadata or {}), DIGEST_KEY: tensor_digest(tensors)}
    save_atomic(lambda p: safetensors_torch.save_file(tensors, p, metadata=meta), path)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    save_tensors(state_dict_of(model), path, metadata)


# what a weights read refuses, in the same words whichever reader found it (read_tensors / check_finite with torch,
# verify_safetensors without)
DAMAGED = "is damaged: its tensors do not match the sha256 digest written with them"


def _unreadable(key: str, path: Path, e: Exception) -> SpecError:
    return SpecError(key, str(path), f"is not a readable safetensors file ({' '.join(str(e).split())[:100]})")


def _not_finite(key: str, path: Path, name: str) -> SpecError:
    return SpecError(key, str(path), f"holds NaN or infinite values (tensor {name!r}): a diverged or damaged model; "
                     "give finite weights")


def read_tensors(path: Path, key: str, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata. Unreadable, or tensors that differ from the digest written
    with them (a damaged file), is a one-line SpecError; a file without a digest is read as it is."""
    try:
        with safe_open(str(path), "pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _unreadable(key, path, e) from None
    if DIGEST_KEY in meta and tensor_digest(tensors) != meta[DIGEST_KEY]:
        raise SpecError(key, str(path), DAMAGED)
    return {k: v.to(device) for k, v in tensors.items()}, meta


# safetensors dtype -> (numpy dtype or None for bfloat16, torch's name in tensor_digest)
SAFETENSORS_DTYPES = {"F64": ("<f8", "torch.float64"), "F32": ("<f4", "torch.float32"), "F16": ("<f2", "torch.float16"),
                      "BF16": (None, "torch.bfloat16"), "I64": ("<i8", "torch.int64"), "I32": ("<i4", "torch.int32"),
                      "I16": ("<i2", "torch.int16"), "I8": ("i1", "torch.int8"), "U8": ("u1", "torch.uint8"),
                      "BOOL": ("?", "torch.bool")}


def verify_safetensors(path: Path, key: str) -> None:
    """read_tensors' checks without torch (the preflight of `resume`, in a small process): the header read as the
    format defines it, the digest of the tensors recomputed as tensor_digest does, and no NaN/inf; one SpecError."""
    import numpy as np

    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= min(100 << 20, os.path.getsize(path) - 8):
                raise ValueError(f"header length {n}")
            header, data = json.loads(fh.read(n)), fh.read()
        meta = header.pop("__metadata__", None) or {}
        h = hashlib.sha256()
        for name in sorted(header):
            dtype, shape, (lo, hi) = header[name]["dtype"], header[name]["shape"], header[name]["data_offsets"]
            np_type, torch_name = SAFETENSORS_DTYPES[dtype]
            raw = data[lo:hi]
            if hi > len(data) or len(raw) != math.prod(shape) * np.dtype(np_type or "<u2").itemsize:
                raise ValueError(f"tensor {name!r}: {dtype} {shape} at {lo}-{hi}")
            h.update(f"{name}|{torch_name}|{tuple(shape)}|".encode())
            h.update(raw)
            if (dtype[0] == "F" and not np.isfinite(np.frombuffer(raw, np_type)).all()) or (  # bfloat16: exponent all ones
                    dtype == "BF16" and ((np.frombuffer(raw, "<u2") & 0x7F80) == 0x7F80).any()):
                raise _not_finite(key, path, name)
    except SpecError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise _unreadable(key, path, e) from None
    if DIGEST_KEY in meta and h.hexdigest() != meta[DIGEST_KEY]:
        raise SpecError(key, str(path), DAMAGED)


def check_finite(state: dict[str, torch.Tensor], key: str, path: Path) -> None:
    """NaN or inf in any floating-point tensor is a one-line SpecError naming the first such tensor."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _not_finite(key, path, name)


def load_torch_weights(path: Path, key: str):
    """A PyTorch file loaded with weights_only=True: a file that would need arbitrary unpickling
    (Python objects, code) is refused and nothing in it runs."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).split("\n")[0][:120]
        raise SpecError(key, str(path), "holds more than plain weights and is refused: only tensors are loaded "
                        f"(weights_only=True); re-save its state_dict or convert it to safetensors ({why})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise SpecError(key, str(path), f"is not a readable PyTorch weights file ({type(e).__name__})") from None


def read_state_dict(path: Path, key: str, device: str = "cpu", finite: bool = False) -> dict[str, torch.Tensor]:
    """Weights from safetensors (read_tensors: digest checked), or from a PyTorch file (load_torch_weights);
    finite=True also refuses NaN/inf (check_finite)."""
    path = Path(path)
    if path.suffix in TORCH_SUFFIXES:
        obj = load_torch_weights(path, key)
        try:
            state = {k: v.to(device) for k, v in robustbench_state_dict(obj).items()}
        except TypeError as e:
            raise SpecError(key, str(path), f"does not hold a state dict ({e})") from None
    else:
        state = read_tensors(path, key, str(device))[0]
    if finite:
        check_finite(state, key, path)
    return state


def load_weights(model: nn.Module, path: Path, key: str, finite: bool = True) -> nn.Module:
    """Load weights (read_state_dict: digest, then NaN/inf unless finite=False) into `model`; any mismatch or
    corruption is a one-line SpecError. Every read of weights this tool wrote goes through here."""
    state = read_state_dict(path, key, finite=finite)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)[:150]
        raise SpecError(key, str(path), f"does not match the architecture ({first})") from None
    return model
