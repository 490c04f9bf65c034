"""Imports on first use. torch alone is ~630 MB here: the package imports it only when something runs on
tensors, so that a bad input is refused in one line by a small process (tests/test_bad_input.py).

Two forms, one mechanism (importlib at first use):
- `resolve("package.module:attr")`: a registry's entry names where its implementation lives (models.REGISTRY);
- `LazyModule("torch")`: a module-level stand-in for a module whose functions use torch; the real module is
  imported at the first attribute access (`torch.zeros(...)`), never at import time, and nothing is put in
  sys.modules before then. Type-only names (Tensor, nn.Module in annotations) stay strings
  (`from __future__ import annotations`) and are imported under TYPE_CHECKING.

Bottom level: the stdlib only.
"""
from __future__ import annotations

import importlib
from typing import Any


def resolve(location: str) -> Any:
    """`package.module:attr` (attr may be dotted) -> that object, importing the module now."""
    module, _, attr = location.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


_PROTOCOL = {"__copy__", "__deepcopy__", "__getnewargs__", "__getnewargs_ex__", "__getstate__", "__setstate__",
             "__reduce__", "__reduce_ex__"}


class LazyModule:
    """Module `name`, imported at the first attribute access (`torch = LazyModule("torch")`)."""

    def __init__(self, name: str):
        self.__dict__.update(_name=name, _module=None)

    def _load(self) -> Any:
        if self.__dict__["_module"] is None:
            self.__dict__["_module"] = importlib.import_module(self.__dict__["_name"])
        return self.__dict__["_module"]

    def __getattr__(self, attr: str) -> Any:
        if attr in _PROTOCOL or "_name" not in self.__dict__:  # pickle's and copy's probes: no import for them
            raise AttributeError(attr)
        return getattr(self._load(), attr)

    def __reduce__(self):  # a copy (a pickled lambda that names torch) is the same stand-in, imported on its own use
        return LazyModule, (self.__dict__["_name"],)

    def __setattr__(self, attr: str, value: Any) -> None:  # patching through the stand-in patches the module
        setattr(self._load(), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(self._load(), attr)

    def __repr__(self) -> str:
        state = "imported" if self.__dict__["_module"] is not None else "not imported yet"
        return f"<lazy module {self.__dict__['_name']!r} ({state})>"
