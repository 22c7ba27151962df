"""A quiet, informative terminal: what TensorFlow, absl, the TFLite converter and MLflow print goes to the
run's log file; the console shows the workbench's own lines, progress bars (on a TTY) and the closing summary.

``verbosity`` (config key): 0 = warnings and the closing summary only, 1 = the workbench's progress lines
(default), 2 = everything, TensorFlow's C++ log included, on the console as well.

TensorFlow's C++ logging writes to file descriptor 2 directly, so keeping it off the console means pointing
fd 2 at the log file while Python's ``sys.stderr`` keeps writing to the terminal (a duplicate of the old fd 2).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

QUIET, NORMAL, VERBOSE = 0, 1, 2
# libraries whose Python log lines belong in the log file, not on the console
CHATTY_LOGGERS = ("tensorflow", "absl", "mlflow", "py.warnings", "h5py", "matplotlib", "alembic")
ENV_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts" bars while reports read runs
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables..." and the like
}


def quiet_environment() -> None:
    """Defaults read by libraries at import: set before MLflow is imported (``workbench.__main__``)."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def _log_file() -> str | None:
    files = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return files[0] if files else None


class _Labelled(logging.Formatter):
    """The console formatter with the sweep job's label in front (parallel jobs' lines interleave)."""

    def __init__(self, inner: logging.Formatter | None, label: str):
        super().__init__()
        self.inner, self.label = inner or logging.Formatter(), label

    def format(self, record: logging.LogRecord) -> str:
        return f"[{self.label}] {self.inner.format(record)}"


@contextmanager
def _through_tqdm(level: int) -> Iterator[None]:
    """Console log lines through ``tqdm.write`` (tqdm's own redirect), so that they never glue onto an active bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        for handler in _console_handlers():
            handler.setLevel(level)  # tqdm's handler takes the formatter and filters, not the level
        yield


@contextmanager
def quiet_console(verbosity: int = NORMAL, label: str | None = None) -> Iterator[str | None]:
    """Within the block, native and library output goes to the job's log file (Hydra's); yields its path.

    Console lines go through tqdm's writer (never glued onto a progress bar) and carry ``label`` (a sweep job's
    number) when given. Restores fd 2, ``sys.stderr`` and the loggers afterwards (a launcher may run several jobs
    per process).
    """
    logging.captureWarnings(True)  # warnings become records of "py.warnings": file only unless verbose
    path = _log_file()
    level = logging.WARNING if verbosity <= QUIET else logging.NOTSET
    saved = {h: (h.level, h.formatter) for h in _console_handlers()}
    for handler in saved:
        handler.setLevel(level)
        if verbosity < VERBOSE:
            handler.addFilter(_not_chatty)
        if label:
            handler.setFormatter(_Labelled(handler.formatter, label))
    if verbosity >= VERBOSE:
        logging.getLogger("mlflow").setLevel(logging.INFO)
    if verbosity >= VERBOSE or path is None:
        try:
            with _through_tqdm(level):
                yield path
        finally:
            _restore(saved)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    console_fd = os.dup(2)
    saved_stderr = sys.stderr
    sink = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(sink, 2)  # C++ logs, absl banners, converter chatter: into the log file
        sys.stderr = os.fdopen(os.dup(console_fd), "w", buffering=1, encoding=saved_stderr.encoding, errors="backslashreplace")
        with _through_tqdm(level):
            yield path
    finally:
        sys.stderr.flush()
        os.dup2(console_fd, 2)
        sys.stderr.close()
        sys.stderr = saved_stderr
        os.close(console_fd)
        os.close(sink)
        _restore(saved)


def _not_chatty(record: logging.LogRecord) -> bool:
    """Console filter: the libraries' records stay in the file, unless they are errors."""
    return record.levelno >= logging.ERROR or not any(record.name == n or record.name.startswith(n + ".") for n in CHATTY_LOGGERS)


def _restore(saved: dict[logging.Handler, tuple[int, logging.Formatter | None]]) -> None:
    for handler, (level, formatter) in saved.items():
        handler.setLevel(level)
        handler.setFormatter(formatter)
        handler.removeFilter(_not_chatty)
