"""Notices of Ray and MLflow that a first run would print and that no user can act on, dropped where they are made
(a logging filter or a warnings filter around the one call that makes them); every other notice still prints.
"""
from __future__ import annotations

import contextlib
import logging
import warnings


class _Drop(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _dropped(logger_name: str, text: str):
    logger, drop = logging.getLogger(logger_name), _Drop(text)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def default_token_auth_notice():
    """Around ray.init: Ray 2.60 starts every new local cluster with token authentication (its default, kept) and
    says so on each run. Its other notices (authentication disabled, a token missing) still print."""
    return _dropped("ray._private.authentication.authentication_token_setup",
                    "Token authentication is enabled for this Ray cluster")


@contextlib.contextmanager
def torchscript_logging():
    """Around mlflow.pytorch.log_model of a TorchScript student: MLflow's pickle notice (a ScriptModule must be
    declared `serialization_format="pickle"`, pt2 refuses one, yet it is written by torch.jit.save and read by
    torch.jit.load: no Python object is unpickled), and the two warnings of MLflow's check of the input example,
    which loads the model back with torch.load (dispatched to torch.jit.load, deprecated upstream for torch.export)."""
    with _dropped("mlflow.pytorch", "Pickle or CloudPickle"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*[Pp]ickle.*")
        yield
