"""SIGTERM and Ctrl-C as interrupts raised where it is safe: at a checkpoint, never inside TensorFlow.

A Python exception raised straight from a signal handler lands wherever the main thread happens to be,
inside an import or a callback of TensorFlow's C++ code too, which may swallow it or turn it into another
error. So the first signal only marks the process: the next :func:`checkpoint` (every batch of
calibration, evaluation, training and QAT, every layer of a side-by-side pass, a run's start and end)
raises :class:`Terminated` (SIGTERM) or ``KeyboardInterrupt`` (SIGINT). A second signal raises at once,
except inside :func:`held` blocks (a run's creation and final status), where it waits for the block's end.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Terminated", "checkpoint", "held", "install", "relay_to_workers", "reset", "signalled"]


class Terminated(KeyboardInterrupt):
    """SIGTERM: ends the run like Ctrl-C (KILLED), then the process exits with 128 + 15."""

    exit_code = 143


class _State:
    def __init__(self) -> None:
        self.received: int | None = None  # the first signal this process received
        self.depth = 0  # nesting of held() blocks
        self.pending: int | None = None  # a repeated signal that arrived inside held()


_state = _State()


def reset() -> None:
    """Forget received signals (tests; a process once signalled otherwise stays so, and every later job in
    it, e.g. the next one of a sequential sweep, stops at its first checkpoint)."""
    global _state
    _state = _State()


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(f"terminated by signal {signum}")


def _handler(signum, frame) -> None:
    if _state.received is None:  # the first: raised at the next checkpoint
        _state.received = signum
        return
    if _state.depth:
        _state.pending = signum
        return
    raise _interrupt(signum)


def install() -> None:
    """SIGTERM and SIGINT mark the process for the next checkpoint (only the main thread can set handlers;
    elsewhere nothing changes). A signal already received stays received."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)


def relay_to_workers() -> None:
    """In a sweep's driver whose jobs run in worker processes (joblib): SIGTERM is passed on to the workers,
    whose runs end KILLED at their next checkpoint and whose jobs then fail with exit 143, which ends the
    sweep; a second SIGTERM raises in the driver at once. (Ctrl-C reaches every process of the terminal's
    group by itself.)"""
    import psutil

    def relay(signum, frame) -> None:
        first = _state.received is None
        if first:
            _state.received = signum
        for child in psutil.Process().children():
            try:
                child.send_signal(signum)
            except psutil.Error:  # already gone
                pass
        if not first:
            raise _interrupt(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, relay)


def signalled() -> KeyboardInterrupt | None:
    """The interrupt a received signal stands for, None when none came."""
    return None if _state.received is None else _interrupt(_state.received)


def checkpoint() -> None:
    """Raise the interrupt of a received signal; nothing otherwise (cheap: call it once per batch)."""
    if _state.received is not None:
        raise _interrupt(_state.received)


@contextmanager
def held() -> Iterator[None]:
    """A block that no signal interrupts: a repeated one arriving meanwhile is raised when it ends."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0 and _state.pending is not None:
            signum, _state.pending = _state.pending, None
            raise _interrupt(signum)
