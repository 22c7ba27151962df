"""A look at the tracking store before any heavy work: writable (SQLite) or answering (HTTP), in seconds.

Standard library only, so it runs before TensorFlow and MLflow are imported.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request

HTTP_TIMEOUT_S = 5.0


def resolve_tracking_uri(uri: str | None, outputs_dir: str) -> str:
    """``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else a SQLite file under outputs."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{os.path.abspath(os.path.join(outputs_dir, 'mlflow.db'))}"


class TrackingUnavailable(ValueError):
    """The tracking store cannot be used: the message names the URI and why, in one line."""


def _check_sqlite(uri: str, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    probe = folder
    while not os.path.exists(probe):  # the nearest existing ancestor decides whether it can be created
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise TrackingUnavailable(f"tracking.uri={uri!r} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise TrackingUnavailable(f"tracking.uri={uri!r} cannot be written: {probe} is read-only")
    if os.path.isdir(path):
        raise TrackingUnavailable(f"tracking.uri={uri!r} names a folder, not a database file")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise TrackingUnavailable(f"tracking.uri={uri!r} cannot be written: the database file is read-only")


def _check_http(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(64)
    except urllib.error.HTTPError:
        return  # the server answers (a proxy may not serve /health): reachable
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(
            f"tracking.uri={uri!r} is not reachable within {timeout:.0f} s ({reason}): start the MLflow server or fix the URI"
        ) from None


DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _check_database_server(uri: str, timeout: float) -> None:
    """A database URI (``postgresql://user@host:port/db``, ``mysql+pymysql://…``): something must listen on its port."""
    parsed = urllib.parse.urlsplit(uri)
    dialect = parsed.scheme.split("+")[0]
    host, port = parsed.hostname or "localhost", parsed.port or DEFAULT_PORTS[dialect]
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise TrackingUnavailable(
            f"tracking.uri={uri!r}: nothing answers at {host}:{port} within {timeout:.0f} s ({err.strerror or err}): "
            "start the database server or fix the URI"
        ) from None


def check_tracking_uri(uri: str, timeout: float = HTTP_TIMEOUT_S) -> None:
    """Raise :class:`TrackingUnavailable` when runs could not be recorded at ``uri``."""
    if uri.startswith("sqlite:///"):
        _check_sqlite(uri, uri[len("sqlite:///") :])
    elif uri.startswith(("http://", "https://")):
        _check_http(uri, timeout)
    elif uri.split(":", 1)[0].split("+")[0] in DEFAULT_PORTS:
        _check_database_server(uri, timeout)
