"""Folder names made from user-given names (an experiment, a run label): one path component, under its root."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+|\.{2,}")  # other characters, and runs of dots


def safe_component(name: str) -> str:
    """``name`` as one file-name component: each run of other characters than letters, digits, ``.``, ``_`` and ``-``
    (and each run of dots) becomes ``_``, with dots and underscores trimmed at both ends, so ``../x`` (``x``) and
    ``/Users/me/exp`` (``Users_me_exp``) cannot leave the folder they go in."""
    safe = re.sub("_+", "_", UNSAFE.sub("_", name)).strip("._")
    return safe[:200] or "_"


def under(root: str, name: str) -> str:
    """``root/<safe name>``, checked to stay under ``root``."""
    path = os.path.join(root, safe_component(name))
    if not os.path.realpath(path).startswith(os.path.realpath(root) + os.sep):  # a symlink inside root pointing out
        raise ValueError(f"{path!r} leaves {root!r}")
    return path


def write_atomically(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed into place: a full disk or a
    kill leaves the old file or none, never a truncated one (a cut ``report.html`` looks complete in a browser)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
