"""Real services for the ``distributed`` tests: a throwaway PostgreSQL 15 cluster, an MLflow tracking server
on it with artifact proxying, a local Ray cluster. Each is a context manager that stops and removes
everything it started.

PostgreSQL refuses to run as root: as root, its commands run as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def _beside_python(command: str) -> str:
    """A console script of the Python running the tests (a venv's bin/, activated or not), else from PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), command)
    return candidate if os.access(candidate, os.X_OK) else command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries (Debian's layout), or None when not installed."""
    found = sorted(glob.glob(PG_BIN_GLOB), reverse=True)
    return Path(found[0]) if found and Path(found[0], "initdb").exists() else None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _wait(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")


@contextmanager
def postgres_cluster(database: str = "mlflow") -> Iterator[str]:
    """A PostgreSQL cluster in a fresh temporary folder (one the ``postgres`` user can reach) on a free
    port, with ``database`` created; yields its SQLAlchemy URI; stops the server and removes the folder."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's server is not installed (Debian: apt install postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="wb-pg-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        _run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]))
        port = free_port()
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        _run(_as_postgres([*pg_ctl, "-o", options, "-l", str(root / "postgres.log"), "-w", "start"]))
        try:
            import psycopg

            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            subprocess.run(_as_postgres([*pg_ctl, "-m", "fast", "-w", "stop"]), capture_output=True, timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on ``backend_uri`` proxying artifacts into ``artifacts``; yields its http:// URI."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        _wait(healthy, "the MLflow server", 120)
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@contextmanager
def ray_cluster(root: Path, num_cpus: int = 2) -> Iterator[str]:
    """A local Ray head node (``ray start --head``), its files under ``root``; yields its address."""
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray = _beside_python("ray")
    cmd = [ray, "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=false"]
    cmd += [f"--temp-dir={root}", "--disable-usage-stats"]
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
