"""rslad-tune: robust small students by RSLAD distillation, searched with Ray Tune, tracked in MLflow.

Importing the package is light (the command line's --help needs nothing more); `load_student` brings in torch
and the export module the first time it is asked for.
"""
__all__ = ["load_student"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load_student":
        from .sweep.export import load_student

        globals()["load_student"] = load_student
        return load_student
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
