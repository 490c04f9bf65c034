"""Ctrl-C (SIGINT), SIGTERM and SIGHUP (a dropped ssh session): the first one ends a command cleanly, exit
status 130 / 143 / 129.

Outside Ray Tune's loop the first signal raises `Interrupted` (a KeyboardInterrupt) where the program
is, so `finally` blocks remove temporary folders and MLflow runs end KILLED. Inside `Tuner.fit()` it
asks Ray Tune to stop instead, through Tune's own SIGUSR1 handler (Tune's SIGINT handler is turned off
with TUNE_DISABLE_SIGINT_HANDLER, so that this module sees every signal): Tune stops the trials, saves
the experiment state and returns from fit() as if the sweep had ended, and the caller asks `received()`.
A second signal raises at once, wherever the program is.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from ..trial.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


_received: int | None = None
_in_tune = False
_installed = False  # inside handled()


def received() -> int | None:
    """The first signal of this command (None: none)."""
    return _received


def _handle(signum, frame) -> None:
    global _received
    first = _received is None
    if first:
        _received = signum
    if first and _in_tune and callable(signal.getsignal(signal.SIGUSR1)):
        signal.raise_signal(signal.SIGUSR1)  # Tune's handler: stop the trials, save the state, return from fit()
        return
    raise Interrupted(_received)


@contextmanager
def handled() -> Iterator[None]:
    """For one command: SIGINT and SIGTERM as described above; the previous handlers are put back after."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _installed
    before = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handle)
    _installed = True
    try:
        yield
    finally:
        _installed = False
        for s, h in before.items():
            signal.signal(s, h)


@contextmanager
def tune_stops_on_signal() -> Iterator[None]:
    """Around Tuner.fit(): the first signal asks Ray Tune to stop rather than raising inside its loop."""
    global _in_tune
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    main = threading.current_thread() is threading.main_thread()
    usr1 = signal.getsignal(signal.SIGUSR1) if main else None
    if main and _installed:  # ray.init() put Ray's own SIGTERM handler (log and abort) in place of ours
        for s in SIGNALS:
            signal.signal(s, _handle)
    _in_tune = True
    try:
        yield
    finally:
        _in_tune = False
        if usr1 is not None:  # Tune's handler belongs to that fit() only
            signal.signal(signal.SIGUSR1, usr1)
