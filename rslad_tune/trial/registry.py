"""One registry shape for every extension point: methods (methods.METHODS), architectures (models.REGISTRY),
datasets (datasets.DATASETS). A registry is a dict, name -> entry, in the order registered (the order users see
in an error's "allowed" list):

    METHODS = Registry("method")
    @METHODS.register()                               # a decorator: the entry's key is its `name`
    METHODS.register(SAT)                             # a call: the same
    REGISTRY.register("small_cnn", Arch(...))         # a call under a key
    METHODS.register("mine", "my_package.mine:Mine")  # lazy: imported at its first lookup (lazy.resolve)

A "module:attr" string entry is imported on first use, so that a registry names an implementation without
importing it (nor torch). An unknown key is one SpecError line: the kind, the key, the allowed names.
Bottom level: the stdlib, lazy and errors.
"""
from __future__ import annotations

from typing import Any

from .errors import SpecError
from .lazy import resolve

_NOTHING = object()


class Registry(dict):
    """name -> entry; a string entry "module:attr" is that object, imported at the first lookup."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # how errors name the key: "method", "arch", "dataset"

    def register(self, key: Any = None, entry: Any = _NOTHING) -> Any:
        """register(key, entry) or register(entry) (keyed by entry.name) adds it and returns it; register() and
        register(key) return a decorator that does. A key registered again is replaced."""
        if key is not None and not isinstance(key, str):
            key, entry = None, key
        if entry is _NOTHING:
            return lambda obj: self.register(key, obj)
        self[entry.name if key is None else key] = entry
        return entry

    def __getitem__(self, key: str) -> Any:
        entry = super().__getitem__(key)  # dict calls __missing__ for an unknown key
        if isinstance(entry, str) and ":" in entry:
            entry = resolve(entry)
            super().__setitem__(key, entry)
        return entry

    def __missing__(self, key: Any) -> Any:
        raise SpecError(self.kind, key, f"allowed: {', '.join(self)}")

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def values(self) -> list:
        return [self[k] for k in self]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self]
