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


@contextmanager
def quiet_console(verbosity: int = NORMAL) -> Iterator[str | None]:
    """Within the block, native and library output goes to the job's log file (Hydra's); yields its path.

    Restores fd 2, ``sys.stderr`` and the loggers afterwards (a launcher may run several jobs per process).
    """
    logging.captureWarnings(True)  # warnings become records of "py.warnings": file only unless verbose
    path = _log_file()
    saved_levels = {h: h.level for h in _console_handlers()}
    for handler in saved_levels:
        handler.setLevel(logging.WARNING if verbosity <= QUIET else logging.NOTSET)
        if verbosity < VERBOSE:
            handler.addFilter(_not_chatty)
    if verbosity >= VERBOSE:
        logging.getLogger("mlflow").setLevel(logging.INFO)
    if verbosity >= VERBOSE or path is None:
        try:
            yield path
        finally:
            _restore(saved_levels)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    console_fd = os.dup(2)
    saved_stderr = sys.stderr
    sink = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(sink, 2)  # C++ logs, absl banners, converter chatter: into the log file
        sys.stderr = os.fdopen(os.dup(console_fd), "w", buffering=1, encoding=saved_stderr.encoding, errors="backslashreplace")
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(console_fd, 2)
        sys.stderr.close()
        sys.stderr = saved_stderr
        os.close(console_fd)
        os.close(sink)
        _restore(saved_levels)


def _not_chatty(record: logging.LogRecord) -> bool:
    """Console filter: the libraries' records stay in the file, unless they are errors."""
    return record.levelno >= logging.ERROR or not any(record.name == n or record.name.startswith(n + ".") for n in CHATTY_LOGGERS)


def _restore(saved_levels: dict[logging.Handler, int]) -> None:
    for handler, level in saved_levels.items():
        handler.setLevel(level)
        handler.removeFilter(_not_chatty)
