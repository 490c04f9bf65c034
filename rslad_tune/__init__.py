"""rslad-tune: robust small students by RSLAD distillation, searched with Ray Tune, tracked in MLflow."""
from .sweep.export import load_student

__all__ = ["load_student"]
__version__ = "0.1.0"
